"""Accuracy of a digits model through onnxruntime, with a 95% Wilson confidence interval.

    python models/evaluate.py MODEL.onnx [--data EVAL.npz]

Without --data the eval file is derived from the model file name: the part of the file stem
before the first '.' plus "_eval.npz", looked up beside the model, then beside this script
(models/mlp.slim.onnx -> models/mlp_eval.npz).

Importable (by file path; needs only numpy and onnxruntime):

    accuracy(model_path_or_bytes, data_path) -> (acc, lo, hi, n)

Runs on the CPU provider with onnxruntime's default graph optimizations. The data file holds
one array per model input (keyed by input name) plus "label" (int64 class ids); prediction is
the argmax of the model's first output over its last axis.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes out of n trials."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def eval_path_for(model_path: str | os.PathLike) -> Path:
    """models/mlp.slim.onnx -> models/mlp_eval.npz (beside the model, else beside this script)."""
    model_path = Path(model_path)
    stem = model_path.name.split(".")[0]
    candidates = [
        model_path.parent / f"{stem}_eval.npz",
        Path(__file__).resolve().parent / f"{stem}_eval.npz",
    ]
    for c in candidates:
        if c.is_file():
            return c
    return candidates[0]


def _batch_size(dim) -> int | None:
    """Fixed batch size declared by an input's first dim, or None when dynamic."""
    return dim if isinstance(dim, int) and dim > 0 else None


def predict(
    model_path_or_bytes, inputs: dict[str, np.ndarray], chunk: int = 256
) -> np.ndarray:
    import onnxruntime as ort

    src = model_path_or_bytes
    if isinstance(src, os.PathLike):
        src = os.fspath(src)
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    feeds_meta = sess.get_inputs()
    missing = [i.name for i in feeds_meta if i.name not in inputs]
    if missing:
        raise KeyError(f"data file lacks input(s) {missing}; it has {sorted(inputs)}")
    n = len(next(iter(inputs.values())))
    fixed = _batch_size(feeds_meta[0].shape[0]) if feeds_meta[0].shape else None
    step = fixed or chunk
    out_name = sess.get_outputs()[0].name
    preds = []
    for i in range(0, n, step):
        feed = {m.name: inputs[m.name][i : i + step] for m in feeds_meta}
        logits = sess.run([out_name], feed)[0]
        preds.append(
            np.asarray(logits)
            .reshape(len(feed[feeds_meta[0].name]), -1)
            .argmax(axis=-1)
        )
    return np.concatenate(preds)


def accuracy(model_path_or_bytes, data_path) -> tuple[float, float, float, int]:
    """(accuracy, wilson_lo, wilson_hi, n) of the model on the data file's labelled samples."""
    with np.load(data_path) as d:
        labels = d["label"].astype(np.int64)
        inputs = {k: d[k] for k in d.files if k != "label"}
    preds = predict(model_path_or_bytes, inputs)
    n = len(labels)
    k = int((preds == labels).sum())
    lo, hi = wilson(k, n)
    return k / n, lo, hi, n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Accuracy of a digits ONNX model (onnxruntime, CPU)."
    )
    ap.add_argument("model", help="model .onnx file")
    ap.add_argument(
        "--data", help="eval .npz (default: <stem before first '.'>_eval.npz)"
    )
    args = ap.parse_args(argv)
    if not os.path.isfile(args.model):
        print(f"error: model file not found: {args.model}", file=sys.stderr)
        return 2
    data = Path(args.data) if args.data else eval_path_for(args.model)
    if not data.is_file():
        print(f"error: eval data not found: {data} (pass --data)", file=sys.stderr)
        return 2
    try:
        acc, lo, hi, n = accuracy(args.model, data)
    except Exception as e:  # noqa: BLE001  CLI boundary: one line, no traceback
        print(f"error: {type(e).__name__}: {e}".splitlines()[0], file=sys.stderr)
        return 2
    k = round(acc * n)
    print(
        f"{args.model}: accuracy {acc:.2%} ({k}/{n}), 95% CI [{lo:.2%}, {hi:.2%}] (Wilson) on {data}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
