#!/usr/bin/env python3
"""tests/lint/layers.py SOURCE_DIR — the one-way dependency rule, checked.

Every #include "dir/..." of a project header must point at the file's own
layer or one below it (docs/ARCHITECTURE.md):

    base/ <- kernels/ <- core/ <- trainer/common <- data <- body <- prepare
                                  <- meta <- eval <- cli      (ltdi-train)
                              <- server/registry <- server/   (ltdi-serve)

trainer/ and server/ never include each other. Prints each violation and
exits 1; exits 0 when there is none.
"""
import os
import re
import sys

TRAINER = ["common", "data", "body", "prepare", "meta", "eval", "cli"]


def layer(path):
    """(chain, rank) of a source path; chain "" is shared by both programs."""
    parts = path.split("/")
    top = parts[0]
    if top == "base":
        return ("", 0)
    if top == "kernels":
        return ("", 1)
    if top == "core":
        return ("", 2)
    if top == "trainer" and len(parts) > 2 and parts[1] in TRAINER:
        return ("trainer", 3 + TRAINER.index(parts[1]))
    if top == "server":
        return ("server", 3 if len(parts) > 2 and parts[1] == "registry" else 4)
    return None


def allowed(src, dst):
    if dst[0] == "":
        return dst[1] <= src[1]
    return src[0] == dst[0] and dst[1] <= src[1]


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    inc = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
    bad, checked = [], 0
    for top in ("base", "kernels", "core", "trainer", "server"):
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for name in files:
                if not name.endswith((".c", ".h", ".cu", ".cuh")):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                src = layer(rel)
                if src is None:
                    bad.append(f"{rel}: outside every layer (trainer/ files live in a stage folder)")
                    continue
                with open(os.path.join(root, rel), encoding="utf-8") as f:
                    for lineno, line in enumerate(f, 1):
                        m = inc.match(line)
                        if not m or "/" not in m.group(1):
                            continue
                        dst = layer(m.group(1))
                        checked += 1
                        if dst is None or not allowed(src, dst):
                            bad.append(f"{rel}:{lineno}: includes {m.group(1)}, above its layer")
    for b in bad:
        print(b)
    print(f"layers: {checked} includes checked, {len(bad)} violations")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
