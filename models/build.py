"""Train and export the three small models onnxslim ships, with their data files.

    python models/build.py            # regenerates every file listed below

Writes, next to this script:
    mlp.onnx, cnn.onnx, transformer.onnx          (opset 17, IR 8, dynamic batch "N")
    <name>_calib.npz   512 samples of the training split, keys "input", "label"
    <name>_eval.npz    the fixed 360-sample test split, keys "input", "label"

Data: scikit-learn's bundled digits (1797 8x8 images, values 0..16, no download),
split once with ``train_test_split(X, y, test_size=360, stratify=y, random_state=0)``
(1437 train / 360 test). The test split is never used for training or model selection.

PyTorch (``pip install torch==2.13.0``, CPU) is used only here, for training. The ONNX
graphs are written by hand with onnx.helper from the trained weights (so BatchNormalization
stays a separate node and the op set is exactly the one documented), then checked with
``onnx.checker.check_model(full_check=True)`` and compared against the torch model through
onnxruntime (max abs error < 1e-4 on the eval and calibration inputs).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent
OPSET = 17
# the IR version that goes with opset 17; read by every onnxruntime since 1.11
IR_VERSION = 8
SPLIT_SEED = 0
TEST_SIZE = 360
CALIB_SIZE = 512
CALIB_SEED = 0
TORCH_SEED = 0
PARITY_ATOL = 1e-4

# --------------------------------------------------------------------------------------
# data


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] matrix of 1-D bilinear interpolation weights, half-pixel centres
    (the convention of torch's F.interpolate(mode="bilinear", align_corners=False) and of
    ONNX Resize with coordinate_transformation_mode="half_pixel")."""
    m = np.zeros((n_out, n_in), dtype=np.float64)
    scale = n_in / n_out
    for i in range(n_out):
        src = max((i + 0.5) * scale - 0.5, 0.0)
        i0 = min(math.floor(src), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        w1 = src - i0
        m[i, i0] += 1.0 - w1
        m[i, i1] += w1
    return m


def upsample28(x8: np.ndarray) -> np.ndarray:
    """[N,8,8] in [0,1] -> [N,28,28] float32, bilinear."""
    m = bilinear_matrix(8, 28)
    return np.einsum("ij,njk,lk->nil", m, x8.astype(np.float64), m).astype(np.float32)


def load_split():
    digits = load_digits()
    x8 = (digits.images / 16.0).astype(np.float32)  # [1797,8,8] in [0,1]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x8, y, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED
    )
    return x_tr, x_te, y_tr, y_te


def model_input(name: str, x8: np.ndarray) -> np.ndarray:
    if name == "mlp":
        return upsample28(x8).reshape(len(x8), 784)
    if name == "cnn":
        return upsample28(x8)[:, None, :, :]
    if name == "transformer":
        return np.ascontiguousarray(x8, dtype=np.float32)  # 8 row tokens x 8 features
    raise ValueError(name)


