"""Successive calibration runs of a graph whose layers change between runs (sequential pruning,
layer-by-layer refits), each run starting where the previous one's still valid values end."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.ir import nodes


class Relay:
    """Calibration runs of a graph whose layers change between runs, each run starting where the
    previous one's still valid values end.

    A run computing ``names`` also keeps, batch by batch, the values the next run can take as they
    are: those of nodes it computes that the layers changed in between (``changed``) do not reach,
    where the next run (computing ``then``) reads them. The next run computes only the rest, fed
    those values: the same kernels on the same inputs give the same values. Without it each stage
    ran the whole prefix before its layers again (8 stages on PP-OCRv4, most of a model run each).
    Kept up to ``budget`` bytes, else the next run computes its whole prefix; not used on graphs
    with subgraphs or a fixed batch.
    """

    def __init__(self, ctx, budget: int) -> None:
        self.ctx, self.budget = ctx, budget
        self.kept: list[dict[str, np.ndarray]] | None = None
        self.given: dict[str, np.dtype] = {}

    def activations(self, graph: gs.Graph, names: list[str], changed: list[gs.Node] = (),
                    then: list[str] | None = None):
        """Per calibration batch, the values of ``names`` (and the feeds), as ``ctx.activations``."""
        ctx, kept, given = self.ctx, self.kept, self.given
        self.kept, self.given = None, {}
        usable = then is not None and ctx.fixed_batch is None and not nodes.has_subgraphs(graph)
        keep = _frontier(graph, names, given if kept is not None else {}, changed, then) if usable else []
        wanted = list(dict.fromkeys([*names, *keep]))
        if kept is not None and all(n in given for n in wanted):  # nothing to compute: no run
            runs = ({**feeds, **values} for feeds, values in zip(ctx.require_calibration("this pass"), kept))
        elif kept is not None:
            sub = nodes.between(graph, given, wanted)
            inputs = {t.name for t in sub.inputs}
            data = ({k: v for k, v in {**feeds, **values}.items() if k in inputs}
                    for feeds, values in zip(ctx.require_calibration("this pass"), kept))
            computed = ctx.activations(sub, [n for n in wanted if n not in given], data=data)
            runs = ({**values, **out} for values, out in zip(kept, computed))  # given ones this run did not read too
        else:
            runs = ctx.activations(nodes.prefix(graph, wanted), wanted)
        store: list[dict[str, np.ndarray]] | None = [] if keep else None
        size = 0
        for values in runs:
            if store is not None:
                part = {n: np.asarray(values[n]) for n in keep}
                size += sum(v.nbytes for v in part.values())
                if size > self.budget:
                    store, self.kept, self.given = None, None, {}
                else:
                    store.append(part)
                    self.kept, self.given = store, {n: v.dtype for n, v in part.items()}
            yield values


def _frontier(graph: gs.Graph, names: list[str], given: dict, changed: list[gs.Node], then: list[str]) -> list[str]:
    """The tensors a run computing ``names`` (from ``given``) holds that the next run computing
    ``then`` reads and that the ``changed`` nodes do not reach (nodes that read nothing, such as
    Constant nodes, are computed again)."""
    tensors = graph.tensors()
    dirty = nodes.downstream(list(changed))
    computed = nodes.reached([tensors[n] for n in names], set(given))
    valid = {t.name for node in graph.nodes if id(node) in computed and id(node) not in dirty and node.inputs
             for t in node.outputs}
    valid |= {n for n in given if not any(id(p) in dirty for p in tensors[n].inputs)}
    after = nodes.reached([tensors[n] for n in then], valid)
    out = [t.name for node in graph.nodes if id(node) in after for t in node.inputs if t.name in valid]
    return list(dict.fromkeys(out + [n for n in then if n in valid]))
