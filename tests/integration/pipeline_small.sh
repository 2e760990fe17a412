#!/usr/bin/env bash
# tests/integration/pipeline_small.sh TRAIN_BINARY SOURCE_DIR
#
# The whole part-1 pipeline on the small glyph set, through the real binary:
# data → body → prepare (including a SIGKILL halfway and a resume that must
# give a file identical to an uninterrupted run, with another thread count)
# → eval (JSON shape and better-than-chance accuracy), plus the error paths a
# user hits first (missing data, corrupt body file).
set -euo pipefail
train=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

echo "== data"
"$train" data glyphs --small --out "$tmp/glyphs" --quiet
test -f "$tmp/glyphs/manifest.json" || fail "no manifest"
for split in meta-train meta-val meta-test; do
  test -d "$tmp/glyphs/$split" || fail "no $split split"
done

echo "== body"
"$train" body --data "$tmp/glyphs" --out "$tmp/body.safetensors" --epochs 2 --minutes 4 --quiet
test -s "$tmp/body.safetensors" || fail "no body file"

echo "== prepare (uninterrupted, 1 thread)"
# meta trains the U-Net on the mlp head, so the trajectories must be of that head.
prep=(--body "$tmp/body.safetensors" --data "$tmp/glyphs" --head mlp --tasks 2000 --ways 5 --shots 1 --quiet)
"$train" prepare "${prep[@]}" --threads 1 --out "$tmp/ref.safetensors"

echo "== prepare (killed halfway, resumed, 2 threads)"
"$train" prepare "${prep[@]}" --threads 2 --out "$tmp/resumed.safetensors" &
pid=$!
# Kill as soon as some tasks are journalled; if the run wins the race the
# resume below is still exercised by the unit tests, but say so.
killed=0
header_size=
for _ in $(seq 1 1200); do
  if [ -s "$tmp/resumed.safetensors.journal" ]; then
    size=$(stat -c %s "$tmp/resumed.safetensors.journal")
    # the journal starts with a header; kill once task records follow it
    if [ -z "$header_size" ]; then
      header_size=$size
    elif [ "$size" -gt "$header_size" ]; then
      kill -9 "$pid" && killed=1
      break
    fi
  fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.02
done
wait "$pid" || true
if [ "$killed" = 1 ]; then
  test ! -e "$tmp/resumed.safetensors" || fail "a killed run left a final file"
  test -s "$tmp/resumed.safetensors.journal" || fail "a killed run left no journal"
else
  echo "note: prepare finished before it could be killed"
fi
"$train" prepare "${prep[@]}" --threads 2 --out "$tmp/resumed.safetensors" > "$tmp/resume.log" 2>&1
cat "$tmp/resume.log"
if [ "$killed" = 1 ]; then
  resumed=$(sed -n 's/.*(\([0-9]*\) resumed).*/\1/p' "$tmp/resume.log")
  [ -n "$resumed" ] && [ "$resumed" -gt 0 ] && [ "$resumed" -lt 2000 ] ||
    fail "expected a partial resume, got '${resumed}' resumed tasks"
fi
cmp "$tmp/ref.safetensors" "$tmp/resumed.safetensors" || fail "resumed run differs from the uninterrupted one"
test ! -e "$tmp/resumed.safetensors.journal" || fail "journal left behind after completion"

echo "== eval"
"$train" eval --body "$tmp/body.safetensors" --data "$tmp/glyphs" --ways 5 --shots 1 \
  --queries 5 --episodes 60 --views 2 --json "$tmp/eval.json"
python3 - "$tmp/eval.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert (r["ways"], r["shots"], r["episodes"]) == (5, 1, 60), r
want = {"nearest_centroid", "finetune", "finetune_sam", "logreg"}
assert set(r["methods"]) == want, r["methods"].keys()
for name, m in r["methods"].items():
    assert set(m) >= {"acc", "ci95"}, (name, m)
    assert 0.0 <= m["acc"] <= 1.0 and 0.0 <= m["ci95"] < 0.5, (name, m)
    # chance is 0.2; a trained body on held-out scripts is far above it
    assert m["acc"] > 0.35, (name, m)
print("eval json ok:", {k: round(v["acc"], 3) for k, v in r["methods"].items()})
PY