# --------------------------------------------------------------------------------------
# torch models


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 256)
        self.fc2 = nn.Linear(256, 128)
        self.fc3 = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class ConvBN(nn.Module):
    def __init__(self, cin, cout, k, stride=1, groups=1, relu=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = relu

    def forward(self, x):
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


class CNN(nn.Module):
    """28x28 -> stem(32) -> down(32, /2) -> residual block(32) -> [pointwise(32) | depthwise(32)]
    concat (64) -> down(64, /2) -> global average pool -> Gemm(10)."""

    def __init__(self):
        super().__init__()
        self.stem = ConvBN(1, 32, 3)
        self.down1 = ConvBN(32, 32, 3, stride=2)
        self.res_a = ConvBN(32, 32, 3)
        self.res_b = ConvBN(32, 32, 3, relu=False)
        self.pw = ConvBN(32, 32, 1)
        self.dw = ConvBN(32, 32, 3, groups=32)
        self.down2 = ConvBN(64, 64, 3, stride=2)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.down1(self.stem(x))
        x = F.relu(x + self.res_b(self.res_a(x)))
        x = torch.cat([self.pw(x), self.dw(x)], dim=1)
        x = self.down2(x)
        return self.fc(x.mean(dim=(2, 3)))


D_MODEL, N_HEADS, D_FF, N_LAYERS, N_TOKENS = 64, 4, 128, 2, 8


class EncoderLayer(nn.Module):
    """Pre-LN encoder layer: x + Attn(LN(x)); x + FF(LN(x)), FF = Linear-GELU(erf)-Linear."""

    def __init__(self, dropout=0.1):
        super().__init__()
        self.ln1 = nn.LayerNorm(D_MODEL)
        self.q = nn.Linear(D_MODEL, D_MODEL)
        self.k = nn.Linear(D_MODEL, D_MODEL)
        self.v = nn.Linear(D_MODEL, D_MODEL)
        self.o = nn.Linear(D_MODEL, D_MODEL)
        self.ln2 = nn.LayerNorm(D_MODEL)
        self.ff1 = nn.Linear(D_MODEL, D_FF)
        self.ff2 = nn.Linear(D_FF, D_MODEL)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        n, t, d = x.shape
        dh = d // N_HEADS
        h = self.ln1(x)
        q = self.q(h).reshape(n, t, N_HEADS, dh).permute(0, 2, 1, 3)
        k = self.k(h).reshape(n, t, N_HEADS, dh).permute(0, 2, 3, 1)
        v = self.v(h).reshape(n, t, N_HEADS, dh).permute(0, 2, 1, 3)
        a = torch.softmax((q @ k) * (1.0 / math.sqrt(dh)), dim=-1)
        a = self.drop(a)
        h = (a @ v).permute(0, 2, 1, 3).reshape(n, t, d)
        x = x + self.drop(self.o(h))
        h = self.ff2(self.drop(F.gelu(self.ff1(self.ln2(x)))))
        return x + self.drop(h)


class Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, D_MODEL)
        self.pos = nn.Parameter(torch.zeros(N_TOKENS, D_MODEL))
        nn.init.normal_(self.pos, std=0.02)
        self.layers = nn.ModuleList(EncoderLayer() for _ in range(N_LAYERS))
        self.ln_f = nn.LayerNorm(D_MODEL)
        self.head = nn.Linear(D_MODEL, 10)

    def forward(self, x):
        x = self.embed(x) + self.pos
        for layer in self.layers:
            x = layer(x)
        return self.head(self.ln_f(x).mean(dim=1))


# --------------------------------------------------------------------------------------
# training


def shift_augment(
    x8: torch.Tensor, gen: torch.Generator, max_shift: int = 1
) -> torch.Tensor:
    """Random translation of the 8x8 digits by up to max_shift pixels, zero fill."""
    n = x8.shape[0]
    padded = F.pad(x8, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = dy[:, None] + torch.arange(8)[None, :]  # [n,8]
    cols = dx[:, None] + torch.arange(8)[None, :]
    idx_n = torch.arange(n)[:, None, None]
    return padded[idx_n, rows[:, :, None], cols[:, None, :]]


UP = torch.from_numpy(bilinear_matrix(8, 28).astype(np.float32))


def to_input(name: str, x8: torch.Tensor) -> torch.Tensor:
    if name == "transformer":
        return x8
    x28 = UP @ x8 @ UP.T
    return x28.reshape(-1, 784) if name == "mlp" else x28[:, None]


RECIPES = {
    # epochs, batch, lr, weight decay, label smoothing, augmentation shift
    "mlp": {
        "epochs": 100,
        "batch": 32,
        "lr": 1e-3,
        "wd": 1e-4,
        "smoothing": 0.1,
        "shift": 1,
    },
    "cnn": {
        "epochs": 30,
        "batch": 32,
        "lr": 3e-3,
        "wd": 5e-4,
        "smoothing": 0.0,
        "shift": 1,
    },
    "transformer": {
        "epochs": 150,
        "batch": 32,
        "lr": 1e-3,
        "wd": 0.05,
        "smoothing": 0.1,
        "shift": 1,
    },
}


def train(name: str, model: nn.Module, x8: np.ndarray, y: np.ndarray) -> nn.Module:
    r = RECIPES[name]
    torch.manual_seed(TORCH_SEED)
    gen = torch.Generator().manual_seed(TORCH_SEED)
    xt, yt = torch.from_numpy(x8), torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), lr=r["lr"], weight_decay=r["wd"])
    steps_per_epoch = math.ceil(len(xt) / r["batch"])
    total = r["epochs"] * steps_per_epoch
    warmup = steps_per_epoch * 2
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warmup)
            * 0.5
            * (1 + math.cos(math.pi * min(s, total) / total))
        ),
    )
    t0 = time.time()
    for epoch in range(r["epochs"]):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        tot_loss = 0.0
        for i in range(0, len(xt), r["batch"]):
            idx = perm[i : i + r["batch"]]
            xb = xt[idx]
            if r["shift"]:
                xb = shift_augment(xb, gen, r["shift"])
            loss = F.cross_entropy(
                model(to_input(name, xb)), yt[idx], label_smoothing=r["smoothing"]
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += loss.item() * len(idx)
        if (epoch + 1) % max(1, r["epochs"] // 5) == 0:
            print(
                f"  {name} epoch {epoch + 1}/{r['epochs']} loss {tot_loss / len(xt):.4f}"
                f" ({time.time() - t0:.0f}s)",
                flush=True,
            )
    model.eval()
    return model


# --------------------------------------------------------------------------------------
# ONNX export by hand


class GraphBuilder:
    def __init__(self):
        self.nodes, self.inits = [], []
        self._names = set()

    def init(self, name: str, arr) -> str:
        if isinstance(arr, torch.Tensor):
            arr = arr.detach().cpu().numpy()
        arr = np.asarray(arr)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        assert name not in self._names, name
        self._names.add(name)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(self, op: str, inputs, name: str, out: str | None = None, **attrs) -> str:
        out = out or f"{name}_output_0"
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=name, **attrs))
        return out

    def model(self, graph_name: str, in_shape, out_shape, doc: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            graph_name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_shape)],
            initializer=self.inits,
        )
        m = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="onnxslim-models-build",
            producer_version="1",
            doc_string=doc,
        )
        m.ir_version = IR_VERSION
        return m


