#!/usr/bin/python3
"""ltdi against PyTorch on every denoiser, side by side in one run.

  bench_torch_denoisers.py [--model FILE]... [--bench BENCH_SAMPLING]
                           [--ways N] [--batches 1,8,32] [--threads 1,2]
                           [--seconds S] [--rounds R]

For each model file (default: the three shipped ones -- the class-token head
generator, the U-Net peer and the LoRA generator), each thread count and each
batch, the same file's weights generate weights both ways:
  - ltdi: tests/bench/bench_sampling --mode serve (the daemon's path: the
    batch-invariant sgemm, one worker per thread, the whole sampler);
  - PyTorch: a float32 torch.nn build of the same denoiser, from the
    independent references of the unit tests (tests/python/unet_reference.py,
    tests/python/class_denoiser_reference.py, the latter with the LoRA
    generator's position table and set encoder), the file's parameters loaded
    with strict=True, run T times per generation under inference_mode with
    torch.set_num_threads(threads), plus the sampler's one-line update per
    step; the comparison is of the network, nearly all of a generation's
    arithmetic.
The two alternate R times per model and thread count (default 3) and each
point keeps its best round, so that a drift of the machine's speed during
the run (the 2-core VMs vary by 10-25% over minutes) reaches both sides
alike. Prints generations/s (heads or adapters) for both and the ratio
ltdi / PyTorch (> 1: ltdi faster), then one RESULT line per point.
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
SHIPPED = ["glyphs-lt.safetensors", "glyphs-5w1s-lt.safetensors", "wordnet-lora.safetensors"]


def load_module(name):
    path = os.path.join(ROOT, "tests", "python", name + ".py")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Denoiser:
    """One model file's network in torch and a closure that draws inputs
    shaped as ltdi's sampler feeds them."""

    def __init__(self, path, ways):
        cden = load_module("class_denoiser_reference")
        tensors, meta = cden.read_safetensors(path)
        self.arch = meta.get("arch", "unet")
        self.steps = int(meta["T"])
        if self.arch == "unet":
            cfg = json.loads(meta["unet"])
            self.model = load_module("unet_reference").UNet1D(cfg)
            self.ways = json.loads(meta["embedding"])["ways"]
            self.describe = (f"U-Net, {cfg['n_params']} weights, base {cfg['base_ch']}, "
                             f"{cfg['n_levels']} levels, {self.ways}-way")
            self.shapes = {"x": (cfg["n_params"],), "cond": (cfg["cond_dim"],)}
        else:
            cfg = json.loads(meta["class_denoiser"])
            self.model = cden.ClassDenoiser(cfg)
            lora = self.arch == "lora_tokens"
            tokens = cfg["positions"] if lora else ways
            self.ways = ways
            self.describe = (f"{self.arch}, width {cfg['width']}, {cfg['blocks']} blocks, "
                             f"{tokens} tokens of {cfg['token_dim']}, {ways}-way")
            self.shapes = {"x": (tokens, cfg["token_dim"])}
            if cfg["cond_dim"]:
                self.shapes["cond"] = (tokens, cfg["cond_dim"])
            if cfg.get("set_dim", 0):
                self.shapes["set"] = (ways, cfg["set_dim"])
        # The file also carries the sampler's init and base tensors: only the
        # network's own are loaded, and every one of them must be there.
        own = dict(self.model.state_dict())
        state = {k: tensors[k].to(torch.float32) for k in own if k in tensors}
        self.model.load_state_dict(state, strict=True)
        self.model.to(torch.float32).eval()

    def inputs(self, batch):
        gen = torch.Generator().manual_seed(1)
        return {k: torch.randn((batch,) + s, generator=gen) for k, s in self.shapes.items()}

    def per_s(self, batch, seconds):
        inp = self.inputs(batch)
        ts = [torch.full((batch,), s, dtype=torch.int32) for s in range(self.steps, 0, -1)]
        with torch.inference_mode():
            def one():
                x = inp["x"]
                for t in ts:
                    if self.arch == "unet":
                        eps = self.model(x, t, inp["cond"])
                    else:
                        eps = self.model(x, t, inp.get("cond"), inp.get("set"))
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


def ltdi_per_s(bench, model, ways, batches, workers, seconds):
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
    ap.add_argument("--model", action="append",
                    help="a model file (repeatable); default: the three in models/")
    ap.add_argument("--bench", default=os.path.join(ROOT, "build", "bench_sampling"))
    ap.add_argument("--ways", type=int, default=5, help="classes per task for token models")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    models = a.model or [os.path.join(ROOT, "models", f) for f in SHIPPED]
    batches = [int(b) for b in a.batches.split(",")]
    threads = [int(t) for t in a.threads.split(",")]
    results = []
    print(f"torch {torch.__version__}; ltdi {a.bench} --mode serve")
    for path in models:
        net = Denoiser(path, a.ways)
        print(f"\n{os.path.basename(path)}: {net.describe}, T {net.steps}")
        for th in threads:
            torch.set_num_threads(th)
            lt, pt = {}, {}
            for _ in range(max(1, a.rounds)):
                got, host = ltdi_per_s(a.bench, path, net.ways, batches, th, a.seconds)
                for b in batches:
                    lt[b] = max(lt.get(b, 0.0), got.get(b, float("nan")))
                    pt[b] = max(pt.get(b, 0.0), net.per_s(b, a.seconds))
            print(f"  {th} thread(s), {host}, best of {a.rounds} rounds")
            print(f"  {'batch':>6} {'ltdi gen/s':>11} {'torch gen/s':>12} {'ltdi/torch':>11}")
            for b in batches:
                print(f"  {b:>6} {lt[b]:>11.1f} {pt[b]:>12.1f} {lt[b] / pt[b]:>11.2f}")
                results.append((os.path.basename(path), th, b, lt[b], pt[b]))
    print()
    for name, th, b, ours, pt in results:
        print(f"RESULT model={name} threads={th} batch={b} ltdi_per_s={ours:.2f} "
              f"torch_per_s={pt:.2f} ratio={ours / pt:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
