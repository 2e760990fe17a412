#!/usr/bin/env bash
# tests/integration/dist_lora.sh TRAIN_BINARY SOURCE_DIR
#
# LoRA preparation (`prepare --encoder DIR --text FILE`) under mpirun
# (docs/DISTRIBUTED.md), on a tiny random BERT encoder and a small text
# file written here, 1, 2 and 3 ranks on loopback:
#   - the trajectories file is byte-identical to one process's, with one
#     thread and with two, for every rank count, and only rank 0 reports;
#   - rank 1 of a 2-rank job SIGKILLed mid-run: the job ends by itself
#     within 30 s with a message naming the rank, writes no file and keeps
#     both ranks' journals; resumed on 2 and on 3 ranks it gives the
#     uninterrupted file, byte for byte, and the journals go;
#   - --measure is refused under mpirun.
# Exits 77 (skipped) when ltdi-train was built without MPI.
set -euo pipefail
train=$1
. "$(dirname "$0")/lib/dist_setup.sh"

# A tiny random BERT (hidden 8, 2 layers, 2 heads; the layout of
# tests/unit/bert_tiny.h) as an encoder folder, and 6 classes x 30 texts
# that mix words of their own class with shared ones (as
# tests/unit/lora_text_fixture.h does), deterministic.
python3 - "$tmp" <<'PY'
import json, os, random, struct, sys
out = sys.argv[1]
rng = random.Random(11)
enc = out + "/enc"
os.makedirs(enc)
ncls, own, shared = 6, 4, 8
words = ["w%s%s" % (chr(97 + w // 26), chr(97 + w % 26)) for w in range(ncls * own + shared)]
vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
V, C, L, H, I, P = len(vocab), 8, 2, 2, 12, 24
open(enc + "/vocab.txt", "w").write("".join(v + "\n" for v in vocab))
json.dump({"model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute",
           "vocab_size": V, "hidden_size": C, "num_hidden_layers": L, "num_attention_heads": H,
           "intermediate_size": I, "max_position_embeddings": P, "type_vocab_size": 2,
           "layer_norm_eps": 1e-12, "architectures": ["BertModel"]}, open(enc + "/config.json", "w"))
tensors = {}
def add(name, shape, scale, offset=0.0):
    n = 1
    for s in shape:
        n *= s
    tensors[name] = (shape, [offset + rng.gauss(0.0, scale) for _ in range(n)])
add("embeddings.word_embeddings.weight", [V, C], 1.0)
add("embeddings.position_embeddings.weight", [P, C], 0.5)
add("embeddings.token_type_embeddings.weight", [2, C], 0.5)
add("embeddings.LayerNorm.weight", [C], 0.1, 1.0)
add("embeddings.LayerNorm.bias", [C], 0.1)
for l in range(L):
    for name, o, i in [("attention.self.query", C, C), ("attention.self.key", C, C),
                       ("attention.self.value", C, C), ("attention.output.dense", C, C),
                       ("attention.output.LayerNorm", C, 0), ("intermediate.dense", I, C),
                       ("output.dense", C, I), ("output.LayerNorm", C, 0)]:
        p = "encoder.layer.%d.%s." % (l, name)
        add(p + "weight", [o, i] if i else [o], 0.5 if i else 0.1, 0.0 if i else 1.0)
        add(p + "bias", [o], 0.1)
hdr, blobs, off = {}, [], 0
for name, (shape, vals) in tensors.items():
    b = struct.pack("<%df" % len(vals), *vals)
    hdr[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(b)]}
    blobs.append(b)
    off += len(b)
h = json.dumps(hdr).encode()
h += b" " * ((8 - len(h) % 8) % 8)
open(enc + "/model.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
with open(out + "/texts.tsv", "w") as f:
    for c in range(ncls):
        for i in range(30):
            n = 2 + rng.randrange(7)
            ws = [words[c * own + rng.randrange(own)] if rng.randrange(3) == 0
                  else words[ncls * own + rng.randrange(shared)] for _ in range(n)]
            f.write("c%02d\t%s n%d\n" % (c, " ".join(ws), i))
PY

# Runs ltdi-train with the given rank count (0: a plain process).
on() {
  local n=$1
  shift
  if [ "$n" = 0 ]; then "$train" "$@"; else "${mpi[@]}" -np "$n" "$train" "$@"; fi
}
lora=(prepare --encoder "$tmp/enc" --text "$tmp/texts.tsv" --ways 3 --shots 4 --max-length 16
      --quiet)

echo "== LoRA prepare: 1 process (1 and 2 threads), 1, 2 and 3 ranks"
small=("${lora[@]}" --tasks 41 --steps 5) # 41: uneven shares on 2 and 3 ranks
on 0 "${small[@]}" --threads 1 --out "$tmp/l0.st" > /dev/null
on 0 "${small[@]}" --threads 2 --out "$tmp/lt.st" > /dev/null
cmp "$tmp/l0.st" "$tmp/lt.st" || fail "2 threads differ from 1"
for n in 1 2 3; do
  on "$n" "${small[@]}" --threads 1 --out "$tmp/l$n.st" > "$tmp/l$n.out" 2> "$tmp/l$n.err" ||
    { cat "$tmp/l$n.err"; fail "LoRA prepare on $n ranks failed"; }
  cat "$tmp/l$n.out"
  ls "$tmp" | grep -q "l$n.st.journal" && fail "LoRA prepare on $n ranks left a journal"
  cmp "$tmp/l0.st" "$tmp/l$n.st" || fail "LoRA prepare on $n ranks differs from one process"
done
on 3 "${small[@]}" --threads 2 --out "$tmp/l3t.st" > /dev/null
cmp "$tmp/l0.st" "$tmp/l3t.st" || fail "LoRA prepare on 3 ranks x 2 threads differs from one process"
[ "$(grep -c . "$tmp/l3.out")" = 1 ] || fail "LoRA prepare on 3 ranks reported more than once"
grep -q "x 3 ranks" "$tmp/l3.out" || fail "LoRA prepare does not say it ran on 3 ranks"
# The comparison has teeth: another seed gives other tasks.
on 0 "${small[@]}" --threads 1 --seed 2 --out "$tmp/lseed.st" > /dev/null
cmp -s "$tmp/l0.st" "$tmp/lseed.st" && fail "seed 2 gave the bytes of seed 1: the cmp above proves nothing"

# The pid of rank $2 among the children of mpirun $1, or nothing yet.
rank_pid() {
  local p
  for p in $(pgrep -P "$1" 2> /dev/null); do
    if tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
      echo "$p"
      return
    fi
  done
}

echo "== LoRA prepare: uninterrupted reference (one process)"
big=("${lora[@]}" --tasks 400 --steps 40 --threads 1)
on 0 "${big[@]}" --out "$tmp/ref.st" > /dev/null
out=$tmp/cut.st
# Both ranks have journalled a batch of tasks (a record is about 8 KiB).
journals_ready() {
  [ -s "$out.journal" ] && [ -s "$out.journal.1" ] &&
    [ "$(stat -c %s "$out.journal")" -gt 20000 ] && [ "$(stat -c %s "$out.journal.1")" -gt 20000 ]
}
for resume_ranks in 2 3; do
  echo "== LoRA prepare on 2 ranks, rank 1 killed, resumed on $resume_ranks ranks"
  rm -f "$out" "$out".journal*
  "${mpi[@]}" -np 2 "$train" "${big[@]}" --out "$out" > "$tmp/cut.log" 2>&1 &
  job=$!
  killed=0
  for _ in $(seq 1 3000); do
    kill -0 "$job" 2> /dev/null || break
    if journals_ready; then
      pid=$(rank_pid "$job" 1)
      if [ -n "$pid" ]; then
        kill -9 "$pid"
        killed=1
        break
      fi
    fi
    sleep 0.01
  done
  if [ "$killed" = 1 ]; then
    t0=$SECONDS
    while kill -0 "$job" 2> /dev/null; do
      [ $((SECONDS - t0)) -lt 30 ] || { cat "$tmp/cut.log"; fail "the job still runs 30 s after rank 1 died"; }
      sleep 0.1
    done
    rc=0
    wait "$job" || rc=$?
    job=
    echo "job ended $((SECONDS - t0)) s after rank 1 was killed, status $rc"
    [ "$rc" != 0 ] || fail "the job exited 0 after rank 1 was killed"
    grep -qi "rank 1.*signal 9\|rank 1.*killed" "$tmp/cut.log" ||
      { cat "$tmp/cut.log"; fail "no message that rank 1 died"; }
    test ! -e "$out" || fail "a killed job left an output file"
    test -s "$out.journal" && test -s "$out.journal.1" || fail "a killed job left no journals"
  else
    wait "$job" || true
    job=
    echo "note: the job finished before rank 1 could be killed"
  fi
  on "$resume_ranks" "${big[@]}" --out "$out" > "$tmp/resume.log" 2>&1 ||
    { cat "$tmp/resume.log"; fail "the resume on $resume_ranks ranks failed"; }
  cat "$tmp/resume.log"
  if [ "$killed" = 1 ]; then
    resumed=$(sed -n 's/.*(\([0-9]*\) resumed).*/\1/p' "$tmp/resume.log")
    [ -n "$resumed" ] && [ "$resumed" -gt 0 ] && [ "$resumed" -lt 400 ] ||
      fail "expected a partial resume, got '$resumed' resumed tasks"
  fi
  cmp "$tmp/ref.st" "$out" || fail "the resumed job's file differs from one process's"
  ls "$tmp" | grep -q "cut.st.journal" && fail "journals left behind after completion"
done

echo "== --measure under mpirun"
set +e
on 2 "${lora[@]}" --tasks 4 --steps 2 --measure 2 > /dev/null 2> "$tmp/measure.err"
rc=$?
set -e
[ "$rc" != 0 ] || fail "LoRA --measure under mpirun -np 2 exited 0"
grep -q "not under mpirun" "$tmp/measure.err" || fail "LoRA --measure under mpirun: no reason given"
echo "PASS"
