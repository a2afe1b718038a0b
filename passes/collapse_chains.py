"""collapse-chains: Reshape → Reshape becomes one Reshape, Transpose → Transpose one Transpose.

``Reshape(Reshape(x, s1), s2) = Reshape(x, s2)``: a reshape keeps the elements in order, so
only the last target matters — provided s2 does not copy dims from the intermediate tensor,
i.e. s2 is a constant with no 0 entry (or the last Reshape has ``allowzero=1``, where 0 means
an empty dim). ``Transpose(Transpose(x, p), q) = Transpose(x, r)`` with ``r[i] = p[q[i]]``
(output dim i of the second is dim q[i] of the first, which is dim p[q[i]] of x); when r is
the identity the pair is removed. ``Unsqueeze(Unsqueeze(x, a1), a2)`` is one Unsqueeze whose axes
are ``a2`` and, for each ``j`` in ``a1``, the j-th position not in ``a2`` (the first one's output
dims keep their order between the dims the second inserts; non-negative axes only). Either way the first node's output must be read by the
second alone and not be a graph output, so no value anyone else sees disappears. Exact:
elements are only moved, never computed.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.core.pass_base import Decline, Pass, PassResult
from onnxslim.core.registry import register_pass
from onnxslim.ir.nodes import is_onnx_op, sole_reader
from onnxslim.ir.weights import constant_value, unique_name
from onnxslim.passes.remove_identity import alias_blocker, bypass


@register_pass
class CollapseChains(Pass):
    """Collapse Reshape→Reshape and Transpose→Transpose chains."""

    name = "collapse-chains"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        graph.toposort(recurse_subgraphs=False, recurse_functions=False, mode="nodes")
        reshapes = transposes = unsqueezes = 0
        declines: list[Decline] = []
        gone: set[int] = set()
        for node in list(graph.nodes):
            if id(node) in gone or not is_onnx_op(node, "Reshape", "Transpose", "Unsqueeze") or not node.inputs:
                continue
            mid = node.inputs[0]
            first = mid.inputs[0] if len(mid.inputs) == 1 else None
            if first is None or first.op != node.op or not is_onnx_op(first) or id(first) in gone:
                continue
            if sole_reader(mid, graph) is not node:
                declines.append(Decline(node.name, f"the {first.op} before it has other readers or is a graph output"))
                continue
            if node.op == "Unsqueeze":
                axes = _merged_unsqueeze_axes(first, node)
                if axes is None:
                    continue
                node.inputs[0] = first.inputs[0]
                if len(node.inputs) > 1:
                    node.inputs[1] = gs.Constant(unique_name(graph, f"{node.name or node.outputs[0].name}_axes"),
                                                 np.array(axes, dtype=np.int64))
                else:
                    node.attrs["axes"] = axes
                unsqueezes += 1
            elif node.op == "Reshape":
                if not _last_target_stands_alone(node):
                    declines.append(Decline(node.name, "its target shape may copy dims (0) from the intermediate tensor"))
                    continue
                node.inputs[0] = first.inputs[0]
                reshapes += 1
            else:
                p, q = first.attrs.get("perm"), node.attrs.get("perm")
                if p is None or q is None or len(p) != len(q):
                    continue
                composed = [p[i] for i in q]
                source = first.inputs[0]
                if composed == list(range(len(composed))):
                    reason = alias_blocker(node.outputs[0], source, graph)
                    if reason:
                        declines.append(Decline(node.name, reason))
                        continue
                    bypass(node, node.outputs[0], source, graph)
                    gone.add(id(node))
                else:
                    node.inputs[0] = source
                    node.attrs["perm"] = composed
                transposes += 1
            first.inputs.clear()
            first.outputs.clear()
            gone.add(id(first))
        if gone:
            graph.nodes = [n for n in graph.nodes if id(n) not in gone]
        changed = reshapes + transposes + unsqueezes
        stats = {"reshapes": reshapes, "transposes": transposes, "unsqueezes": unsqueezes}
        return PassResult(modified=changed > 0, stats=stats, declines=declines)


def _merged_unsqueeze_axes(first: gs.Node, second: gs.Node) -> list[int] | None:
    """The axes of one Unsqueeze doing both (non-negative axes only: no rank is needed).

    The second inserts dims at ``a2`` of its output; the first one's output dims land, in order,
    on the positions that are not in ``a2``, so the dim it inserted at ``j`` lands on the j-th of them.
    """
    a1, a2 = _unsqueeze_axes(first), _unsqueeze_axes(second)
    if a1 is None or a2 is None or min(a1 + a2, default=0) < 0 or len(set(a1)) != len(a1) or len(set(a2)) != len(a2):
        return None
    taken = set(a2)
    free = [p for p in range(max(a1) + len(a2) + 1) if p not in taken]
    return sorted(taken | {free[j] for j in a1})


def _unsqueeze_axes(node: gs.Node) -> list[int] | None:
    if len(node.inputs) > 1:
        value = constant_value(node.inputs[1])
        return None if value is None else [int(a) for a in np.asarray(value).reshape(-1)]
    axes = node.attrs.get("axes")
    return None if axes is None else [int(a) for a in axes]


def _last_target_stands_alone(node: gs.Node) -> bool:
    if node.attrs.get("allowzero", 0):
        return True
    target = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
    return target is not None and not (target == 0).any()