echo "== features file: the same view-0 features as the image path"
"$train" features --body "$tmp/body.safetensors" --data "$tmp/glyphs/meta-test" --out "$tmp/feat.safetensors"
"$train" eval --features "$tmp/feat.safetensors" --ways 5 --shots 1 --queries 5 --episodes 60 \
  --methods nearest_centroid,logreg --json "$tmp/eval_feat.json"
python3 - "$tmp/eval.json" "$tmp/eval_feat.json" <<'PY'
import json, sys
images, feats = (json.load(open(p))["methods"] for p in sys.argv[1:3])
# nearest_centroid and logreg read view 0 only, so the rows must be equal
for name in ("nearest_centroid", "logreg"):
    assert images[name]["acc"] == feats[name]["acc"], (name, images[name], feats[name])
print("features path ok")
PY

echo "== meta → model file → generate → eval rows"
"$train" meta --trajectories "$tmp/ref.safetensors" --out "$tmp/model.safetensors" \
  --outer-steps 40 --val-tasks 20 --quiet --csv "$tmp/loss.csv" --plot "$tmp/loss.svg"
test -s "$tmp/loss.csv" && test -s "$tmp/loss.svg" || fail "meta wrote no loss curve"
python3 - "$tmp/model.safetensors" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
meta = header["__metadata__"]
recipe = json.loads(meta["prepare"])
# the prepared optimum eval compares against must be reproducible from the model
assert recipe["init"] == "shared" and int(recipe["init_seed"]) > 0, recipe
for key in ("steps", "lr", "sam_rho", "augment_views"):
    assert key in recipe, (key, recipe)
print("model metadata ok:", sorted(meta))
PY
# a 5-class support set from the features file: the first class members it lists
python3 - "$tmp/feat.safetensors" "$tmp/support.safetensors" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
data = raw[8 + n:]
def tensor(name):
    t = header[name]; b, e = t["data_offsets"]
    return t, data[b:e]
ft, fb = tensor("features")
lt, lb = tensor("labels")
d = ft["shape"][1]
labels = struct.unpack("<%di" % lt["shape"][0], lb) if lt["dtype"] == "I32" else \
         struct.unpack("<%dq" % lt["shape"][0], lb)
rows, seen = [], {}
for i, c in enumerate(labels):
    if c not in seen and len(seen) < 5:
        seen[c] = len(seen); rows.append(i)
feats = b"".join(fb[r * 4 * d:(r + 1) * 4 * d] for r in rows)
labs = struct.pack("<5i", *range(5))
hdr = {"features": {"dtype": "F32", "shape": [5, d], "data_offsets": [0, len(feats)]},
       "labels": {"dtype": "I32", "shape": [5], "data_offsets": [len(feats), len(feats) + 20]}}
h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(h)) + h + feats + labs)
PY
"$train" generate --model "$tmp/model.safetensors" --support "$tmp/support.safetensors" \
  --out "$tmp/head.json" --format json --seed 7
python3 - "$tmp/head.json" <<'PY'
import json, sys
head = json.load(open(sys.argv[1]))
text = json.dumps(head)
for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
    assert name in text, (name, text[:300])
print("generated head ok")
PY
"$train" eval --features "$tmp/feat.safetensors" --ways 5 --shots 1 --queries 5 --episodes 20 \
  --model "$tmp/model.safetensors" --methods nearest_centroid,lt_di,lt_di_refine \
  --json "$tmp/eval_model.json"
python3 - "$tmp/eval_model.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert set(r["methods"]) == {"nearest_centroid", "lt_di", "lt_di_refine"}, r["methods"].keys()
assert "weight_mse" in r["methods"]["lt_di"], r["methods"]["lt_di"]
assert "generation_ms_per_head" in r, r.keys()
print("eval with a model ok")
PY

echo "== error paths"
if "$train" eval --body "$tmp/body.safetensors" --data "$tmp/nonexistent" --episodes 5 2> "$tmp/err.txt"; then
  fail "eval on a missing directory succeeded"
fi
grep -q "nonexistent" "$tmp/err.txt" || fail "error does not name the missing path: $(cat "$tmp/err.txt")"
head -c 1000 "$tmp/body.safetensors" > "$tmp/truncated.safetensors"
if "$train" eval --body "$tmp/truncated.safetensors" --data "$tmp/glyphs" --episodes 5 2> "$tmp/err.txt"; then
  fail "eval with a truncated body file succeeded"
fi
grep -qi "truncat" "$tmp/err.txt" || fail "truncated body not reported as such: $(cat "$tmp/err.txt")"
echo "pipeline ok"
