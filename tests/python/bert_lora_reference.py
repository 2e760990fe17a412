#!/usr/bin/env python3
"""Independent reference for ltdi's LoRA-adapted BERT encoder
(core/text/bert_lora.h), for tests/unit/test_bert_lora.c and
tests/unit/test_lora_train.c (the *_reference suites).

  embed ENCODER ADAPTER TEXTS OUT.f32 [MAX_LENGTH]
      The adapted encoder a user gets from the PEFT folder ADAPTER:
      PeftModel.from_pretrained(AutoModel.from_pretrained(ENCODER), ADAPTER),
      eval mode, float32. For each line of TEXTS (UTF-8, one text a line):
      the mean of last_hidden_state over the attention mask, then
      F.normalize -- sentence-transformers' recipe for all-MiniLM-L6-v2 --
      tokenised by AutoTokenizer with truncation at MAX_LENGTH (default
      128). OUT.f32 gets the (N, C) embeddings as raw little-endian float32,
      OUT.f32.base those of the base encoder alone (before the adapter is
      loaded), the same way.
      Fails (exit 1) when the adapter moves no embedding by more than 1e-3
      against the base encoder: a comparison with an adapter that does
      nothing would show nothing.

Run with the reference venv: .venv-ref/bin/python. Exit 0 on success.
"""
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from peft import PeftModel
from transformers import AutoModel, AutoTokenizer


def fail(msg):
    print("bert_lora_reference: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def embed(model, tok, texts, max_length):
    out = []
    with torch.no_grad():
        for s in range(0, len(texts), 32):
            batch = tok(texts[s:s + 32], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
            h = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
            pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(F.normalize(pooled, p=2, dim=1))
    return torch.cat(out).numpy().astype(np.float32)


def main(argv):
    if len(argv) < 5 or argv[0] != "embed":
        print(__doc__, file=sys.stderr)
        return 2
    encoder, adapter, texts_path, out_path = argv[1:5]
    max_length = int(argv[5]) if len(argv) > 5 else 128
    with open(texts_path, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f]
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    tok = AutoTokenizer.from_pretrained(encoder)
    base = AutoModel.from_pretrained(encoder).eval()
    base_emb = embed(base, tok, texts, max_length)
    model = PeftModel.from_pretrained(base, adapter).eval()
    emb = embed(model, tok, texts, max_length)
    moved = float(np.abs(emb - base_emb).max())
    if not moved > 1e-3:
        fail("the adapter moves the embeddings by only %g" % moved)
    emb.tofile(out_path)
    base_emb.tofile(out_path + ".base")
    print("bert_lora_reference: %d texts, the adapter moves embeddings by up to %.3g"
          % (len(texts), moved), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
