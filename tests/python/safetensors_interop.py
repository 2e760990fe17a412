#!/usr/bin/env python3
"""Interop check between ltdi's safetensors code and the reference
implementation (the `safetensors` PyPI package, numpy flavour).

  safetensors_interop.py check PATH   read a file written by ltdi's writer and
                                      compare every tensor and the metadata
                                      with the expected values below
  safetensors_interop.py write PATH   write the same tensors with the reference
                                      writer, for ltdi's reader to load

Both sides (this script and tests/unit/test_safetensors.c) compute the
expected values from the same simple formulas, written independently, so a
mismatch in layout, dtype, shape or byte order shows up as a failure.
Exit status: 0 on success, 1 on a mismatch, 2 on usage errors.
"""
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

METADATA = {"format": "ltdi-interop", "note": "h\u00e9llo \u2713"}


def expected():
    return {
        # float32 (3, 4): i * 0.25 - 1 over the flattened index i
        "w": (np.arange(12, dtype=np.float32) * np.float32(0.25) - np.float32(1)).reshape(3, 4),
        # float64 (5,): i / 3
        "b": np.arange(5, dtype=np.float64) / 3.0,
        # int32 (2, 3): 7 i - 5
        "ids": (np.arange(6, dtype=np.int32) * 7 - 5).reshape(2, 3),
        # float16 (4,): exactly representable values
        "h": np.array([0.5, 1.0, -2.0, 65504.0], dtype=np.float16),
        # uint8 (0,): an empty tensor
        "empty": np.zeros((0,), dtype=np.uint8),
        # float32 (): a scalar
        "s": np.array(3.5, dtype=np.float32),
        # bool (3,)
        "mask": np.array([True, False, True]),
        # int64 (2,): values past 32 bits
        "big": np.array([1 << 40, -(1 << 33)], dtype=np.int64),
    }


def check(path):
    want = expected()
    bad = []
    with safe_open(path, framework="np") as f:
        meta = f.metadata() or {}
        if meta != METADATA:
            bad.append(f"metadata {meta!r} != {METADATA!r}")
        keys = set(f.keys())
        if keys != set(want):
            bad.append(f"tensor names {sorted(keys)} != {sorted(want)}")
        for name in sorted(keys & set(want)):
            got, exp = f.get_tensor(name), want[name]
            if got.dtype != exp.dtype or got.shape != exp.shape:
                bad.append(f"{name}: {got.dtype}{got.shape} != {exp.dtype}{exp.shape}")
            elif not np.array_equal(got, exp):
                bad.append(f"{name}: values {got!r} != {exp!r}")
    for b in bad:
        print("interop mismatch:", b, file=sys.stderr)
    return 1 if bad else 0


def main(argv):
    if len(argv) != 3 or argv[1] not in ("check", "write"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[1] == "check":
        return check(argv[2])
    save_file(expected(), argv[2], metadata=METADATA)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
