"""tests/python/peft_serve_score.py - PEFT 0.13.2 scores an adapter folder
that ltdi-serve wrote, for tests/unit/test_server_lora.c.

  peft_serve_score.py ENCODER ADAPTER_DIR TASK_JSON [EMB_OUT]

TASK_JSON: {"support": [texts], "labels": [ints], "queries": [texts],
"query_labels": [ints], "max_length": n}. The adapter is loaded as a user
would, PeftModel.from_pretrained(AutoModel.from_pretrained(ENCODER), DIR);
sentence embeddings are sentence-transformers' (mean over the attention
mask, then L2-normalised); the head is ltdi's recipe (lora_train.h): class
means m_c of the FROZEN encoder's support embeddings, L2-normalised, and a
query is predicted as the class of the largest cos(e_adapted(q), m_c), the
first on ties. Prints "RIGHT TOTAL" on stdout; EMB_OUT, when given, gets
the adapted query embeddings (nq, C) as raw float32. Independent of ltdi's code:
only the files and the documented recipe.
"""
import json
import sys
import warnings

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModel, BertConfig, BertModel, BertTokenizer


def load_base(enc_dir):
    """The folder's model as a user loads it, AutoModel.from_pretrained; a
    model.safetensors without the "format" metadata from_pretrained insists
    on (ltdi's random test fixture) is loaded by hand instead, every
    embeddings/encoder tensor required (the pooler is not used by sentence
    embeddings)."""
    try:
        return AutoModel.from_pretrained(enc_dir).eval()
    except AttributeError:
        pass
    model = BertModel(BertConfig.from_pretrained(enc_dir), add_pooling_layer=False)
    state = load_file(enc_dir + "/model.safetensors")
    state = {k[5:] if k.startswith("bert.") else k: v for k, v in state.items()}
    own = model.state_dict()
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in keep and not k.endswith("position_ids")]
    if missing:
        print("peft_serve_score: missing tensors: %s" % missing[:5], file=sys.stderr)
        sys.exit(1)
    model.load_state_dict(keep, strict=False)
    return model.eval()


def embed(model, tok, texts, max_length):
    out = []
    with torch.no_grad():
        for t in texts:  # one at a time: no padding to think about
            enc = tok(t, truncation=True, max_length=max_length, return_tensors="pt")
            h = model(**enc).last_hidden_state  # (1, T, C)
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1)
            out.append(torch.nn.functional.normalize(e, dim=-1)[0])
    return torch.stack(out)


def main():
    enc_dir, adapter_dir, task_path = sys.argv[1:4]
    task = json.load(open(task_path))
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    base = load_base(enc_dir)
    tok = BertTokenizer(enc_dir + "/vocab.txt", do_lower_case=True)
    ml = int(task["max_length"])
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    with model.disable_adapter():
        sup = embed(model, tok, task["support"], ml).double()
    labels = torch.tensor(task["labels"])
    ways = int(labels.max()) + 1
    means = torch.stack([sup[labels == c].sum(0) for c in range(ways)])
    means = means / means.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    q = embed(model, tok, task["queries"], ml).double()
    pred = (q @ means.T).argmax(dim=1)
    right = int((pred == torch.tensor(task["query_labels"])).sum())
    if len(sys.argv) > 4:  # the adapted query embeddings, raw little-endian float32
        q.float().numpy().astype("<f4").tofile(sys.argv[4])
    print(right, len(task["queries"]))


if __name__ == "__main__":
    main()
