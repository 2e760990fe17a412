#!/usr/bin/python3
"""ltdi against PyTorch on the class-token denoiser, side by side in one run.

  bench_torch_class_denoiser.py [--model FILE] [--bench BENCH_SAMPLING]
                                [--ways N] [--batches 1,8,32] [--threads 1,2]
                                [--seconds S]

For each thread count and batch, the same model file's weights generate
heads both ways:
  - ltdi: tests/bench/bench_sampling --mode serve (the daemon's path: the
    batch-invariant sgemm, one worker per thread, the whole sampler);
  - PyTorch: the float32 torch.nn build of the denoiser from
    tests/python/class_denoiser_reference.py (the same architecture, the
    file's parameters loaded with strict=True) run T times per head under
    inference_mode with torch.set_num_threads(threads), plus the sampler's
    one-line update per step, so the comparison is of the network, which
    is nearly all of a generation's arithmetic.
Prints heads/s for both and the ratio ltdi / PyTorch (> 1: ltdi faster).
A benchmark, not a test: it asserts nothing about speed.
"""
import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def load_reference():
    path = os.path.join(ROOT, "tests", "python", "class_denoiser_reference.py")
    spec = importlib.util.spec_from_file_location("class_denoiser_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def torch_model(ref, path):
    tensors, meta = ref.read_safetensors(path)
    if meta.get("arch") != "class_tokens":
        raise SystemExit(f"{path}: not a class-token model (arch {meta.get('arch')})")
    cfg = json.loads(meta["class_denoiser"])
    model = ref.ClassDenoiser(cfg).to(torch.float32)
    model.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()}, strict=True)
    model.eval()
    steps = int(meta["T"])
    return model, cfg, steps


def torch_heads_per_s(model, cfg, steps, ways, batch, seconds):
    D, d = cfg["token_dim"], cfg["cond_dim"]
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(batch, ways, D, generator=gen)
    cond = torch.randn(batch, ways, d, generator=gen)
    ts = [torch.full((batch,), s, dtype=torch.int32) for s in range(steps, 0, -1)]
    with torch.inference_mode():
        def one():
            x = x0
            for t in ts:
                eps = model(x, t, cond)
                x = 0.9 * x + 0.1 * eps  # the sampler's update: a few flops per number
            return x
        one()  # warm-up
        n, t0 = 0, time.perf_counter()
        while True:
            one()
            n += 1
            el = time.perf_counter() - t0
            if el >= seconds and n >= 3:
                return n * batch / el


def ltdi_heads_per_s(bench, model, ways, batches, workers, seconds):
    cmd = [bench, "--model", model, "--device", "cpu", "--mode", "serve", "--ways", str(ways),
           "--workers", str(workers), "--threads", "1", "--batches", ",".join(map(str, batches)),
           "--seconds", str(seconds)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    got = {}
    for line in out.splitlines():
        if line.startswith("RESULT kind=gen"):
            f = dict(kv.split("=", 1) for kv in line.split()[1:])
            got[int(f["batch"])] = float(f["heads_per_s"])
    host = re.search(r"host\s+(.*)", out)
    return got, host.group(1).strip() if host else "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "glyphs-lt.safetensors"))
    ap.add_argument("--bench", default=os.path.join(ROOT, "build", "bench_sampling"))
    ap.add_argument("--ways", type=int, default=5)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--seconds", type=float, default=2.0)
    a = ap.parse_args()
    batches = [int(b) for b in a.batches.split(",")]
    ref = load_reference()
    model, cfg, steps = torch_model(ref, a.model)
    print(f"model {a.model}: class tokens, width {cfg['width']}, {cfg['blocks']} blocks, "
          f"T {steps}, {a.ways}-way; torch {torch.__version__}")
    for threads in [int(t) for t in a.threads.split(",")]:
        lt, host = ltdi_heads_per_s(a.bench, a.model, a.ways, batches, threads, a.seconds)
        torch.set_num_threads(threads)
        print(f"\n{threads} thread(s), {host}")
        print(f"{'batch':>6} {'ltdi heads/s':>13} {'torch heads/s':>14} {'ltdi/torch':>11}")
        for b in batches:
            th = torch_heads_per_s(model, cfg, steps, a.ways, b, a.seconds)
            print(f"{b:>6} {lt.get(b, float('nan')):>13.1f} {th:>14.1f} {lt.get(b, float('nan')) / th:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
