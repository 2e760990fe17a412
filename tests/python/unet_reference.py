#!/usr/bin/python3
"""Independent PyTorch reference for ltdi's conditional 1-D U-Net denoiser.

  unet_reference.py IN.safetensors OUT.safetensors

IN holds the model's parameters under their layout names
("down0.res0.conv1.weight", ...), the inputs "input.x_t" (B, P) F32,
"input.t" (B,) I32, "input.cond" (B, D_c) F32, the upstream gradient
"input.deps" (B, P) F32, and the architecture as JSON in the metadata key
"unet_config". The network is built here from the architecture description
(core/unet.h, docs/UNET.md) out of torch.nn modules, loaded with
load_state_dict(strict=True) -- so a parameter missing on either side or of
the wrong shape fails -- and run in float64, so the reference carries no
float32 rounding of its own. OUT receives "output.eps" (B, P), "grad.<name>"
for every parameter and "grad.input.x_t", all F32, for the loss
sum(eps * deps).

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


class ResBlock(nn.Module):
    """GN -> SiLU -> conv, add Linear(embedding) per channel, GN -> SiLU -> conv,
    plus the input (through a 1x1 conv when the channel count changes)."""

    def __init__(self, cin, cout, emb_dim, groups, k):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-5)
        self.conv1 = nn.Conv1d(cin, cout, k, padding=k // 2)
        self.emb_proj = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-5)
        self.conv2 = nn.Conv1d(cout, cout, k, padding=k // 2)
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_proj(emb).unsqueeze(-1)
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class TimeEmbed(nn.Module):
    def __init__(self, time_dim, emb_dim):
        super().__init__()
        self.time_dim = time_dim
        self.lin1 = nn.Linear(time_dim, emb_dim)
        self.lin2 = nn.Linear(emb_dim, emb_dim)

    def forward(self, t):
        half = self.time_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
        ang = t.to(torch.float64)[:, None] * freqs[None, :]
        sincos = torch.cat([torch.sin(ang), torch.cos(ang)], dim=1).to(self.lin1.weight.dtype)
        return self.lin2(F.silu(self.lin1(sincos)))


class Level(nn.Module):
    """A container so parameter names read down0.res0..., up1.up..."""


class UNet1D(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.P, self.S = cfg["n_params"], cfg["token"]
        self.n = cfg["n_levels"]
        k, groups, emb = cfg["kernel"], cfg["groups"], cfg["emb_dim"]
        chans = [cfg["base_ch"] * m for m in cfg["mult"]]
        self.chans = chans
        m = 2 ** (self.n - 1)
        self.L = -(-(-(-self.P // self.S)) // m) * m  # ceil(P/S) rounded up to a multiple of m

        self.time_embed = TimeEmbed(cfg["time_dim"], emb)
        self.cond_proj = nn.Linear(cfg["cond_dim"], emb)
        # Position-wise conditioning (absent from older configurations): a map
        # of S channels by L positions computed from c, fed to the first
        # convolution beside the tokens and added to the output, scaled per
        # channel by a gate computed from the embedding.
        self.use_map = bool(cfg.get("cond_map", 0))
        if self.use_map:
            self.cond_map = nn.Linear(cfg["cond_dim"], self.S * self.L)
        self.in_conv = nn.Conv1d(self.S * (2 if self.use_map else 1), chans[0], k, padding=k // 2)
        prev = chans[0]
        for i, c in enumerate(chans):
            lvl = Level()
            lvl.res0 = ResBlock(prev, c, emb, groups, k)
            if i < self.n - 1:
                lvl.down = nn.Conv1d(c, c, k, stride=2, padding=k // 2)
            setattr(self, f"down{i}", lvl)
            prev = c
        self.mid = Level()
        self.mid.res0 = ResBlock(prev, prev, emb, groups, k)
        for i in reversed(range(self.n)):
            lvl = Level()
            lvl.res0 = ResBlock(prev + chans[i], chans[i], emb, groups, k)
            if i > 0:
                lvl.up = nn.Conv1d(chans[i], chans[i], k, padding=k // 2)
            setattr(self, f"up{i}", lvl)
            prev = chans[i]
        self.out_norm = nn.GroupNorm(groups, chans[0], eps=1e-5)
        self.out_conv = nn.Conv1d(chans[0], self.S, k, padding=k // 2)
        if self.use_map:
            self.out_gate = nn.Linear(emb, self.S)

    def forward(self, x_t, t, cond):
        B = x_t.shape[0]
        # Tokens of S consecutive weights become positions, their values channels.
        x = F.pad(x_t, (0, self.L * self.S - self.P)).reshape(B, self.L, self.S).transpose(1, 2)
        e = F.silu(self.time_embed(t) + self.cond_proj(cond))
        if self.use_map:
            cmap = self.cond_map(cond).reshape(B, self.S, self.L)  # channel-major: [s][l]
            h = self.in_conv(torch.cat([x, cmap], dim=1))
        else:
            h = self.in_conv(x)
        skips = []
        for i in range(self.n):
            lvl = getattr(self, f"down{i}")
            h = lvl.res0(h, e)
            skips.append(h)
            if i < self.n - 1:
                h = lvl.down(h)
        h = self.mid.res0(h, e)
        for i in reversed(range(self.n)):
            lvl = getattr(self, f"up{i}")
            h = lvl.res0(torch.cat([h, skips[i]], dim=1), e)
            if i > 0:
                h = lvl.up(F.interpolate(h, scale_factor=2, mode="nearest"))
        y = self.out_conv(F.silu(self.out_norm(h)))
        if self.use_map:
            y = y + self.out_gate(e).unsqueeze(-1) * cmap
        return y.transpose(1, 2).reshape(B, self.L * self.S)[:, : self.P]


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    tensors, meta = read_safetensors(argv[1])
    cfg = json.loads(meta["unet_config"])
    model = UNet1D(cfg).to(torch.float64)
    state = {k: v.to(torch.float64) for k, v in tensors.items() if not k.startswith("input.")}
    model.load_state_dict(state, strict=True)

    x_t = tensors["input.x_t"].to(torch.float64).requires_grad_(True)
    t = tensors["input.t"].to(torch.int64)
    cond = tensors["input.cond"].to(torch.float64)
    deps = tensors["input.deps"].to(torch.float64)
    eps = model(x_t, t, cond)
    (eps * deps).sum().backward()

    out = {"output.eps": eps, "grad.input.x_t": x_t.grad}
    for name, p in model.named_parameters():
        out["grad." + name] = p.grad
    write_safetensors(argv[2], out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
