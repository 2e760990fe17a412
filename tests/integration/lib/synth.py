"""tests/integration/lib/synth.py — the synthetic inputs of the shell tests
and benches, and the hash they compare models by, in one place.

    python3 synth.py hash FILE     sha256 of a safetensors file's tensors
                                   (header without __metadata__, then the
                                   data): meta's models record their wall
                                   time in the metadata, so equal models
                                   differ there
    python3 synth.py dist DIR      dist_mpi's and check_srun's inputs
    python3 synth.py faults DIR    dist_faults' inputs
    python3 synth.py bench DIR     bench_dist's inputs

Scripts that make inputs of their own import write, clusters and
mlp_trajectories from here. Everything is a pure function of the seeds
below, so runs compare across processes and machines.
"""
import hashlib
import json
import random
import struct
import sys


def write(path, tensors, meta=None):
    """tensors: name -> (dtype "F32"/"I32", shape, flat values)."""
    hdr, blobs, off = {}, [], 0
    for name, (dtype, shape, vals) in tensors.items():
        b = struct.pack("<%d%s" % (len(vals), {"F32": "f", "I32": "i"}[dtype]), *vals)
        hdr[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if meta:
        hdr["__metadata__"] = meta
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def clusters(path, d, classes, per, rng, spread=0.5, absolute=True):
    """A features file: `per` examples around each of `classes` Gaussian
    centres; absolute values when the features stand for a ReLU body's."""
    centres = [[rng.gauss(0.0, 1.0) for _ in range(d)] for _ in range(classes)]
    feats, labels = [], []
    for c in range(classes):
        for _ in range(per):
            row = [x + rng.gauss(0.0, spread) for x in centres[c]]
            feats += [abs(x) for x in row] if absolute else row
            labels.append(c)
    write(path, {"features": ("F32", [len(labels), d], feats),
                 "labels": ("I32", [len(labels)], labels)})


def mlp_trajectories(path, rng, M=12, L=3, ways=2, dim=4, hid=3):
    """A trajectories file of M MLP-head tasks (the U-Net's kind)."""
    P = dim * hid + hid + hid * ways + ways
    traj = [rng.gauss(0.0, 0.3) for _ in range(M * L * P)]
    emb = [rng.gauss(0.0, 1.0) for _ in range(M * ways * dim)]
    write(path,
          {"trajectories": ("F32", [M, L, P], traj), "embeddings": ("F32", [M, ways * dim], emb)},
          {"format": "ltdi-trajectories", "ways": str(ways), "in_dim": str(dim),
           "hidden": str(hid), "shots": "1", "data_source": "synthetic"})


def tensors_hash(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    hdr.pop("__metadata__", None)
    return hashlib.sha256(json.dumps(hdr, sort_keys=True).encode() + raw[8 + n:]).hexdigest()


def dist_inputs(out):
    """16-dim features of 12 classes x 8 (prepare), 64-dim of 8 x 6 (eval
    with the shipped 64-dim model), a tiny MLP-head trajectories file."""
    rng = random.Random(7)
    clusters(out + "/f16.safetensors", 16, 12, 8, rng)
    clusters(out + "/f64.safetensors", 64, 8, 6, rng)
    mlp_trajectories(out + "/mlp_traj.safetensors", rng)


def faults_inputs(out):
    rng = random.Random(11)
    clusters(out + "/f16.safetensors", 16, 12, 8, rng)
    mlp_trajectories(out + "/mlp_traj.safetensors", rng)


def bench_inputs(out):
    """64-dim features of 64 classes x 30 (prepare: 16000 tasks), and 100
    tasks of the shipped U-Net's head size (5-way, hidden 32: P = 2245)."""
    rng = random.Random(3)
    clusters(out + "/f64.safetensors", 64, 64, 30, rng, spread=0.6)
    mlp_trajectories(out + "/traj.safetensors", rng, M=100, L=4, ways=5, dim=64, hid=32)


def main(argv):
    jobs = {"dist": dist_inputs, "faults": faults_inputs, "bench": bench_inputs}
    if len(argv) == 3 and argv[1] == "hash":
        print(tensors_hash(argv[2]))
    elif len(argv) == 3 and argv[1] in jobs:
        jobs[argv[1]](argv[2])
    else:
        sys.exit("usage: synth.py hash FILE | dist DIR | faults DIR | bench DIR")


if __name__ == "__main__":
    main(sys.argv)
