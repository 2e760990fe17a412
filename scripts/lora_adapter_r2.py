"""scripts/lora_adapter_r2.py - how much of a prepared LoRA adapter the task's
classes explain (docs/LORA.md, "Why"): ridge regressions of each task's
trained adapter minus the training tasks' mean on (a) its class indicators
and (b) the sum of its class means, fitted on the first N_TRAIN tasks and
scored (R^2 over every adapter float) on the rest.

  lora_adapter_r2.py LORA_TRAJECTORIES.safetensors N_TRAIN

Reads the file of `ltdi-train prepare --encoder ... --text ...` with numpy
only (Debian's python3-numpy); no ltdi code.
"""
import json
import struct
import sys

import numpy as np


def tensors(path):
    f = open(path, "rb")
    n = struct.unpack("<Q", f.read(8))[0]
    head, base = json.loads(f.read(n)), 8 + n

    def get(name):
        t = head[name]
        a, b = t["data_offsets"]
        f.seek(base + a)
        dt = {"F32": np.float32, "I32": np.int32}[t["dtype"]]
        return np.frombuffer(f.read(b - a), dtype=dt).reshape(t["shape"])
    return get


def ridge_r2(x, d, n_train, lam=1.0):
    xt = x[:n_train]
    w = np.linalg.solve(xt.T @ xt + lam * np.eye(x.shape[1]), xt.T @ d[:n_train])
    r2 = lambda a, b: 1 - ((d[a:b] - x[a:b] @ w) ** 2).sum() / (d[a:b] ** 2).sum()
    return r2(0, n_train), r2(n_train, len(d))


def main():
    path, n_train = sys.argv[1], int(sys.argv[2])
    get = tensors(path)
    traj, classes, emb = get("trajectories"), get("classes"), get("embeddings")
    m, ways = classes.shape
    final = traj[:, -1, :].astype(np.float64)
    d = final - final[:n_train].mean(0)
    onehot = np.zeros((m, int(classes.max()) + 1))
    for i in range(m):
        onehot[i, classes[i]] = 1
    means_sum = emb.reshape(m, ways, -1).sum(1).astype(np.float64)
    for name, x in (("class indicators", onehot), ("sum of class means", means_sum)):
        tr, ho = ridge_r2(x, d, n_train)
        print("%-20s R^2 train %.3f  held out %.3f" % (name, tr, ho))
    print("rms of (adapter - mean) %.5f, rms of the mean adapter %.5f"
          % (np.sqrt((d ** 2).mean()), np.sqrt((final[:n_train].mean(0) ** 2).mean())))


if __name__ == "__main__":
    main()
