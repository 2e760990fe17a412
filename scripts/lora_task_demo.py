"""scripts/lora_task_demo.py - the LoRA half of scripts/quickstart.sh: one
unseen WordNet task sent to ltdi-serve as texts, the adapter it answers
loaded with PEFT as a serving stack would, and its query accuracy printed
next to the frozen encoder's nearest centroid.

  lora_task_demo.py URL ENCODER META_TEST_TSV OUT_DIR [TASKS]

Each task (TASKS, default 5, seeds 1..TASKS): 5 classes of META_TEST_TSV
(meta-test categories, never used in training), 20 support and 20 query
texts each. The support
texts go to POST /v1/generate with "format": "peft"; the answered tar is
unpacked into OUT_DIR/adapter/<task_id>/ and scored by
tests/python/peft_serve_score.py (PeftModel.from_pretrained on the base,
the recipe's cosine head on the frozen class means), once through the
adapter and once through the frozen encoder. Run with the reference venv's
python (.venv-ref/bin/python, scripts/setup.sh makes it).
"""
import io
import json
import os
import random
import sys
import tarfile
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
import peft_serve_score as scorer  # noqa: E402  (the independent PEFT scorer)

WAYS, SHOTS, QUERIES = 5, 20, 20


def draw_task(tsv, seed):
    by_class = {}
    with open(tsv, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):  # a comment line (docs/TEXT_DATA.md)
                continue
            label, text = line.rstrip("\n").split("\t", 1)
            by_class.setdefault(label, []).append(text)
    rng = random.Random(seed)
    names = rng.sample(sorted(c for c, t in by_class.items() if len(t) >= SHOTS + QUERIES), WAYS)
    task = {"support": [], "labels": [], "queries": [], "query_labels": [], "max_length": 64}
    for k, name in enumerate(names):
        texts = rng.sample(by_class[name], SHOTS + QUERIES)
        task["support"] += texts[:SHOTS]
        task["labels"] += [k] * SHOTS
        task["queries"] += texts[SHOTS:]
        task["query_labels"] += [k] * QUERIES
    return names, task


def one_task(url, encoder, tsv, out, seed):
    names, task = draw_task(tsv, seed)
    body = json.dumps({"support": {"texts": task["support"], "labels": task["labels"]},
                       "seed": 1, "format": "peft"}).encode()
    req = urllib.request.Request(url + "/v1/generate", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        tar_bytes = r.read()
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        folder = tar.getnames()[0].split("/")[0]
        tar.extractall(os.path.join(out, "adapter"))
    adapted, frozen, _ = scorer.score(encoder, os.path.join(out, "adapter", folder), task)
    n = len(task["queries"])
    print("task %d (%s): adapter %s... (%d-byte PEFT tar); %d queries: frozen nearest centroid "
          "%.1f%%, generated LoRA %.1f%%" % (seed, ", ".join(names), folder[:12], len(tar_bytes),
                                             n, 100.0 * frozen / n, 100.0 * adapted / n))
    return frozen / n, adapted / n


def main():
    url, encoder, tsv, out = sys.argv[1:5]
    tasks = int(sys.argv[5]) if len(sys.argv) > 5 else 5
    print("unseen tasks from the meta-test categories, %d-way %d-shot, %d queries per class"
          % (WAYS, SHOTS, QUERIES))
    got = [one_task(url, encoder, tsv, out, seed) for seed in range(1, tasks + 1)]
    f = sum(g[0] for g in got) / len(got)
    a = sum(g[1] for g in got) / len(got)
    print("mean over %d tasks: frozen nearest centroid %.1f%%, generated LoRA %.1f%% (%+.1f points); "
          "docs/LORA.md has the 300-episode figures" % (len(got), 100 * f, 100 * a, 100 * (a - f)))


if __name__ == "__main__":
    main()
