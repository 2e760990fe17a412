#!/usr/bin/env bash
# scripts/quickstart.sh — the main job on the embedded default: the shipped
# glyph body and class-token Lt-Di model (models/, one model for any N) on
# held-out glyph scripts.
#   1. build the small glyph set (fonts-noto-core) and its meta-test features
#   2. evaluate every method, the generated heads included, on 600 5-way and
#      600 20-way 1-shot episodes (5 queries per class: the small set has 6-9
#      renderings per class), each with its paired difference to
#      nearest-centroid
#   3. start ltdi-serve with the model, generate a 5-way head over HTTP for
#      one task, show the answer and the metrics, stop the daemon (SIGTERM drain)
#   4. start ltdi-serve with the shipped LoRA generator over the MiniLM
#      encoder, send an unseen WordNet task's support texts, load the PEFT
#      folder it answers with PEFT and print its query accuracy next to the
#      frozen encoder's nearest centroid
# Outputs go to ./work/quickstart (or $1). Run scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-work/quickstart}
train=build/ltdi-train serve=build/ltdi-serve
body=models/glyphs-body.safetensors model=models/glyphs-lt.safetensors
for f in "$train" "$serve"; do
  test -x "$f" || { echo "quickstart: $f missing — run scripts/setup.sh" >&2; exit 1; }
done
mkdir -p "$out"

echo "== 1. data and features"
if [ ! -f "$out/glyphs/manifest.json" ]; then
  rm -rf "$out/glyphs"
  "$train" data glyphs --small --out "$out/glyphs"
fi
"$train" features --body "$body" --data "$out/glyphs/meta-test" --out "$out/meta_test_features.safetensors"

echo "== 2. evaluation (same episodes for every method)"
"$train" eval --features "$out/meta_test_features.safetensors" --model "$model" \
  --methods nearest_centroid,logreg,lt_di,lt_di_refine,nearest_centroid_transductive,lt_di_transductive \
  --ways 5,20 --shots 1 --queries 5 --episodes "${EPISODES:-600}" --seed 1 --json-dir "$out"

# start_daemon DIR ARGS...: ltdi-serve ARGS on an ephemeral port with its
# port file, registry and log in DIR; sets pid and url once it is ready.
start_daemon() {
  local dir=$1
  shift
  rm -f "$dir/port" "$dir/registry.db"*
  "$serve" "$@" --port 0 --port-file "$dir/port" --db "$dir/registry.db" > "$dir/serve.log" 2>&1 &
  pid=$!
  trap 'kill "$pid" 2>/dev/null || true' EXIT
  for _ in $(seq 1 600); do
    if [ -s "$dir/port" ] && curl -sf "http://127.0.0.1:$(cat "$dir/port")/ready" > /dev/null; then
      url="http://127.0.0.1:$(cat "$dir/port")"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "quickstart: the daemon did not become ready:" >&2
  cat "$dir/serve.log" >&2
  exit 1
}

echo "== 3. the daemon"
start_daemon "$out" --model "$PWD/$model" --model-name glyphs-lt --model-dir "$PWD/models"
# One task: the first example of each of the first five meta-test classes.
python3 - "$out/meta_test_features.safetensors" > "$out/request.json" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr, data = json.loads(raw[8:8 + n]), raw[8 + n:]
f, l = hdr["features"], hdr["labels"]
d = f["shape"][1]
fb = data[f["data_offsets"][0]:f["data_offsets"][1]]
lb = data[l["data_offsets"][0]:l["data_offsets"][1]]
labels = struct.unpack("<%d%s" % (l["shape"][0], "i" if l["dtype"] == "I32" else "q"), lb)
emb, lab, seen = [], [], {}
for i, c in enumerate(labels):
    if c not in seen and len(seen) < 5:
        seen[c] = len(seen)
    if c in seen and lab.count(seen[c]) < 1:
        emb.append(list(struct.unpack("<%df" % d, fb[4 * d * i:4 * d * (i + 1)])))
        lab.append(seen[c])
print(json.dumps({"support": {"embeddings": emb, "labels": lab}, "seed": 1}))
PY
curl -sf -X POST -H 'Content-Type: application/json' --data @"$out/request.json" \
  "$url/v1/generate" > "$out/response.json"
python3 - "$out/response.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
shown = {k: v for k, v in r.items() if k not in ("tensors", "weights")}
print(json.dumps(shown, indent=1)[:1500])
PY
curl -sf "$url/metrics" | grep -E '^ltdi_(batch_size_count|generated_weights_total|backend_info|ready)' || true
kill -TERM "$pid"
wait "$pid" || true
trap - EXIT

echo "== 4. a LoRA adapter for an unseen text task, over HTTP"
# The shipped LoRA generator over the MiniLM encoder of the reference venv
# (scripts/setup.sh); the task is drawn from WordNet's meta-test categories.
lora=models/wordnet-lora.safetensors encoder=.venv-ref/encoder
if [ ! -f "$out/wordnet/manifest.json" ]; then
  rm -rf "$out/wordnet"
  "$train" data wordnet --out "$out/wordnet"
fi
rm -rf "$out/lora" && mkdir -p "$out/lora/adapters"
start_daemon "$out/lora" --model "$PWD/$lora" --model-name wordnet-lora --model-dir "$PWD/models" \
  --encoder-dir "$PWD/$encoder" --adapter-dir "$out/lora/adapters"
.venv-ref/bin/python scripts/lora_task_demo.py "$url" "$encoder" "$out/wordnet/meta-test.tsv" "$out/lora"
kill -TERM "$pid"
wait "$pid" || true
trap - EXIT
echo "quickstart: results in $out (eval_5w1s.json, eval_20w1s.json, response.json, serve.log, lora/)"
