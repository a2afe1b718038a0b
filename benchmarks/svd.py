"""Benchmark of svd: parameters, FLOPs, ORT CPU latency and the task metric at several ranks.

    python benchmarks/svd.py [--models mlp,transformer,minilm] [--seconds 3] [--threads 1]

For the shipped ``mlp`` and ``transformer`` (digits accuracy on the 360-sample test split, 95%
Wilson interval) and all-MiniLM-L6-v2 (sentence-embedding cosine against fp32, mean and min,
and retrieval MRR on ``realdata.retrieval_set()``), ``svd{param_ratio=p}`` at several budgets,
plain SVD vs data-aware (equal-error allocation) vs data-aware with ``allocation=sensitivity``,
without and with ``refit=true``, with the latency gate off (size-only, so both variants split the same
layers), plus one data-aware row with the gate on. The "weights" column is the kept share
of the Gemm/MatMul weight parameters the pass considered.

Calibration never overlaps evaluation: digits use the training split (``<name>_calib.npz``);
MiniLM uses ``realdata.sentences()`` plus sentences from Python standard-library docstrings
(generic English, ``--calib-sentences``), never the retrieval texts.

Latency: ORT CPU, all variants of one model interleaved in one process
(``runtime.bench.measure_latency``), batch 32 for the digits models and the 60 retrieval texts
in batches of 20 for MiniLM (time per batch). Writes benchmarks/out/svd.md and svd.png and
prints the table. Never run by tests or CI.
"""

from __future__ import annotations

import os

# numpy's BLAS on a shared 2-core machine: one thread is 5x faster than oversubscribing.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import importlib
import importlib.util
import inspect
import re
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from _common import models_module
from onnxslim.passes.svd import LowRankSplit, SvdOptions

from onnxslim.core.context import PassContext
from onnxslim.ir.io import to_graph
from onnxslim.ir.stats import flops, model_stats
from onnxslim.runtime.bench import measure_latency
from onnxslim.runtime.session import make_session

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
RATIOS = {"mlp": (0.3, 0.15, 0.1), "transformer": (0.7, 0.5, 0.3), "minilm": (0.9, 0.8, 0.7)}
#: Extra rows: the issue's target configurations, gate on.
EXTRA = {"mlp": [("data-aware max_error=0.07 gated", {"max_error": 0.07, "data_aware": True})],
         "transformer": [("data-aware max_error=0.1 gated", {"max_error": 0.1, "data_aware": True})],
         "minilm": [("data-aware max_error=0.03 gated", {"max_error": 0.03, "data_aware": True})]}
DOC_MODULES = ("argparse", "logging", "unittest", "json", "collections", "textwrap", "difflib", "calendar",
               "email.message", "http.client", "urllib.request", "csv", "pathlib", "subprocess", "threading",
               "asyncio", "datetime", "decimal", "statistics", "random", "shutil", "tarfile", "zipfile", "sqlite3")


