"""The pass manager: runs a pipeline over a graph and checks the graph between passes.

After every pass that changed the graph it toposorts, verifies the structure and runs
``onnx.checker`` on the export. With ``verify_each`` it also compares the graph before and
after the pass with ONNX Runtime, under the pass's own budget (exact passes: ``exact``); a pass
that breaks it is rolled back, the first diverging node is named, and the pipeline goes on.

A pass with a plan of its own runs as ``apply(plan(...))`` and the report keeps the plan; a pass
with the trivial plan (the exact ones) runs once and its plan is what it changed. ``dry_run``
makes every plan on a copy: a trivial plan by running on it, any other is applied to it only when
complete (nothing left to calibration or timing), so later passes plan on the graph as it would
be; an incomplete one is not, and its plan says that the plans after it see the graph before it.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.core.pass_base import Decline, Pass, PassResult, Plan
from onnxslim.core.pipeline import PassSpec, Pipeline, Repeat, format_options
from onnxslim.core.registry import get_pass
from onnxslim.core.requires import drop_orphaned_constants, missing, read_constant_nodes
from onnxslim.errors import OnnxSlimError, PassError, VerificationError
from onnxslim.ir.io import check, export_weightless, to_graph
from onnxslim.ir.nodes import copy_graph
from onnxslim.ir.verify import verify_structure
from onnxslim.ir.weights import quantized_layers
from onnxslim.runtime.parity import Tolerance, compare_models, first_divergence

logger = logging.getLogger(__name__)

EXACT = Tolerance.parse("exact")
#: Below this many bytes of constants the weights a pass replaced are left to Python's own cycle
#: collection: a full collection costs ~30 ms per pass on a 7 MB CNN, more than the memory is worth.
COLLECT_MIN_BYTES = 64 << 20
ALREADY_QUANTIZED = "already quantized (its weight comes from DequantizeLinear): left as it is"
NOT_APPLIED = ("not applied in the dry run (its plan leaves choices to calibration or timing): "
               "the plans after it are made on the graph before it")


@dataclasses.dataclass
class PassRecord:
    """One executed pass, as the report shows it."""

    name: str
    options: str
    changed: bool
    seconds: float
    stats: dict[str, Any]
    declines: list[dict[str, str]]
    notes: list[str]
    delta: dict[str, int] = dataclasses.field(default_factory=dict)
    rolled_back: bool = False
    parity: dict[str, Any] | None = None
    inserted: bool = False  # run because a later pass requires it, not asked for in the pipeline
    latency_decisions: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # see ``ctx.decide``
    plan: dict[str, Any] | None = None  # a lossy pass's plan (every pass's in a dry run)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class PassManager:
    """Runs ``pipeline``; ``parity_feeds`` (a list of feed dicts) enables per-pass parity checks."""

    pipeline: Pipeline
    ctx: PassContext
    parity_feeds: Sequence[dict[str, np.ndarray]] | None = None
    on_pass: Callable[[str], None] | None = None
    records: list[PassRecord] = dataclasses.field(default_factory=list)
    done: set[str] = dataclasses.field(default_factory=set)  # passes run so far (requirements met)
    dry: bool = False  # plan only: set by dry_run
    collect: bool = True  # collect cycles after each pass that changed the graph (set by ``run``)

    def dry_run(self, graph: gs.Graph) -> list[PassRecord]:
        """Every pass's plan, made on a copy of ``graph`` (left as it is); the records carry them."""
        self.dry = True
        self.run(copy_graph(graph))  # gs's copy drops sequence and optional types
        return self.records

    def check_requirements(self) -> None:
        """Fail before any work when a pass needs calibration data that was not given."""
        for spec in self.pipeline.specs():
            if spec.create().needs_calibration():
                self.ctx.require_calibration(spec.name)

    def run(self, graph: gs.Graph) -> gs.Graph:
        """Run every pass; returns the final graph (a rollback replaces the graph object)."""
        self.collect = constant_bytes(graph) >= COLLECT_MIN_BYTES
        graph, _ = self._run_items(self.pipeline.items, graph)
        return graph

    def _run_items(self, items: Sequence[PassSpec | Repeat], graph: gs.Graph) -> tuple[gs.Graph, bool]:
        changed_any = False
        for item in items:
            if isinstance(item, Repeat):
                for _ in range(item.times):
                    graph, changed = self._run_items(item.items, graph)
                    changed_any |= changed
                    if not changed:
                        break
            else:
                graph, changed = self._run_pass(item, graph)
                changed_any |= changed
        return graph, changed_any

    def _run_pass(self, spec: PassSpec, graph: gs.Graph, inserted: bool = False) -> tuple[gs.Graph, bool]:
        the_pass = spec.create()
        self.done.add(spec.name)
        ran_first = missing(the_pass.required(), self.done)
        for name in ran_first:  # the clean graph the pass requires (core.requires)
            graph, _ = self._run_pass(PassSpec(name, get_pass(name).Options()), graph, inserted=True)
        read_before = read_constant_nodes(graph) if not the_pass.exact else set()
        if self.on_pass:
            self.on_pass(spec.name)
        before = self.ctx.export(graph) if self.parity_feeds else None
        size_before = graph_size(graph)
        quantized = [n.name for n in quantized_layers(graph)] if not the_pass.exact else []
        decided_before = len(self.ctx.decisions)
        start = time.perf_counter()
        try:
            result, plan = self._execute(the_pass, graph)
        except OnnxSlimError:
            raise
        except Exception as exc:
            raise PassError(f"pass {spec.name} failed in pipeline '{self.pipeline}': {exc}") from exc
        seconds = time.perf_counter() - start
        declined = {d.where for d in result.declines}
        result.declines += [Decline(name, ALREADY_QUANTIZED) for name in quantized if name not in declined]
        if ran_first:
            result.notes.insert(0, f"ran {', '.join(ran_first)} first (inserted): {spec.name} requires a clean graph")
        record = self._record(spec, result, seconds)
        record.latency_decisions = [d.to_dict() for d in self.ctx.decisions[decided_before:]]
        record.inserted = inserted
        if plan is not None:
            in_plan = {d.where for d in plan.declines}
            plan.declines += [d for d in result.declines if d.reason == ALREADY_QUANTIZED and d.where not in in_plan]
            if ran_first:
                plan.notes.insert(0, result.notes[0])
            record.plan = plan.to_dict()
        self.records.append(record)
        if not result.modified:
            return graph, False
        if self.collect:  # gs tensors form cycles: the weights a pass replaced go now, not at some later collection
            gc.collect()
        if read_before:
            drop_orphaned_constants(graph, read_before)
        graph.toposort(recurse_functions=False, mode="nodes")  # functions pass through untouched
        self._verify(spec.name, graph)
        if before is not None:
            graph = self._check_parity(the_pass, record, before, graph)
        record.delta = {k: v - size_before[k] for k, v in graph_size(graph).items()}
        return graph, not record.rolled_back

    def _execute(self, the_pass: Pass, graph: gs.Graph) -> tuple[PassResult, Plan | None]:
        """Run ``the_pass`` on ``graph``, or in a dry run only as far as its plan allows."""
        if type(the_pass).plan is Pass.plan:  # the trivial plan (exact passes): what the run changed
            result = the_pass.run(graph, self.ctx)
            return result, Plan.of_result(the_pass.name, result) if self.dry else None
        plan = the_pass.plan(graph, self.ctx)
        if self.dry and not plan.complete:
            plan.notes.append(NOT_APPLIED)
            return PassResult(False, dict(plan.summary), list(plan.declines)), plan
        return the_pass.apply(graph, self.ctx, plan), plan

    def _record(self, spec: PassSpec, result: PassResult, seconds: float) -> PassRecord:
        return PassRecord(
            name=spec.name,
            options=format_options(spec.options),
            changed=result.modified,
            seconds=round(seconds, 4),
            stats=result.stats,
            declines=[d.to_dict() for d in result.declines],
            notes=list(result.notes),
        )

    def _verify(self, name: str, graph: gs.Graph) -> None:
        verify_structure(graph)
        try:
            check(export_weightless(graph, self.ctx.template))
        except onnx.checker.ValidationError as exc:
            first = str(exc).strip().splitlines()[0]
            raise VerificationError(f"after pass {name}: onnx.checker rejects the graph: {first}") from None

    def _check_parity(self, the_pass: Pass, record: PassRecord, before: onnx.ModelProto, graph: gs.Graph) -> gs.Graph:
        tolerance = the_pass.tolerance() or EXACT
        after = self.ctx.export(graph)
        report = compare_models(before, after, self.parity_feeds, self.ctx.target_provider, self.ctx.threads)
        failures = report.failures(tolerance)
        record.parity = report.to_dict(tolerance)
        if not failures:
            return graph
        node = first_divergence(before, after, self.parity_feeds[0], tolerance)
        record.rolled_back = True
        record.changed = False
        blame = f"; first divergence at {node}" if node else ""
        self.ctx.warn(f"pass {the_pass.name} broke its budget ({failures[0]}){blame}; rolled back")
        return to_graph(before)


