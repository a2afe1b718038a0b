"""Generated large models for the engine's speed and memory figures (issue 13).

``dense_stack`` writes a chain of ``layers`` blocks, each ``Gemm(W, b) -> Mul(s) -> Add(t) ->
Relu`` on a ``[batch, width]`` input, so the default pipeline has real work on it: fold-affine
folds every Mul/Add into its Gemm. ``external=True`` writes the weights to ``NAME.onnx.data``
one tensor at a time, so a model larger than memory's comfort (or protobuf's 2 GiB) is made
without ever holding it whole. ``fill="constant"`` fills each weight with one value (quick to
make, and the same code paths as random weights), ``fill="random"`` draws them (seeded).

The scale of the weights keeps activations of order 1 through every layer, so parity compares
numbers, not infinities.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_ALIGN = 4096


def dense_stack(path: str | os.PathLike, layers: int, width: int, external: bool = False,
                fill: str = "random", seed: int = 0) -> Path:
    """Write the model to ``path`` (and ``path``.data when ``external``); return ``path``."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    data_name = path.name + ".data"
    initializers: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    data = open(path.with_name(data_name), "wb") if external else None
    try:
        x = "input"
        for i in range(layers):
            for name, array in _layer_tensors(i, width, fill, rng):
                initializers.append(_tensor(name, array, data, data_name))
            nodes += [
                helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"gemm{i}"], name=f"/layer{i}/Gemm", transB=1),
                helper.make_node("Mul", [f"gemm{i}", f"s{i}"], [f"mul{i}"], name=f"/layer{i}/Mul"),
                helper.make_node("Add", [f"mul{i}", f"t{i}"], [f"add{i}"], name=f"/layer{i}/Add"),
                helper.make_node("Relu", [f"add{i}"], [f"relu{i}" if i < layers - 1 else "output"],
                                 name=f"/layer{i}/Relu"),
            ]
            x = f"relu{i}"
    finally:
        if data is not None:
            data.close()
    graph = helper.make_graph(
        nodes, "dense_stack",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", width])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="large_models")
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def _layer_tensors(i: int, width: int, fill: str, rng: np.random.Generator):
    if fill == "constant":  # every output is the input's mean: of order 1 after any depth
        weight = np.full((width, width), (1.0 + 0.01 * i) / width, dtype=np.float32)
    else:
        weight = rng.standard_normal((width, width), dtype=np.float32) * np.float32(1.5 / np.sqrt(width))
    yield f"w{i}", weight
    del weight
    yield f"b{i}", np.full(width, 0.01, dtype=np.float32)
    yield f"s{i}", np.linspace(0.5, 1.5, width, dtype=np.float32)
    yield f"t{i}", np.linspace(-0.1, 0.1, width, dtype=np.float32)


def _tensor(name: str, array: np.ndarray, data, data_name: str) -> TensorProto:
    if data is None or array.nbytes < 1024:
        return numpy_helper.from_array(array, name)
    offset = data.seek(0, os.SEEK_END)
    offset += -offset % _ALIGN
    data.seek(offset)
    data.write(array.tobytes())
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=array.shape)
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(array.nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--width", type=int, default=3162)
    parser.add_argument("--external", action="store_true")
    parser.add_argument("--fill", choices=("random", "constant"), default="random")
    args = parser.parse_args()
    print(dense_stack(args.path, args.layers, args.width, args.external, args.fill))
