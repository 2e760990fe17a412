#!/usr/bin/python3
"""ltdi's BERT encoder against PyTorch on the same batches, side by side in one run.

  .venv-ref/bin/python tests/bench/bench_bert_torch.py BENCH_BERT
      [--encoder DIR] [--glosses N] [--batch B] [--threads 1,2] [--unsorted]
      [--repeat R] [--sgemm auto|openblas|ltdi] [--json FILE]

BENCH_BERT is the C benchmark (build target bench_bert, tests/bench/bench_bert.c).
It is run first with --json: it tokenises every 100th gloss of WordNet's
data.noun with ltdi's tokenizer, times ltdi_bert_forward over batches of B
(sorted by token count unless --unsorted) at each thread count, and writes
the exact batches of token ids; --sgemm is passed on (auto: ltdi's own
AVX2 sgemm where OpenBLAS runs kernels older than the CPU, as
`ltdi-train text-eval` does). This script then checks those ids against
the reference tokenizer (transformers' BertTokenizerFast of the same folder)
and times transformers' AutoModel on the SAME ids and batches: float32,
eval mode, torch.inference_mode(), torch.set_num_threads(T), the padding
masked by attention_mask, one warm-up batch, best of R passes — the same
protocol as the C side. Tokens counted are the valid (unpadded) ones.

Prints tokens/s of both and the ratio ltdi / PyTorch (> 1: ltdi faster), with
the machine's load average before and after (other processes skew both).
A benchmark, not a test: it asserts nothing about speed.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import torch
from transformers import AutoModel, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_c(bench, encoder, glosses, batch, threads, unsorted, repeat, sgemm):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "bench_bert.json")
        cmd = [bench, encoder, str(glosses), str(batch), "--threads",
               ",".join(map(str, threads)), "--repeat", str(repeat), "--sgemm", sgemm,
               "--json", out]
        if unsorted:
            cmd.append("--unsorted")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
        sys.stdout.write(proc.stdout)
        with open(out) as f:
            return json.load(f), cmd


def check_tokens(tok, data):
    """Counts glosses whose reference ids differ from the C benchmark's."""
    flat = [ids for b in data["batches"] for ids in b]
    bad = 0
    for text, ids in zip(data["texts"], flat):
        ref = tok(text, truncation=True, max_length=data["max_length"])["input_ids"]
        bad += ref != ids
    return bad, len(flat)


def torch_batches(data):
    out = []
    for b in data["batches"]:
        T = max(len(ids) for ids in b)
        ids = torch.tensor([x + [0] * (T - len(x)) for x in b], dtype=torch.long)
        mask = torch.tensor([[1] * len(x) + [0] * (T - len(x)) for x in b], dtype=torch.long)
        out.append((ids, mask))
    return out


def torch_pass(model, batches, warmup=False):
    t0 = time.perf_counter()
    for ids, mask in batches:
        model(input_ids=ids, attention_mask=mask)
        if warmup:
            break
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bench", help="path of the bench_bert binary")
    ap.add_argument("--encoder", default=os.path.join(ROOT, ".venv-ref", "encoder"))
    ap.add_argument("--glosses", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--unsorted", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sgemm", default="auto", choices=["auto", "openblas", "ltdi"])
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]

    load_before = os.getloadavg()
    data, cmd = run_c(args.bench, args.encoder, args.glosses, args.batch, threads,
                      args.unsorted, args.repeat, args.sgemm)
    tok = AutoTokenizer.from_pretrained(args.encoder)
    bad, n = check_tokens(tok, data)
    print(f"tokenisation: {n - bad}/{n} glosses give the reference tokenizer's ids")
    if bad:
        print("  (PyTorch is timed on the C benchmark's ids all the same)")

    torch.set_num_interop_threads(1)
    model = AutoModel.from_pretrained(args.encoder, torch_dtype=torch.float32).eval()
    batches = torch_batches(data)
    tokens = data["tokens"]
    c_runs = {r["threads"]: r for r in data["runs"]}
    rows = []
    print(f"PyTorch {torch.__version__} (transformers AutoModel, float32, inference_mode), "
          f"best of {args.repeat}")
    for t in threads:
        torch.set_num_threads(t)
        with torch.inference_mode():
            torch_pass(model, batches, warmup=True)
            passes = [torch_pass(model, batches) for _ in range(args.repeat)]
        best = min(passes)
        rows.append({"threads": t, "ltdi_tokens_per_s": c_runs[t]["tokens_per_s"],
                     "torch_tokens_per_s": tokens / best, "torch_seconds": best,
                     "torch_passes": passes, "ltdi_passes": c_runs[t]["passes"]})
        print(f"  {t} thread{'s' if t > 1 else ''}: {tokens / best:.0f} tokens/s ({best:.2f} s)")
    load_after = os.getloadavg()

    core = os.environ.get("OPENBLAS_CORETYPE")
    print(f"\nmachine: {cpu_model()}, {os.cpu_count()} CPUs; OPENBLAS_CORETYPE="
          f"{core if core else '(unset)'}")
    print(f"ltdi's sgemm: {data['sgemm']} (OpenBLAS core {data['blas_core']}); PyTorch's "
          f"matrix products: its own build's BLAS")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    print(f"{data['glosses']} glosses, {tokens} tokens, batch {data['batch']}, "
          f"{'sorted by length' if data['sorted'] else 'unsorted'}")
    print(f"{'threads':>7} {'ltdi tok/s':>11} {'torch tok/s':>12} {'ltdi/torch':>11}")
    for r in rows:
        r["ratio"] = r["ltdi_tokens_per_s"] / r["torch_tokens_per_s"]
        print(f"{r['threads']:>7} {r['ltdi_tokens_per_s']:>11.0f} {r['torch_tokens_per_s']:>12.0f} "
              f"{r['ratio']:>10.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": cpu_model(), "cpus": os.cpu_count(),
                       "openblas_coretype": core, "sgemm": data["sgemm"],
                       "blas_core": data["blas_core"], "load_before": load_before,
                       "load_after": load_after, "torch": torch.__version__,
                       "c_command": cmd, "glosses": data["glosses"], "tokens": tokens,
                       "batch": data["batch"], "sorted": data["sorted"],
                       "tokenisation_mismatches": bad, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
