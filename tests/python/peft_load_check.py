"""tests/python/peft_load_check.py - PEFT 0.13.2 against ltdi's LoRA adapter
folders (core/text/lora.h), for tests/unit/test_lora.c (lora_reference/*).

  check ENCODER CASE...   each CASE is DIR:FLAT:MODULES:R:ALPHA, where DIR is
                          a folder ltdi_lora_write_peft wrote, FLAT the same
                          adapter's flat vector as raw little-endian float32,
                          MODULES its comma-separated targets
  save ENCODER DIR FLAT MODULES R ALPHA
                          PEFT makes and saves an adapter (random nonzero A
                          and B) with save_pretrained; FLAT gets its values
                          in ltdi's documented layout, for the C reader

`check` loads each DIR the way a user would,
PeftModel.from_pretrained(AutoModel.from_pretrained(ENCODER), DIR), and
requires: the adapted modules are exactly MODULES in every layer; every
lora_A / lora_B equals the slice of FLAT the layout in lora.h gives it, bit
for bit; merging changes each adapted weight by (alpha/r)·B·A within a
float32 rounding bound and leaves the others untouched; the adapter changes
the encoder's output. The layout and shapes are rebuilt here from the
header's description and the base model's own weights, not from ltdi's
files. Any mismatch prints the reason and exits 1.
"""
import sys
import warnings

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import Linear as LoraLinear
from transformers import AutoModel

# Canonical module order of the layout, with each module's path in a layer.
MODULES = [
    ("query", "attention.self.query"),
    ("key", "attention.self.key"),
    ("value", "attention.self.value"),
    ("attention.output.dense", "attention.output.dense"),
    ("intermediate.dense", "intermediate.dense"),
    ("output.dense", "output.dense"),
]
EPS32 = float(np.finfo(np.float32).eps)


