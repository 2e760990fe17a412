#!/usr/bin/env bash
# tests/gpu/serve_cuda_vs_cpu.sh LTDI_SERVE SOURCE_DIR — the daemon's
# POST /v1/generate on CUDA equals its CPU answer within the fp32 bound of
# docs/GPU.md (|cuda - cpu| <= 1e-4 (|cpu| + 1) per weight), for the
# shipped model, several seeds and both input forms. Exit 77 (skipped)
# when this build or machine cannot run CUDA.
set -euo pipefail
serve=$1
src=$2
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

start() { # start NAME DEVICE → sets port_NAME
  local name=$1 device=$2
  "$serve" --device "$device" --port 0 --port-file "$work/$name.port" \
    --model-dir "$src/models" --model glyphs-5w1s-lt.safetensors \
    --db "$work/$name.db" >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 600); do
    if [[ -s $work/$name.port ]] && curl -fs "http://127.0.0.1:$(cat "$work/$name.port")/ready" >/dev/null; then
      return 0
    fi
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}

if ! start cuda cuda; then
  if grep -qE "no CUDA|no CUDA backend" "$work/cuda.log"; then
    echo "SKIP: $(head -n 1 "$work/cuda.log")"
    exit 77
  fi
  echo "FAIL: the CUDA daemon did not become ready:"; cat "$work/cuda.log"; exit 1
fi
start cpu cpu || { echo "FAIL: the CPU daemon did not start"; cat "$work/cpu.log"; exit 1; }
cport=$(cat "$work/cuda.port")
pport=$(cat "$work/cpu.port")
curl -fs "http://127.0.0.1:$cport/ready" | grep -q '"backend":"cuda"' ||
  { echo "FAIL: /ready does not report the cuda backend"; exit 1; }
curl -fs "http://127.0.0.1:$cport/metrics" | grep -q 'ltdi_backend_info{backend="cuda"} 1' ||
  { echo "FAIL: /metrics does not report the cuda backend"; exit 1; }

python3 - "$cport" "$pport" <<'PY'
import json, math, random, sys, urllib.request
cuda_port, cpu_port = sys.argv[1], sys.argv[2]
def post(port, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/generate",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())
ver = json.loads(urllib.request.urlopen(
    f"http://127.0.0.1:{cpu_port}/v1/models/glyphs-5w1s-lt/versions/1").read())
ways, dim = ver["metadata"]["ways"], ver["metadata"]["feat_dim"]
rng = random.Random(7)
worst, checked = 0.0, 0
for case in range(6):
    protos = [[rng.gauss(0, 1) for _ in range(dim)] for _ in range(ways)]
    body = {"prototypes": protos, "seed": 1000 + case}
    a, b = post(cuda_port, body), post(cpu_port, body)
    for name, t in b["weights"].items():
        ga, gb = a["weights"][name]["data"], t["data"]
        assert a["weights"][name]["shape"] == t["shape"], name
        for x, y in zip(ga, gb):
            err = abs(x - y) / (abs(y) + 1.0)
            worst = max(worst, err)
            checked += 1
            if not err <= 1e-4:
                sys.exit(f"FAIL: {name}: cuda {x} vs cpu {y} (relative {err:.2e})")
print(f"PASS: {checked} weights over 6 requests, worst relative difference {worst:.2e}")
PY
