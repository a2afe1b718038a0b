"""Wall time of every lossy pass against onnxruntime's ``quantize_static``, same model and data, one run.

The issue's target: no lossy pass takes more than 3x ``quantize_static`` on the same model and
calibration data. Each command runs in its own child process (imports included, as a user sees
it), one after the other, with ``--no-verify`` for ours (the final check is timed by the parity
benchmarks, not here); ``quantize_static`` is ORT's QDQ default (S8S8, per-tensor, MinMax) fed
the same samples 8 at a time.

Models: ``ppocr_cls`` (53 Convs, most of them depthwise, Constant-node weights, BN unfolded)
with 64 samples of 3x48x192, and ``ppocr_rec`` (PP-OCRv4 recognizer, 2.7 M parameters) with 32
samples of 3x48x320. Samples are seeded uniform noise in [-1, 1] (PP-OCR's input range): wall
time depends on shapes and counts, not on what the pixels show. ``-1`` batch dims are written as
a named dim in the benchmark's copy of the model (the same meaning: dynamic).

    python benchmarks/lossy_wall.py [--models ppocr_cls,ppocr_rec] [--passes quantize,...]

Prints a markdown table (seconds, ratio to quantize_static, output bytes / input bytes) and
writes it to ``benchmarks/out/lossy_wall.md``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, models_module  # noqa: E402

SETUPS = {  # model -> (samples, sample shape, passes)
    "ppocr_cls": (64, (3, 48, 192), ["quantize", "prune-weights{criterion=reconstruct}",
                                      "prune-weights{criterion=activation}", "prune-channels{ratio=0.2}",
                                      "prune-channels{ratio=0.2,recover=true}", "svd"]),
    "ppocr_rec": (32, (3, 48, 320), ["quantize", "prune-weights{criterion=reconstruct}",
                                      "prune-channels{ratio=0.2,recover=true}", "svd"]),
}

ORT_SCRIPT = """
import sys, numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
class Reader(CalibrationDataReader):
    def __init__(self):
        x = np.load(sys.argv[3])["x"]
        self.it = iter([{"x": x[i:i + 8]} for i in range(0, len(x), 8)])
    def get_next(self):
        return next(self.it, None)
quantize_static(sys.argv[1], sys.argv[2], Reader(), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
"""


def prepare(name: str, work: Path) -> tuple[Path, Path]:
    """The model with -1 dims named, and its calibration samples."""
    samples, shape, _ = SETUPS[name]
    model = onnx.load(models_module("fetch").fetch(name))
    for value in [*model.graph.input, *model.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value < 0:
                dim.dim_param = "N"
    path = work / f"{name}.onnx"
    onnx.save(model, path)
    data = work / f"{name}_calib{samples}.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.uniform(-1, 1, (samples, *shape)).astype(np.float32))
    return path, data


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    tail = (proc.stderr.strip().splitlines() or [""])[-1][:90]
    return seconds, "" if proc.returncode == 0 else f"exit {proc.returncode}: {tail}"


def bench(name: str, passes: list[str], work: Path) -> list[dict]:
    model, data = prepare(name, work)
    size = os.path.getsize(model)
    rows = []
    ort_out = work / f"{name}.ort.onnx"
    ort_s, err = timed([sys.executable, "-c", ORT_SCRIPT, str(model), str(ort_out), str(data)])
    rows.append({"model": name, "command": "ORT quantize_static (QDQ S8S8 minmax)", "seconds": ort_s,
                 "bytes": os.path.getsize(ort_out) / size if not err else None, "error": err})
    for i, spec in enumerate(passes):
        out = work / f"{name}.{i}.onnx"
        seconds, err = timed([sys.executable, "-m", "onnxslim", "-q", "optimize", str(model), "-o", str(out),
                              "--passes", spec, "--calibration-data", str(data), "--data", str(data),
                              "--no-verify"])
        rows.append({"model": name, "command": f"onnxslim --passes \"{spec}\"", "seconds": seconds,
                     "bytes": os.path.getsize(out) / size if not err else None, "error": err})
    for row in rows:
        row["ratio"] = row["seconds"] / ort_s
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | command | wall s | × quantize_static | output bytes / input |", "|---|---|---|---|---|"]
    for r in rows:
        size = f"{r['bytes']:.3f}" if r["bytes"] is not None else r["error"]
        lines.append(f"| {r['model']} | `{r['command']}` | {r['seconds']:.1f} | {r['ratio']:.2f} | {size} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SETUPS))
    parser.add_argument("--passes", default=None, help="';'-separated pipelines (default: each model's list)")
    args = parser.parse_args()
    work = OUT / "lossy_wall"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models.split(","):
        passes = args.passes.split(";") if args.passes else SETUPS[name][2]
        rows += bench(name, passes, work)
        print(table(rows), flush=True)
    text = table(rows)
    (OUT / "lossy_wall.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
