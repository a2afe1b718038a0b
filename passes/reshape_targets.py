"""reshape-targets: give a Reshape computed from ``Shape`` a constant target where the values allow.

Exporters write "keep the batch, flatten the rest" as ``Reshape(x, Concat(Slice(Shape(x), 0, 1),
[-1]))``: the target is computed at run time although every element of it is determined. For a
``Reshape(x, t)`` with ``allowzero=0`` whose target ``t`` is tracked element by element
(``onnxslim.ir.shapes.shape_elements``):

- an element that is dim ``i`` of ``x`` itself, at position ``i``, becomes ``0``: with
  ``allowzero=0``, ``0`` means "copy dim i of the input", the very value it had;
- an element that is dim ``j`` of a tensor whose computed dim ``j`` carries the same symbolic
  name as ``x``'s dim ``i`` is the same value, and becomes ``0`` too;
- when, after that, exactly one element is still unknown and every other element is a positive
  number, the unknown one becomes ``-1``: the element count of ``x`` fixes it, as
  ``size(x) / Π(others)``, the only value the original could have taken for a valid reshape.

When every element is then a number, the Reshape reads a new constant and the shape chain it
read becomes dead (``dce`` removes it). The Reshape's output is the same for every input:
values are only moved, never computed.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.core.registry import register_pass
from onnxslim.ir.nodes import is_onnx_op
from onnxslim.ir.shapes import DimOf, Element, Shapes, computed_shapes, shape_elements
from onnxslim.ir.weights import constant_value, unique_name


@register_pass
class ReshapeTargets(Pass):
    """Replace a Reshape's computed target by a constant with 0 (copy) and -1 (infer) entries."""

    name = "reshape-targets"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        candidates = [n for n in graph.nodes if _candidate(n)]
        if not candidates:
            return PassResult(modified=False, stats={"constant_targets": 0})
        graph.toposort(recurse_subgraphs=False, recurse_functions=False, mode="nodes")
        shapes = computed_shapes(graph, ctx.template)
        elements = shape_elements(graph, shapes)
        rewritten = 0
        for node in candidates:
            target = _constant_target(node, elements.get(node.inputs[1].name), shapes)
            if target is None:
                continue
            name = unique_name(graph, f"{node.name or node.outputs[0].name}_target")
            node.inputs[1] = gs.Constant(name, np.array(target, dtype=np.int64))
            rewritten += 1
        if rewritten:
            graph.cleanup(remove_unused_node_outputs=False, recurse_subgraphs=False, remove_unused_graph_inputs=False)
        return PassResult(modified=rewritten > 0, stats={"constant_targets": rewritten})


def _candidate(node: gs.Node) -> bool:
    return (is_onnx_op(node, "Reshape") and len(node.inputs) == 2 and not node.attrs.get("allowzero", 0)
            and constant_value(node.inputs[1]) is None)


def _constant_target(node: gs.Node, elements: list[Element] | None, shapes: Shapes) -> list[int] | None:
    if not elements:
        return None
    data = node.inputs[0].name
    data_dims = shapes.get(data)
    target: list[int | None] = []
    for i, element in enumerate(elements):
        if isinstance(element, (int, np.integer)):
            target.append(int(element))
        elif isinstance(element, DimOf) and _same_dim(element, data, i, data_dims, shapes):
            target.append(0)
        else:
            target.append(None)
    unknown = [i for i, t in enumerate(target) if t is None]
    if len(unknown) == 1 and all(t is not None and t > 0 for i, t in enumerate(target) if i != unknown[0]):
        target[unknown[0]] = -1
    if any(t is None for t in target) or target.count(-1) > 1:
        return None
    return target


def _same_dim(element: DimOf, data: str, position: int, data_dims, shapes: Shapes) -> bool:
    """Whether ``element`` is dim ``position`` of the Reshape's input."""
    if element.tensor == data and element.axis == position:
        return True
    if data_dims is None or position >= len(data_dims) or not isinstance(data_dims[position], str):
        return False
    other = shapes.get(element.tensor)
    return other is not None and element.axis < len(other) and other[element.axis] == data_dims[position]
