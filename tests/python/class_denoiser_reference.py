#!/usr/bin/python3
"""Independent PyTorch reference for ltdi's class-token denoiser.

  class_denoiser_reference.py IN.safetensors OUT.safetensors

IN holds the model's parameters under their layout names ("in.weight",
"block0.film_scale.weight", ..., core/class_denoiser.h), the inputs
"input.x_t" (B, N, D) F32, "input.t" (B,) I32, "input.cond" (B, N, d) F32
(absent when d is 0), "input.set" (B, S, set_dim) F32 for a net with a set
encoder, the upstream gradient "input.deps" (B, N, D) F32, and the
architecture as JSON in the metadata key "cden_config" (the optional
"positions" and "set_dim" fields build the learned position table and the
set encoder of the LoRA generator; "set_token_dim" Ds the task-level token,
whose input "input.x_set" (B, Ds) and upstream gradient "input.deps_set"
(B, Ds) then come as separate tensors: the C layout's [set | classes] rows
split in two). The network is built here from the
architecture description (core/class_denoiser.h, docs/CLASS_DENOISER.md) out
of torch.nn modules (Linear, LayerNorm), loaded with
load_state_dict(strict=True) -- so a parameter missing on either side or of
the wrong shape fails -- and run in float64, so the reference carries no
float32 rounding of its own. OUT receives "output.eps" (B, N, D),
"grad.<name>" for every parameter, "grad.input.x_t" and (when d > 0)
"grad.input.cond", with a task-level token also "output.eps_set" and
"grad.input.x_set" (B, Ds), all F32, for the loss sum(eps * deps)
(+ sum(eps_set * deps_set)).

Safetensors is read and written by hand (struct + json): the format is an
8-byte little-endian header length, a JSON header, then the raw data.
Exit status: 0 on success, 1 on bad input, 2 on usage errors.
"""
import json
import math
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

DTYPES = {"F32": (torch.float32, 4), "I32": (torch.int32, 4), "F64": (torch.float64, 8)}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    data = blob[8 + n :]
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    for name, info in header.items():
        dtype, size = DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        shape = info["shape"]
        count = (end - begin) // size
        if count != math.prod(shape):
            raise ValueError(f"{name}: shape {shape} disagrees with {end - begin} bytes")
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype) if count else torch.zeros(0, dtype=dtype)
        out[name] = t.reshape(shape).clone()
    return out, meta


def write_safetensors(path, tensors):
    header, chunks, offset = {}, [], 0
    for name, t in tensors.items():
        raw = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    hjson = json.dumps(header).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for raw in chunks:
            f.write(raw)


# ---- the architecture, in torch.nn terms ------------------------------------