def constant_bytes(graph: gs.Graph) -> int:
    """Bytes of the graph's constants (initializers and Constant-node values), from their shapes."""
    values = [t for t in graph.tensors().values() if isinstance(t, gs.Constant)]
    values += [n.attrs["value"] for n in graph.nodes if n.op == "Constant" and isinstance(n.attrs.get("value"), gs.Constant)]
    total = 0
    for value in values:
        try:
            total += math.prod(value.shape) * np.dtype(value.dtype).itemsize
        except TypeError:  # a dtype numpy does not know (bfloat16, float8): count it at one byte
            total += math.prod(value.shape)
    return total


def graph_size(graph: gs.Graph) -> dict[str, int]:
    """Nodes (Constant nodes aside) and weight elements (int64 aside, as in the report's params).

    Read from shapes alone, so no weight is loaded: cheap enough to run around every pass.
    """
    nodes = sum(1 for n in graph.nodes if n.op != "Constant")
    params = 0
    for tensor in graph.tensors().values():
        value = tensor if isinstance(tensor, gs.Constant) else None
        if value is None and tensor.inputs and tensor.inputs[0].op == "Constant":
            value = tensor.inputs[0].attrs.get("value")
            sparse = tensor.inputs[0].attrs.get("sparse_value")  # prune-weights{storage=sparse}
            if value is None and sparse is not None and sparse.values.data_type != onnx.TensorProto.INT64:
                params += math.prod(sparse.dims)
        if isinstance(value, gs.Constant) and value.dtype != np.int64 and value.shape is not None:
            params += math.prod(value.shape)
    return {"nodes": nodes, "params": params}