def docstring_sentences(limit: int) -> list[str]:
    """English sentences from standard-library docstrings: calibration text unrelated to the eval."""
    found: list[str] = []
    for name in DOC_MODULES:
        module = importlib.import_module(name)
        for obj in [module] + [getattr(module, a) for a in sorted(dir(module)) if not a.startswith("_")]:
            if not (inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            for s in re.split(r"(?<=[.!?])\s+", " ".join((inspect.getdoc(obj) or "").split())):
                if 6 <= len(s.split()) <= 30 and sum(c.isalpha() or c == " " for c in s) > 0.9 * len(s):
                    found.append(s)
    return list(dict.fromkeys(found))[:limit]


def digits_case(name: str):
    evaluate = models_module("evaluate")
    model = onnx.load(str(REPO / "models" / f"{name}.onnx"))
    x = np.load(REPO / "models" / f"{name}_calib.npz")["input"]
    calib = [{"input": x[i:i + 128]} for i in range(0, len(x), 128)]
    test = np.load(REPO / "models" / f"{name}_eval.npz")

    def metric(m: onnx.ModelProto) -> dict:
        acc, lo, hi, _ = evaluate.accuracy(m.SerializeToString(), str(REPO / "models" / f"{name}_eval.npz"))
        return {"metric": f"{100 * acc:.2f}% [{100 * lo:.1f}, {100 * hi:.1f}]", "score": acc}

    return model, calib, metric, [{"input": test["input"][:32]}], "accuracy"


def minilm_case(calib_sentences: int):
    fetch, realdata = models_module("fetch"), models_module("realdata")
    model = onnx.load(str(fetch.fetch("minilm")))
    vocab = fetch.minilm_vocab()
    texts = realdata.sentences() + docstring_sentences(calib_sentences)
    calib = [realdata.tokenize(texts[i:i + 32], vocab) for i in range(0, len(texts), 32)]
    queries, passages, relevant = realdata.retrieval_set()
    batches = [realdata.tokenize((queries + passages)[i:i + 20], vocab) for i in range(0, 60, 20)]

    def embed(m: onnx.ModelProto) -> np.ndarray:
        session = make_session(m, optimize=True)
        return np.concatenate([session.run(["sentence_embedding"], b)[0] for b in batches])

    reference = embed(model)

    def metric(m: onnx.ModelProto) -> dict:
        e = embed(m)
        cos = np.sum(e * reference, axis=1) / (np.linalg.norm(e, axis=1) * np.linalg.norm(reference, axis=1))
        sims = e[:20] @ e[20:].T
        ranks = [1 + int(np.sum(sims[i] > sims[i, relevant[i]])) for i in range(20)]
        mrr = float(np.mean(1.0 / np.asarray(ranks)))
        return {"metric": f"cos {cos.mean():.4f} (min {cos.min():.4f}), MRR {mrr:.3f}", "score": float(cos.mean()),
                "mrr": mrr}

    return model, calib, metric, batches[:1], "embedding cosine vs fp32 / MRR"


def run_variant(model, calib, options: dict) -> tuple[onnx.ModelProto, dict, float]:
    graph = to_graph(model)
    ctx = PassContext(model, calib, threads=1)
    start = time.perf_counter()
    result = LowRankSplit(SvdOptions(**options)).run(graph, ctx)
    seconds = time.perf_counter() - start
    graph.toposort()
    return ctx.export(graph), result.stats, seconds


def bench_model(name: str, args) -> list[dict]:
    model, calib, metric, feeds, metric_name = minilm_case(args.calib_sentences) if name == "minilm" else digits_case(name)
    variants = [("original", None, {})]
    for ratio in RATIOS[name]:
        for aware in (False, True):
            variants.append((f"{'data-aware' if aware else 'plain'} p={ratio:g}", ratio,
                             {"param_ratio": ratio, "data_aware": aware, "latency_gate": False}))
        variants.append((f"data-aware sensitivity p={ratio:g}", ratio,
                         {"param_ratio": ratio, "data_aware": True, "latency_gate": False,
                          "allocation": "sensitivity"}))
        variants.append((f"data-aware sensitivity refit p={ratio:g}", ratio,
                         {"param_ratio": ratio, "data_aware": True, "latency_gate": False,
                          "allocation": "sensitivity", "refit": True}))
    middle = RATIOS[name][1]
    variants.append((f"data-aware p={middle:g} gated", middle, {"param_ratio": middle, "data_aware": True}))
    variants += [(label, None, options) for label, options in EXTRA.get(name, [])]
    rows, models = [], []
    for label, ratio, options in variants:
        print(f"[{name}] {label} ...", flush=True)
        if options:
            out, stats, seconds = run_variant(model, calib, options)
        else:
            out, stats, seconds = model, {}, 0.0
        gate = stats.get("latency", [])
        row = {"model": name, "variant": label, "ratio": ratio, "aware": options.get("data_aware", False),
               "alloc": options.get("allocation", "error") + ("+refit" if options.get("refit") else ""),
               "weights": (stats["weight_params_after"] / stats["weight_params_before"]) if stats else 1.0,
               "split": stats.get("split", 0), "params": model_stats(out).params,
               "flops": flops(out, feeds[0])["compute"], "pass_s": seconds,
               "gate": f"{sum(t['kept'] for t in gate)}/{len(gate)} kept" if gate else "",
               "gate_ok": all(t["split_ms"] < t["original_ms"] for t in gate if t["kept"]),
               "metric_name": metric_name, **metric(out)}
        rows.append(row)
        models.append(out)
    print(f"[{name}] latency ...", flush=True)
    stats = measure_latency(models, feeds[0], threads=args.threads, warmup=3, repeat=200, max_seconds=args.seconds)
    for row, s in zip(rows, stats):
        row.update(median_ms=s.median_ms, p90_ms=s.p90_ms, batch=s.batch, runs=s.runs)
    return rows


def table(rows: list[dict], threads: int) -> str:
    lines = [f"ORT CPU, {threads} thread(s); latency median (p90) per batch, variants of a model interleaved.",
             "", "| model | variant | layers split | weights kept | params | FLOPs | latency ms (batch) | metric | gate |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = next(x for x in rows if x["model"] == r["model"] and x["variant"] == "original")
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['split']} | {100 * r['weights']:.1f}% | {r['params']:,} "
            f"({r['params'] / base['params']:.2f}x) | {r['flops'] / 1e6:.1f} M ({r['flops'] / base['flops']:.2f}x) | "
            f"{r['median_ms']:.3f} ({r['p90_ms']:.3f}), {base['median_ms'] / r['median_ms']:.2f}x faster (b{r['batch']}) | "
            f"{r['metric']} | {r['gate']} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        mine = [r for r in rows if r["model"] == name]
        base = mine[0]
        curves = ((False, "error", "o--", "plain SVD"), (True, "error", "s-", "data-aware, equal error"),
                  (True, "sensitivity", "^-", "data-aware, sensitivity allocation"),
                  (True, "sensitivity+refit", "v-", "data-aware, sensitivity allocation, refit"))
        for aware, alloc, style, label in curves:
            pts = sorted((r["weights"], r["score"]) for r in mine if r["ratio"] is not None and r["aware"] == aware
                         and r["alloc"] == alloc and "gated" not in r["variant"])
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
        ax.axhline(base["score"], color="gray", lw=0.8, label="original")
        ax.set_title(name)
        ax.set_xlabel("share of Gemm/MatMul weight params kept")
        ax.set_ylabel("accuracy" if name != "minilm" else "embedding cosine vs fp32")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,transformer,minilm")
    parser.add_argument("--seconds", type=float, default=3.0, help="latency time per model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calib-sentences", type=int, default=200)
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        rows += bench_model(name, args)
    text = table(rows, args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "svd.md").write_text(text + "\n")
    try:
        plot(rows, OUT / "svd.png")
    except ImportError:
        print("matplotlib missing: pip install -e '.[bench]' for the plot", file=sys.stderr)
    print(text)
    bad = [r["variant"] for r in rows if not r["gate_ok"]]
    print("every split kept by the gate measured faster than its layer:", "yes" if not bad else f"NO: {bad}")


if __name__ == "__main__":
    main()