def fail(msg):
    print("peft_load_check: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def get(model, name):
    for part in name.split("."):
        model = getattr(model, part) if not part.isdigit() else model[int(part)]
    return model


def layout(base, names, r):
    """[(layer, path, 'A'|'B', offset, shape)] in the order lora.h documents."""
    chosen = [(n, p) for n, p in MODULES if n in names]
    if len(chosen) != len(names):
        fail("unknown module in %r" % (names,))
    out, off = [], 0
    for layer in range(base.config.num_hidden_layers):
        for _, path in chosen:
            w = get(base, "encoder.layer.%d.%s" % (layer, path)).weight  # (out, in)
            n_out, n_in = w.shape
            out.append((layer, path, "A", off, (r, n_in)))
            off += r * n_in
            out.append((layer, path, "B", off, (n_out, r)))
            off += n_out * r
    return out, off


def check_case(encoder, case):
    d, flat_path, mods, r, alpha = case.split(":")
    names, r, alpha = mods.split(","), int(r), float(alpha)
    scale = alpha / r
    flat = np.fromfile(flat_path, dtype="<f4")
    base = AutoModel.from_pretrained(encoder).eval()
    tensors, count = layout(base, names, r)
    if count != flat.size:
        fail("%s: the layout has %d floats, the flat vector %d" % (d, count, flat.size))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft = PeftModel.from_pretrained(AutoModel.from_pretrained(encoder), d).eval()
    for w in caught:
        fail("%s: PEFT warned while loading: %s" % (d, w.message))
    inner = peft.base_model.model
    adapted = sorted(n for n, m in inner.named_modules() if isinstance(m, LoraLinear))
    want = sorted({"encoder.layer.%d.%s" % (t[0], t[1]) for t in tensors})
    if adapted != want:
        fail("%s: PEFT adapted %s, expected %s" % (d, adapted, want))
    for layer, path, ab, off, shape in tensors:
        mod = get(inner, "encoder.layer.%d.%s" % (layer, path))
        got = getattr(mod, "lora_" + ab)["default"].weight.detach().numpy()
        exp = flat[off:off + shape[0] * shape[1]].reshape(shape)
        if got.shape != exp.shape or got.dtype != np.float32 or not np.array_equal(got, exp):
            fail("%s: layer %d %s lora_%s differs from the flat vector at offset %d"
                 % (d, layer, path, ab, off))
        if mod.scaling["default"] != scale:
            fail("%s: layer %d %s: scaling %r, expected %r" % (d, layer, path,
                                                              mod.scaling["default"], scale))
    if not any(np.any(flat[o:o + s[0] * s[1]] != 0) for _, _, ab, o, s in tensors if ab == "B"):
        fail("%s: every B is zero; the merge check would prove nothing" % d)

    ids = torch.tensor([[101, 7592, 2088, 1010, 2023, 2003, 1037, 3231, 102]])
    with torch.no_grad():
        y_base = base(input_ids=ids).last_hidden_state
        y_peft = peft(input_ids=ids).last_hidden_state
    if not torch.max(torch.abs(y_base - y_peft)) > 1e-4:
        fail("%s: the adapter does not change the encoder's output" % d)

    merged = peft.merge_and_unload()
    base_sd, merged_sd = base.state_dict(), merged.state_dict()
    adapted_w = {"encoder.layer.%d.%s.weight" % (t[0], t[1]) for t in tensors}
    worst = 0.0
    for key, w0 in base_sd.items():
        w1 = merged_sd[key]
        if key not in adapted_w:
            if not torch.equal(w0, w1):
                fail("%s: merging changed %s, which is not adapted" % (d, key))
            continue
        layer = int(key.split(".")[2])
        path = key[len("encoder.layer.%d." % layer):-len(".weight")]
        a = [t for t in tensors if t[0] == layer and t[1] == path and t[2] == "A"][0]
        b = [t for t in tensors if t[0] == layer and t[1] == path and t[2] == "B"][0]
        A = flat[a[3]:a[3] + a[4][0] * a[4][1]].reshape(a[4]).astype(np.float64)
        B = flat[b[3]:b[3] + b[4][0] * b[4][1]].reshape(b[4]).astype(np.float64)
        delta_c = scale * (B @ A)
        delta_peft = w1.numpy().astype(np.float64) - w0.numpy().astype(np.float64)
        # float32 rounding of W + scale·(B·A): the final add and subtract
        # (eps·(|W'| + |W|)), the product's r-term sums and the scaling.
        bound = (EPS32 * (np.abs(w1.numpy()) + np.abs(w0.numpy())) +
                 (r + 2) * EPS32 * scale * (np.abs(B) @ np.abs(A)))
        err = np.abs(delta_peft - delta_c)
        if np.any(err > bound):
            i = np.unravel_index(np.argmax(err - bound), err.shape)
            fail("%s: %s: merged - base = %g, (alpha/r)·B·A = %g at %s (bound %g)"
                 % (d, key, delta_peft[i], delta_c[i], i, bound[i]))
        if not np.any(delta_peft != 0):
            fail("%s: merging left %s unchanged" % (d, key))
        worst = max(worst, float(np.max(err / np.maximum(bound, 1e-30))))
    print("peft_load_check: %s: %d tensors equal, %d merged weights within bound "
          "(worst %.3g of it)" % (d, len(tensors), len(adapted_w), worst))


def save(encoder, d, flat_path, mods, r, alpha):
    names, r, alpha = mods.split(","), int(r), float(alpha)
    torch.manual_seed(1234)
    base = AutoModel.from_pretrained(encoder)
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=names, lora_dropout=0.0)
    peft = get_peft_model(base, cfg)
    with torch.no_grad():
        for m in peft.modules():
            if isinstance(m, LoraLinear):
                m.lora_B["default"].weight.normal_(0, 0.02)
    peft.save_pretrained(d)
    tensors, count = layout(AutoModel.from_pretrained(encoder), names, r)
    flat = np.zeros(count, dtype="<f4")
    inner = peft.base_model.model
    for layer, path, ab, off, shape in tensors:
        mod = get(inner, "encoder.layer.%d.%s" % (layer, path))
        w = getattr(mod, "lora_" + ab)["default"].weight.detach().numpy()
        flat[off:off + w.size] = w.reshape(-1)
    flat.tofile(flat_path)
    print("peft_load_check: PEFT saved %s (%d floats)" % (d, count))


def main(argv):
    if len(argv) >= 3 and argv[0] == "check":
        for case in argv[2:]:
            check_case(argv[1], case)
    elif len(argv) == 7 and argv[0] == "save":
        save(*argv[1:])
    else:
        fail("usage: see the docstring")


if __name__ == "__main__":
    main(sys.argv[1:])