def sinusoid(t, dim):
    """[sin(t f_k), cos(t f_k)], f_k = 10000^(-k/(dim/2)), in float64."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    ang = t.to(torch.float64)[:, None] * freqs[None, :]
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)


class Block(nn.Module):
    """FiLM(t) on every token, LayerNorm, then each token's own linear map
    plus a linear map of the mean over its task's tokens, SiLU, a linear
    layer and the residual. Token h is (B, N, H); the embedding e is (B, H)."""

    def __init__(self, width):
        super().__init__()
        self.film_scale = nn.Linear(width, width)
        self.film_shift = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width, eps=1e-5)
        # "self" is the parameter name in the model file; as an attribute it
        # would read oddly, so it is registered by name.
        self.add_module("self", nn.Linear(width, width))
        self.pool = nn.Linear(width, width, bias=False)
        self.out = nn.Linear(width, width)

    def forward(self, h, e):
        h = h + self.film_scale(e)[:, None, :] * h + self.film_shift(e)[:, None, :]
        g = self.norm(h)
        a = self._modules["self"](g) + self.pool(g.mean(dim=1))[:, None, :]
        return h + self.out(F.silu(a))


class ClassDenoiser(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        D, d, H = cfg["token_dim"], cfg["cond_dim"], cfg["width"]
        self.time_dim = cfg["time_dim"]
        self.blocks = cfg["blocks"]
        self.add_module("in", nn.Linear(D + d, H))  # "in" is a Python keyword
        self.time = nn.Linear(self.time_dim, H)
        for k in range(self.blocks):
            self.add_module(f"block{k}", Block(H))
        self.final_norm = nn.LayerNorm(H, eps=1e-5)
        self.out = nn.Linear(H, D)
        # The optional parts, registered after `out` as the file orders them.
        positions, set_dim = cfg.get("positions", 0), cfg.get("set_dim", 0)
        if positions:
            self.pos = nn.Embedding(positions, H)  # its table is "pos.weight"
        if set_dim:
            self.set_in = nn.Linear(set_dim, H)
            self.set_out = nn.Linear(H, H)
        # The task-level token, after everything else in the file.
        self.set_token_dim = cfg.get("set_token_dim", 0)
        if self.set_token_dim:
            self.set_token_in = nn.Linear(self.set_token_dim, H)
            self.set_token_out = nn.Linear(H, self.set_token_dim)

    def forward(self, x_t, t, cond=None, cset=None, x_set=None):
        """x_t (B, N, D), x_set (B, Ds) with a task-level token; returns
        eps (B, N, D), and eps_set (B, Ds) or None."""
        te = self.time(sinusoid(t, self.time_dim).to(self.time.weight.dtype))
        if hasattr(self, "set_in"):
            # DeepSets over the task's condition set: the mean makes its order irrelevant.
            te = te + self.set_out(F.silu(self.set_in(cset)).mean(dim=1))
        e = F.silu(te)
        tokens = x_t if cond is None else torch.cat([x_t, cond], dim=-1)
        h = self._modules["in"](tokens)
        if hasattr(self, "pos"):
            h = h + self.pos.weight[None, :, :]
        if x_set is not None:
            # the set token is row 0 of every task, without a condition
            h = torch.cat([self.set_token_in(x_set)[:, None, :], h], dim=1)
        h = h + e[:, None, :]
        for k in range(self.blocks):
            h = self._modules[f"block{k}"](h, e)
        g = self.final_norm(h)
        if x_set is None:
            return self.out(g), None
        return self.out(g[:, 1:, :]), self.set_token_out(g[:, 0, :])


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    tensors, meta = read_safetensors(argv[1])
    cfg = json.loads(meta["cden_config"])
    model = ClassDenoiser(cfg).to(torch.float64)
    state = {k: v.to(torch.float64) for k, v in tensors.items() if not k.startswith("input.")}
    model.load_state_dict(state, strict=True)

    x_t = tensors["input.x_t"].to(torch.float64).requires_grad_(True)
    cond = tensors.get("input.cond")
    if cond is not None:
        cond = cond.to(torch.float64).requires_grad_(True)
    cset = tensors.get("input.set")
    if cset is not None:
        cset = cset.to(torch.float64)
    t = tensors["input.t"].to(torch.int64)
    deps = tensors["input.deps"].to(torch.float64)
    if x_t.dim() != 3 or t.shape != x_t.shape[:1] or (cond is not None and cond.shape[:2] != x_t.shape[:2]) \
            or (cset is not None and cset.shape[0] != x_t.shape[0]):
        print("inputs disagree on (tasks, ways)", file=sys.stderr)
        return 1
    if (cond is None) != (cfg["cond_dim"] == 0) or (cset is None) != (cfg.get("set_dim", 0) == 0):
        print("inputs disagree with the configuration (cond_dim, set_dim)", file=sys.stderr)
        return 1
    x_set = tensors.get("input.x_set")
    if (x_set is None) != (cfg.get("set_token_dim", 0) == 0) or \
            (x_set is not None and tuple(x_set.shape) != (x_t.shape[0], cfg["set_token_dim"])):
        print("input.x_set disagrees with the configuration (set_token_dim)", file=sys.stderr)
        return 1
    if x_set is not None:
        x_set = x_set.to(torch.float64).requires_grad_(True)
    eps, eps_set = model(x_t, t, cond, cset, x_set)
    loss = (eps * deps).sum()
    if x_set is not None:
        loss = loss + (eps_set * tensors["input.deps_set"].to(torch.float64)).sum()
    loss.backward()

    out = {"output.eps": eps, "grad.input.x_t": x_t.grad}
    if x_set is not None:
        out["output.eps_set"] = eps_set
        out["grad.input.x_set"] = x_set.grad
    if cond is not None:
        out["grad.input.cond"] = cond.grad
    for name, p in model.named_parameters():
        out["grad." + name] = p.grad
    write_safetensors(argv[2], out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