def gemm(
    g: GraphBuilder, x: str, lin: nn.Linear, prefix: str, out: str | None = None
) -> str:
    w = g.init(f"{prefix}.weight", lin.weight)  # [out, in], transB=1 as torch stores it
    b = g.init(f"{prefix}.bias", lin.bias)
    return g.node(
        "Gemm", [x, w, b], f"/{prefix}/Gemm", out, alpha=1.0, beta=1.0, transB=1
    )


def export_mlp(m: MLP) -> onnx.ModelProto:
    g = GraphBuilder()
    x = gemm(g, "input", m.fc1, "fc1")
    x = g.node("Relu", [x], "/relu1/Relu")
    x = gemm(g, x, m.fc2, "fc2")
    x = g.node("Relu", [x], "/relu2/Relu")
    gemm(g, x, m.fc3, "fc3", out="logits")
    return g.model(
        "mlp", ["N", 784], ["N", 10], "digits MLP 784-256-128-10, see models/README.md"
    )


def conv_bn(g: GraphBuilder, x: str, cb: ConvBN, prefix: str) -> str:
    c = cb.conv
    w = g.init(f"{prefix}.conv.weight", c.weight)
    k = c.kernel_size
    x = g.node(
        "Conv",
        [x, w],
        f"/{prefix}/conv/Conv",
        kernel_shape=list(k),
        strides=list(c.stride),
        pads=[c.padding[0], c.padding[1], c.padding[0], c.padding[1]],
        dilations=list(c.dilation),
        group=c.groups,
    )
    bn = cb.bn
    x = g.node(
        "BatchNormalization",
        [
            x,
            g.init(f"{prefix}.bn.weight", bn.weight),
            g.init(f"{prefix}.bn.bias", bn.bias),
            g.init(f"{prefix}.bn.running_mean", bn.running_mean),
            g.init(f"{prefix}.bn.running_var", bn.running_var),
        ],
        f"/{prefix}/bn/BatchNormalization",
        epsilon=float(bn.eps),
        momentum=1.0 - float(bn.momentum),
    )
    if cb.relu:
        x = g.node("Relu", [x], f"/{prefix}/relu/Relu")
    return x


