"""collapse-chains: Reshape → Reshape becomes one Reshape, Transpose → Transpose one Transpose.

``Reshape(Reshape(x, s1), s2) = Reshape(x, s2)``: a reshape keeps the elements in order, so
only the last target matters — provided s2 does not copy dims from the intermediate tensor,
i.e. s2 is a constant with no 0 entry (or the last Reshape has ``allowzero=1``, where 0 means
an empty dim). ``Transpose(Transpose(x, p), q) = Transpose(x, r)`` with ``r[i] = p[q[i]]``
(output dim i of the second is dim q[i] of the first, which is dim p[q[i]] of x); when r is
the identity the pair is removed. ``Unsqueeze(Unsqueeze(x, a1), a2)`` is one Unsqueeze whose axes
are ``a2`` and, for each ``j`` in ``a1``, the j-th position not in ``a2`` (the first one's output
dims keep their order between the dims the second inserts; non-negative axes only). The first
node's output must be read by nodes of its own kind alone, each of which merges, and not be a
graph output: every reader then reads the first node's input, the first node goes, and no
value anyone else sees disappears (the dynamo exporter's ``arange[None][:, None]`` and
``arange[None][None]`` share their first Unsqueeze). Exact: elements are only moved, never
computed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.core.pass_base import Decline, Pass, PassResult
from onnxslim.core.registry import register_pass
from onnxslim.ir.nodes import is_onnx_op
from onnxslim.ir.weights import constant_value, unique_name
from onnxslim.passes.remove_identity import alias_blocker, bypass


@register_pass
class CollapseChains(Pass):
    """Collapse Reshape→Reshape and Transpose→Transpose chains."""

    name = "collapse-chains"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        graph.toposort(recurse_subgraphs=False, recurse_functions=False, mode="nodes")
        counts = {"Reshape": 0, "Transpose": 0, "Unsqueeze": 0}
        declines: list[Decline] = []
        gone: set[int] = set()
        for first in list(graph.nodes):
            if id(first) in gone or not is_onnx_op(first, *counts) or not first.inputs or len(first.outputs) != 1:
                continue
            mid = first.outputs[0]
            seconds = [r for r in mid.outputs if r.op == first.op and is_onnx_op(r) and r.inputs and r.inputs[0] is mid]
            if not seconds:
                continue
            if len(seconds) != len(mid.outputs) or mid in graph.outputs:
                declines += [Decline(n.name, f"the {first.op} before it has other readers or is a graph output")
                             for n in seconds]
                continue
            merges = [_merge(first, second, graph, alone=len(seconds) == 1) for second in seconds]
            refused = [(second, m) for second, m in zip(seconds, merges) if not callable(m)]
            if refused:  # every reader must merge, else the first node stays and nothing is gained
                declines += [Decline(second.name, m) for second, m in refused if m]
                continue
            for second, apply in zip(seconds, merges):
                apply(graph, gone)
            counts[first.op] += len(seconds)
            first.inputs.clear()
            first.outputs.clear()
            gone.add(id(first))
        if gone:
            graph.nodes = [n for n in graph.nodes if id(n) not in gone]
        stats = {"reshapes": counts["Reshape"], "transposes": counts["Transpose"], "unsqueezes": counts["Unsqueeze"]}
        return PassResult(modified=sum(counts.values()) > 0, stats=stats, declines=declines)


Merge = Callable[[gs.Graph, set], None]


def _merge(first: gs.Node, second: gs.Node, graph: gs.Graph, alone: bool) -> Merge | str | None:
    """How ``second`` comes to read ``first``'s input directly; else why not (None: nothing to say).

    ``alone``: ``second`` is ``first``'s only reader. A pair that cancels and ends in a graph
    output renames the source's producer; with other readers of the source about to read it by
    its old name, that pair stays.
    """
    source = first.inputs[0]
    if second.op == "Unsqueeze":
        axes = _merged_unsqueeze_axes(first, second)
        if axes is None:
            return None

        def unsqueeze(graph: gs.Graph, gone: set) -> None:
            second.inputs[0] = source
            if len(second.inputs) > 1:
                second.inputs[1] = gs.Constant(unique_name(graph, f"{second.name or second.outputs[0].name}_axes"),
                                               np.array(axes, dtype=np.int64))
            else:
                second.attrs["axes"] = axes
        return unsqueeze
    if second.op == "Reshape":
        if not _last_target_stands_alone(second):
            return "its target shape may copy dims (0) from the intermediate tensor"

        def reshape(graph: gs.Graph, gone: set) -> None:
            second.inputs[0] = source
        return reshape
    p, q = first.attrs.get("perm"), second.attrs.get("perm")
    if p is None or q is None or len(p) != len(q):
        return None
    composed = [p[i] for i in q]
    if composed != list(range(len(composed))):
        def transpose(graph: gs.Graph, gone: set) -> None:
            second.inputs[0] = source
            second.attrs["perm"] = composed
        return transpose
    # The pair is the identity: the second vanishes, its readers read the source.
    if not alone and second.outputs[0] in graph.outputs:
        return "it cancels the Transpose before it into a graph output, and that Transpose has other readers"
    return alias_blocker(second.outputs[0], source, graph) or _vanish(second, source)


def _vanish(node: gs.Node, source: gs.Tensor) -> Merge:
    def apply(graph: gs.Graph, gone: set) -> None:
        bypass(node, node.outputs[0], source, graph)
        gone.add(id(node))
    return apply


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
