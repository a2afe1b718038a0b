"""fuse-layernorm and fuse-gelu on a real model: MiniLM with its 13 LayerNormalization nodes
written out as exporters without the op write them (and converted to opset 20, where Gelu exists)
fuses back to 13 LayerNormalization and 6 Gelu, within `exact` of the original on real sentences.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxslim.passes.fuse_gelu import FuseGelu
from onnxslim.passes.fuse_layernorm import FuseLayerNorm
from onnxslim.testing import models_module, run_model, run_pass

fetch = models_module("fetch")
realdata = models_module("realdata")


def _decompose_layernorms(model: onnx.ModelProto) -> int:
    """Replace every LayerNormalization (axis -1) by ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add."""
    nodes, count = [], 0
    for node in model.graph.node:
        if node.op_type != "LayerNormalization":
            nodes.append(node)
            continue
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        x, scale, bias = node.input
        p = f"ln{count}_"
        model.graph.initializer.extend([
            onnx.numpy_helper.from_array(np.array(2.0, np.float32), p + "two"),
            onnx.numpy_helper.from_array(np.array(eps, np.float32), p + "eps"),
        ])
        make = onnx.helper.make_node
        nodes += [
            make("ReduceMean", [x], [p + "mean"], axes=[-1]),
            make("Sub", [x, p + "mean"], [p + "d"]),
            make("Pow", [p + "d", p + "two"], [p + "sq"]),
            make("ReduceMean", [p + "sq"], [p + "var"], axes=[-1]),
            make("Add", [p + "var", p + "eps"], [p + "ve"]),
            make("Sqrt", [p + "ve"], [p + "std"]),
            make("Div", [p + "d", p + "std"], [p + "n"]),
            make("Mul", [p + "n", scale], [p + "scaled"]),
            make("Add", [p + "scaled", bias], [node.output[0]]),
        ]
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count


@pytest.mark.slow
def test_minilm_decomposed_fuses_back_within_exact(fetched):
    original = onnx.load(str(fetched("minilm")))
    spelled = onnx.ModelProto()
    spelled.CopyFrom(original)
    assert _decompose_layernorms(spelled) == 13
    spelled = onnx.version_converter.convert_version(spelled, 20)
    out, result = run_pass(FuseLayerNorm(), spelled)
    assert result.stats == {"fused": 13}
    out, result = run_pass(FuseGelu(), out)
    assert result.stats == {"fused": 6}
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("LayerNormalization") == 13 and ops.count("Gelu") == 6 and "Erf" not in ops
    feeds = realdata.tokenize(realdata.sentences()[:8], str(fetch.minilm_vocab()))
    for optimize in (True, False):
        for a, b in zip(run_model(original, feeds, optimize), run_model(out, feeds, optimize)):
            assert a.shape == b.shape
            assert np.max(np.abs(a - b)) <= 1e-5 + 1e-4 * np.max(np.abs(a))