def export_cnn(m: CNN) -> onnx.ModelProto:
    g = GraphBuilder()
    x = conv_bn(g, "input", m.stem, "stem")
    x = conv_bn(g, x, m.down1, "down1")
    h = conv_bn(g, x, m.res_a, "res_a")
    h = conv_bn(g, h, m.res_b, "res_b")
    x = g.node("Add", [x, h], "/res/Add")
    x = g.node("Relu", [x], "/res/Relu")
    p = conv_bn(g, x, m.pw, "pw")
    d = conv_bn(g, x, m.dw, "dw")
    x = g.node("Concat", [p, d], "/cat/Concat", axis=1)
    x = conv_bn(g, x, m.down2, "down2")
    x = g.node("GlobalAveragePool", [x], "/pool/GlobalAveragePool")
    x = g.node("Flatten", [x], "/flatten/Flatten", axis=1)
    gemm(g, x, m.fc, "fc", out="logits")
    return g.model(
        "cnn", ["N", 1, 28, 28], ["N", 10], "digits CNN, see models/README.md"
    )


def linear_matmul(g: GraphBuilder, x: str, lin: nn.Linear, prefix: str) -> str:
    """3-D activation x 2-D constant weight ([in, out]) MatMul, then bias Add."""
    w = g.init(f"{prefix}.weight", lin.weight.detach().T)
    x = g.node("MatMul", [x, w], f"/{prefix}/MatMul")
    return g.node("Add", [x, g.init(f"{prefix}.bias", lin.bias)], f"/{prefix}/Add")


def layer_norm(g: GraphBuilder, x: str, ln: nn.LayerNorm, prefix: str) -> str:
    return g.node(
        "LayerNormalization",
        [x, g.init(f"{prefix}.weight", ln.weight), g.init(f"{prefix}.bias", ln.bias)],
        f"/{prefix}/LayerNormalization",
        axis=-1,
        epsilon=float(ln.eps),
    )


def export_transformer(m: Transformer) -> onnx.ModelProto:
    g = GraphBuilder()
    dh = D_MODEL // N_HEADS
    split_shape = g.init(
        "shape_split_heads", np.array([0, 0, N_HEADS, dh], dtype=np.int64)
    )
    merge_shape = g.init("shape_merge_heads", np.array([0, 0, D_MODEL], dtype=np.int64))
    scale = g.init("attn_scale", np.array(1.0 / math.sqrt(dh), dtype=np.float32))
    sqrt2 = g.init("gelu_sqrt2", np.array(math.sqrt(2.0), dtype=np.float32))
    one = g.init("gelu_one", np.array(1.0, dtype=np.float32))
    half = g.init("gelu_half", np.array(0.5, dtype=np.float32))

    x = linear_matmul(g, "input", m.embed, "embed")
    x = g.node("Add", [x, g.init("pos", m.pos)], "/pos/Add")
    for i, layer in enumerate(m.layers):
        p = f"layers.{i}"
        h = layer_norm(g, x, layer.ln1, f"{p}.ln1")
        heads = {}
        for nm, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
            t = linear_matmul(g, h, getattr(layer, nm), f"{p}.attn.{nm}")
            t = g.node("Reshape", [t, split_shape], f"/{p}/attn/{nm}/Reshape")
            heads[nm] = g.node("Transpose", [t], f"/{p}/attn/{nm}/Transpose", perm=perm)
        s = g.node("MatMul", [heads["q"], heads["k"]], f"/{p}/attn/qk/MatMul")
        s = g.node("Mul", [s, scale], f"/{p}/attn/scale/Mul")
        a = g.node("Softmax", [s], f"/{p}/attn/Softmax", axis=-1)
        h = g.node("MatMul", [a, heads["v"]], f"/{p}/attn/av/MatMul")
        h = g.node("Transpose", [h], f"/{p}/attn/merge/Transpose", perm=[0, 2, 1, 3])
        h = g.node("Reshape", [h, merge_shape], f"/{p}/attn/merge/Reshape")
        h = linear_matmul(g, h, layer.o, f"{p}.attn.o")
        x = g.node("Add", [x, h], f"/{p}/residual1/Add")
        h = layer_norm(g, x, layer.ln2, f"{p}.ln2")
        h = linear_matmul(g, h, layer.ff1, f"{p}.ff1")
        # GELU, exact (erf) form as opset 17 spells it: x * 0.5 * (1 + erf(x / sqrt(2)))
        e = g.node("Div", [h, sqrt2], f"/{p}/gelu/Div")
        e = g.node("Erf", [e], f"/{p}/gelu/Erf")
        e = g.node("Add", [e, one], f"/{p}/gelu/Add")
        e = g.node("Mul", [h, e], f"/{p}/gelu/Mul")
        h = g.node("Mul", [e, half], f"/{p}/gelu/Mul_1")
        h = linear_matmul(g, h, layer.ff2, f"{p}.ff2")
        x = g.node("Add", [x, h], f"/{p}/residual2/Add")
    x = layer_norm(g, x, m.ln_f, "ln_f")
    x = g.node("ReduceMean", [x], "/pool/ReduceMean", axes=[1], keepdims=0)
    gemm(g, x, m.head, "head", out="logits")
    return g.model(
        "transformer",
        ["N", 8, 8],
        ["N", 10],
        "digits transformer, see models/README.md",
    )


