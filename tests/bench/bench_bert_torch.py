#!/usr/bin/python3
"""ltdi's BERT encoder against PyTorch on the same batches, side by side in one run.

  .venv-ref/bin/python tests/bench/bench_bert_torch.py BENCH_BERT
      [--encoder DIR] [--glosses N] [--batch B] [--threads 1,2] [--unsorted]
      [--rounds R] [--sgemm auto|openblas|ltdi] [--json FILE]

BENCH_BERT is the C benchmark (build target bench_bert, tests/bench/bench_bert.c).
It tokenises every 100th gloss of WordNet's data.noun with ltdi's tokenizer,
times ltdi_bert_forward over batches of B (sorted by token count unless
--unsorted) and writes the exact batches of token ids (--json). This script
checks those ids against the reference tokenizer (transformers'
BertTokenizerFast of the same folder) and times transformers' AutoModel on
the SAME ids and batches: float32, eval mode, torch.inference_mode(), the
padding masked by attention_mask, one warm-up batch — the C side's protocol.
Tokens counted are the valid (unpadded) ones.

Threads, the same on both sides: ltdi's backend sets OpenBLAS's thread count
itself; PyTorch runs in a child process per thread count with
torch.set_num_threads(T) AND OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = T in
its environment — its matrix products go to the system OpenBLAS, whose own
thread pool torch.set_num_threads does not limit (without the variable a
"1-thread" PyTorch keeps every core busy in its GEMMs). Both sides report
the CPU seconds of a pass (all threads) beside the wall time, which shows
how many cores each really used.

The machine is shared and its speed drifts, so the two sides alternate: R
rounds, each one C pass and one PyTorch pass per thread count, and each side's
best round is reported, with the load average before and after.
Prints tokens/s of both and the ratio ltdi / PyTorch (> 1: ltdi faster).
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


def run_c(bench, encoder, glosses, batch, threads, unsorted, sgemm, out):
    cmd = [bench, encoder, str(glosses), str(batch), "--threads", str(threads), "--repeat", "1",
           "--sgemm", sgemm, "--json", out]
    if unsorted:
        cmd.append("--unsorted")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    with open(out) as f:
        return json.load(f), cmd, proc.stdout


def torch_worker(batches_path, threads):
    """Child process: one warm-up batch, one timed pass; prints JSON."""
    import torch
    from transformers import AutoModel
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    with open(batches_path) as f:
        data = json.load(f)
    model = AutoModel.from_pretrained(data["encoder"], torch_dtype=torch.float32).eval()
    batches = []
    for b in data["batches"]:
        T = max(len(ids) for ids in b)
        ids = torch.tensor([x + [0] * (T - len(x)) for x in b], dtype=torch.long)
        mask = torch.tensor([[1] * len(x) + [0] * (T - len(x)) for x in b], dtype=torch.long)
        batches.append((ids, mask))
    with torch.inference_mode():
        model(input_ids=batches[0][0], attention_mask=batches[0][1])
        t0, c0 = time.perf_counter(), time.process_time()
        for ids, mask in batches:
            model(input_ids=ids, attention_mask=mask)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"seconds": wall, "cpu_seconds": cpu, "torch": torch.__version__}))


def run_torch(batches_path, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--torch-worker", batches_path, str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"PyTorch worker failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_tokens(encoder, data):
    """Counts glosses whose reference ids differ from the C benchmark's."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(encoder)
    flat = [ids for b in data["batches"] for ids in b]
    bad = 0
    for text, ids in zip(data["texts"], flat):
        ref = tok(text, truncation=True, max_length=data["max_length"])["input_ids"]
        bad += ref != ids
    return bad, len(flat)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--torch-worker":
        torch_worker(sys.argv[2], int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bench", help="path of the bench_bert binary")
    ap.add_argument("--encoder", default=os.path.join(ROOT, ".venv-ref", "encoder"))
    ap.add_argument("--glosses", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--unsorted", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sgemm", default="auto", choices=["auto", "openblas", "ltdi"])
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]

    load_before = os.getloadavg()
    best = {t: {"c": None, "torch": None} for t in threads}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "bench_bert.json")
        data = None
        for r in range(args.rounds):
            for t in threads:
                data, cmd, stdout = run_c(args.bench, args.encoder, args.glosses, args.batch, t,
                                          args.unsorted, args.sgemm, out)
                if r == 0 and t == threads[0]:
                    sys.stdout.write(stdout.splitlines()[0] + "\n")
                    bad, n = check_tokens(args.encoder, data)
                    print(f"tokenisation: {n - bad}/{n} glosses give the reference tokenizer's ids"
                          + ("" if not bad else " (PyTorch runs on ltdi's ids all the same)"))
                c = data["runs"][0]
                tr = run_torch(out, t)
                print(f"  round {r + 1}, {t} thread{'s' if t > 1 else ''}: ltdi "
                      f"{data['tokens'] / c['seconds']:.0f} tokens/s ({c['seconds']:.2f} s, "
                      f"{c['cpu_seconds']:.2f} CPU s), PyTorch "
                      f"{data['tokens'] / tr['seconds']:.0f} tokens/s ({tr['seconds']:.2f} s, "
                      f"{tr['cpu_seconds']:.2f} CPU s)", flush=True)
                if best[t]["c"] is None or c["seconds"] < best[t]["c"]["seconds"]:
                    best[t]["c"] = c
                if best[t]["torch"] is None or tr["seconds"] < best[t]["torch"]["seconds"]:
                    best[t]["torch"] = tr
    load_after = os.getloadavg()
    tokens = data["tokens"]
    core = os.environ.get("OPENBLAS_CORETYPE")
    print(f"\nmachine: {cpu_model()}, {os.cpu_count()} CPUs; OPENBLAS_CORETYPE="
          f"{core if core else '(unset)'}; OpenBLAS core {data['blas_core']}")
    print(f"ltdi's sgemm: {data['sgemm']}; PyTorch {best[threads[0]]['torch']['torch']} "
          f"(its matrix products: the system OpenBLAS)")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    print(f"{data['glosses']} glosses, {tokens} tokens, batch {data['batch']}, "
          f"{'sorted by length' if data['sorted'] else 'unsorted'}, best of {args.rounds} rounds")
    print(f"{'threads':>7} {'ltdi tok/s':>11} {'CPU s':>6} {'torch tok/s':>12} {'CPU s':>6} "
          f"{'ltdi/torch':>11}")
    rows = []
    for t in threads:
        c, tr = best[t]["c"], best[t]["torch"]
        row = {"threads": t, "ltdi_tokens_per_s": tokens / c["seconds"],
               "ltdi_seconds": c["seconds"], "ltdi_cpu_seconds": c["cpu_seconds"],
               "torch_tokens_per_s": tokens / tr["seconds"], "torch_seconds": tr["seconds"],
               "torch_cpu_seconds": tr["cpu_seconds"]}
        row["ratio"] = row["ltdi_tokens_per_s"] / row["torch_tokens_per_s"]
        rows.append(row)
        print(f"{t:>7} {row['ltdi_tokens_per_s']:>11.0f} {c['cpu_seconds']:>6.2f} "
              f"{row['torch_tokens_per_s']:>12.0f} {tr['cpu_seconds']:>6.2f} {row['ratio']:>10.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": cpu_model(), "cpus": os.cpu_count(),
                       "openblas_coretype": core, "sgemm": data["sgemm"],
                       "blas_core": data["blas_core"], "load_before": load_before,
                       "load_after": load_after, "rounds": args.rounds,
                       "glosses": data["glosses"], "tokens": tokens, "batch": data["batch"],
                       "sorted": data["sorted"], "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
