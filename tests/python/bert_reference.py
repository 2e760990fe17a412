#!/usr/bin/env python3
"""Independent reference for ltdi's BERT sentence encoder (core/text/bert.h).

  bert_reference.py ENCODER_DIR OUT.safetensors [WORDNET_DATA_NOUN]

Computes, with Hugging Face transformers' AutoModel and AutoTokenizer on the
encoder folder, sentence-transformers' recipe for all-MiniLM-L6-v2: the mean
of last_hidden_state over attention_mask, then F.normalize (L2), for 64
sentences of varied lengths -- WordNet noun glosses (every 1200th synset of
data.noun), a few short and odd ones, and three long ones that truncate at
128 tokens. Runs in float32 in eval mode (no dropout), all sentences in one
padded batch.

OUT.safetensors receives
  ids         (N, 128) I32  token ids, [CLS] ... [SEP], padding 0 after
  lengths     (N,)     I32  valid tokens per sentence
  embeddings  (N, C)   F32  the normalised mean-pooled embeddings
  hidden.<l>  (T0, C)  F32  for sentence 0 run alone: hidden state l
                            (0 = embeddings' LayerNorm, l = layer l's output)
and metadata "sentences": the N sentences as a JSON array, and "max_length".
Run with the reference venv: .venv-ref/bin/python. Exit 0 on success.
"""
import json
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import AutoModel, AutoTokenizer

MAX_LENGTH = 128


def wordnet_glosses(path, every=1200, limit=56):
    """Glosses of every `every`-th noun synset: the text after ' | '."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        n = 0
        for line in f:
            if line.startswith("  ") or " | " not in line:
                continue  # the licence header
            if n % every == 0:
                out.append(line.split(" | ", 1)[1].strip())
                if len(out) == limit:
                    break
            n += 1
    return out


def sentences(data_noun):
    glosses = wordnet_glosses(data_noun)
    extra = [
        "dog",
        "A",
        "Hello, world!",
        "Café naïve résumé — ÜBER façade",
        "3.14159 is roughly pi; 2+2=4.",
    ]
    # Long ones: far past 128 wordpieces, so the tokenizer truncates them.
    long = [" ".join(glosses[i : i + 12]) for i in (0, 13, 26)]
    # A medium gloss first (about 16 words): the per-layer check runs on sentence 0.
    first = min(glosses[:20], key=lambda s: abs(len(s.split()) - 16))
    rest = [g for g in glosses if g != first]
    return [first] + rest + extra + long


def main():
    if len(sys.argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    encoder, out_path = sys.argv[1], sys.argv[2]
    data_noun = sys.argv[3] if len(sys.argv) == 4 else "/usr/share/wordnet/data.noun"
    torch.set_num_threads(2)
    texts = sentences(data_noun)
    tok = AutoTokenizer.from_pretrained(encoder)
    model = AutoModel.from_pretrained(encoder).eval().float()

    enc = tok(texts, padding="max_length", truncation=True, max_length=MAX_LENGTH,
              return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        last = model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(last.dtype)
        pooled = (last * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
        emb = F.normalize(pooled, p=2, dim=1)
        n0 = int(mask[0].sum())
        one = model(input_ids=ids[:1, :n0], attention_mask=mask[:1, :n0],
                    output_hidden_states=True)
    tensors = {
        "ids": ids.to(torch.int32).contiguous(),
        "lengths": mask.sum(1).to(torch.int32).contiguous(),
        "embeddings": emb.contiguous(),
    }
    for l, h in enumerate(one.hidden_states):
        tensors[f"hidden.{l}"] = h[0].contiguous()
    save_file(tensors, out_path,
              metadata={"sentences": json.dumps(texts), "max_length": str(MAX_LENGTH)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