# --------------------------------------------------------------------------------------


def ort_logits(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return sess.run(["logits"], {"input": x})[0]


def check_upsampling(x8: np.ndarray) -> None:
    ref = F.interpolate(
        torch.from_numpy(x8[:, None]),
        size=(28, 28),
        mode="bilinear",
        align_corners=False,
    ).numpy()[:, 0]
    err = np.abs(upsample28(x8) - ref).max()
    assert err < 1e-6, f"numpy bilinear upsampling differs from torch's: {err}"


def main() -> int:
    torch.set_num_threads(1)  # deterministic reductions, and light on a shared machine
    torch.use_deterministic_algorithms(True)
    x_tr, x_te, y_tr, y_te = load_split()
    check_upsampling(x_te)
    calib_idx = np.sort(
        np.random.default_rng(CALIB_SEED).permutation(len(x_tr))[:CALIB_SIZE]
    )

    builders = {
        "mlp": (MLP, export_mlp),
        "cnn": (CNN, export_cnn),
        "transformer": (Transformer, export_transformer),
    }
    only = sys.argv[1:] or list(builders)
    summary = []
    for name in only:
        cls, export = builders[name]
        print(f"[{name}] training", flush=True)
        t0 = time.time()
        torch.manual_seed(TORCH_SEED)
        model = train(name, cls(), x_tr, y_tr)
        train_s = time.time() - t0

        x_eval, x_calib = model_input(name, x_te), model_input(name, x_tr[calib_idx])
        onnx_model = export(model)
        onnx.checker.check_model(onnx_model, full_check=True)
        err = 0.0
        with torch.no_grad():
            for x in (x_eval, x_calib):
                ref = model(torch.from_numpy(x)).numpy()
                err = max(err, float(np.abs(ort_logits(onnx_model, x) - ref).max()))
        assert err < PARITY_ATOL, f"{name}: ORT vs torch max abs err {err}"
        path = HERE / f"{name}.onnx"
        onnx.save_model(onnx_model, path)
        np.savez_compressed(
            HERE / f"{name}_eval.npz", input=x_eval, label=y_te.astype(np.int64)
        )
        np.savez_compressed(
            HERE / f"{name}_calib.npz",
            input=x_calib,
            label=y_tr[calib_idx].astype(np.int64),
        )

        sys.path.insert(0, str(HERE))
        from evaluate import accuracy  # onnxruntime only, no torch

        acc, lo, hi, n = accuracy(path, HERE / f"{name}_eval.npz")
        params = sum(int(np.prod(t.dims)) for t in onnx_model.graph.initializer)
        summary.append(
            (name, acc, lo, hi, n, params, os.path.getsize(path), train_s, err)
        )
        print(
            f"[{name}] accuracy {acc:.2%} [{lo:.2%}, {hi:.2%}] n={n}, "
            f"{params} params, {os.path.getsize(path)} bytes, trained in {train_s:.0f}s, "
            f"parity max abs err {err:.2e}",
            flush=True,
        )

    print("\nmodel        accuracy  95% CI (Wilson)     params  bytes")
    for name, acc, lo, hi, n, params, size, _, _ in summary:
        print(f"{name:12s} {acc:7.2%}  [{lo:.2%}, {hi:.2%}]  {params:8d}  {size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
