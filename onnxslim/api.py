"""The library entry points behind the CLI: optimize, verify and inspect.

``optimize`` owns the whole run: load, check the data, run the pipeline through the pass
manager, compare the result with the original in ONNX Runtime, measure latency, and write the
output atomically, only when parity holds (or ``force``). It never prints; it returns an
``Outcome`` holding the report, and the CLI decides what to show.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxslim import report as reporting
from onnxslim.core.context import PassContext, Tracker, untracked
from onnxslim.core.manager import PassManager
from onnxslim.core.pass_base import Plan
from onnxslim.core.pipeline import Pipeline, parse
from onnxslim.errors import UsageError
from onnxslim.ir.external import tensor_bytes
from onnxslim.ir.io import file_bytes, load_model, staged, to_graph, weightless, writable, write_graph
from onnxslim.ir.refs import has_references
from onnxslim.ir.stats import all_tensor_bytes, flops_report, model_compressed_bytes, model_stats
from onnxslim.runtime.bench import measure_latency
from onnxslim.runtime.data import DataSource
from onnxslim.runtime.feeds import bind_shapes, input_specs
from onnxslim.runtime.metric import Metric
from onnxslim import run_inputs
from onnxslim.runtime.parity import Tolerance, compare_models
from onnxslim.runtime.node_count import count_later
from onnxslim.runtime.session import resolve_providers

logger = logging.getLogger(__name__)

DEFAULT_PIPELINE = ("remove-identity,repeat(3){fold-constants,reshape-targets,cse,remove-noops,collapse-chains},"
                    "fuse-pad,fuse-layernorm,fuse-gelu,fold-bn,fuse-activations,fold-affine,dce")
#: Models whose tensors hold this many bytes are verified and timed with one session at a time:
#: two would hold the weights twice (a 2.4 GB model peaked at 2.1x its size).
ONE_SESSION_BYTES = 1 << 30
VERIFY_EACH_BATCHES = 2  # batches of --data each per-pass parity check runs: a cheap gate, not the final word

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Everything ``optimize``/``verify`` take besides the paths (the CLI flags)."""

    passes: str | None = None
    data: str | None = None
    calibration_data: str | None = None
    preprocess: str | None = None
    input_shapes: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    providers: tuple[str, ...] = ("cpu",)
    threads: int | None = None
    seed: int = 0
    tolerance: str | None = None
    verify_each: bool = False
    verify: bool = True
    dry_run: bool = False
    force: bool = False
    latency_seconds: float = 5.0
    metric: str | None = None
    max_drop: float | None = None


@dataclasses.dataclass
class Outcome:
    """The result of a run: the report, the exit code the CLI should use, what was written."""

    report: dict[str, Any]
    exit_code: int
    output: Path | None
    plan: list[str] = dataclasses.field(default_factory=list)


def default_output(input_path: Path) -> Path:
    stem = input_path.name[: -len(".onnx")] if input_path.name.endswith(".onnx") else input_path.name
    return input_path.with_name(f"{stem}.slim.onnx")


def optimize(input_path: str | os.PathLike, output_path: str | os.PathLike | None = None,
             options: RunOptions = RunOptions(), progress: Progress | None = None,
             tracker: Tracker = untracked) -> Outcome:
    """Run the pipeline on ``input_path`` and write the verified result to ``output_path``.

    ``progress`` is told each step's name; ``tracker`` wraps long iterations (calibration and
    parity batches) so a front end can draw a progress bar.
    """
    say = progress or (lambda _msg: None)
    source = Path(input_path)
    target = Path(output_path) if output_path is not None else default_output(source)
    _check_output_path(source, target, options.dry_run)
    if options.passes is not None and not options.passes.strip():
        raise UsageError("--passes is empty: give a pipeline, or leave --passes out for the default one")
    pipeline = parse(options.passes or DEFAULT_PIPELINE)
    tolerance = _tolerance(pipeline, options.tolerance)
    providers = resolve_providers(options.providers)
    model = load_model(source)
    run_inputs.check_metric_options(options)
    inputs = run_inputs.Inputs(model, options, providers)
    parity_data = run_inputs.parity_data(model, options, inputs) if options.verify and not options.dry_run else None
    if parity_data is None and options.verify and not options.dry_run and not _is_exact(pipeline):
        raise inputs.error  # a lossy result that cannot be checked is not written
    ctx = PassContext(model, run_inputs.calibration_data(model, options, inputs), providers, options.threads, options.seed,
                      tracker=tracker)
    if options.calibration_data == "random":
        ctx.warn("calibration uses random data (--calibration-data random): results say nothing about real inputs")
    for message in getattr(parity_data, "warnings", ()):
        ctx.warn(message)
    verify_feeds = list(itertools.islice(parity_data, VERIFY_EACH_BATCHES)) if options.verify_each else None
    manager = PassManager(pipeline, ctx, verify_feeds, on_pass=lambda name: say(f"pass {name}"))
    manager.check_requirements()
    graph = to_graph(model)
    doc = reporting.header(str(pipeline), providers)
    input_nodes = None if options.dry_run else count_later(model)  # ORT counts while the passes run
    if options.dry_run:
        plans, lines = _plan(manager, graph)
        doc.update(dry_run=True, plan=plans, warnings=ctx.warnings)
        return Outcome(doc, 0, None, lines)
    first_feeds = next(iter(parity_data)) if parity_data is not None else inputs.unchecked_feeds()
    # The input's costs are measured while the passes run: they read the input (weights from its
    # file), the passes change the graph. 100 M-parameter model: 0.4 s of reading, counting
    # nonzeros and deflating samples, mostly outside the GIL.
    input_costs = _in_background(describe, model, first_feeds, path=source, nodes=input_nodes)
    graph = manager.run(graph)
    doc["input"] = input_costs.result()
    doc["output"] = {}
    doc["passes"] = [r.to_dict() for r in manager.records]
    with staged(target) as stage:
        # The result is written once, streamed; what is checked, measured and compared is that file.
        write_graph(graph, ctx.template, stage.path, stage.data_name)
        del graph
        gc.collect()  # its tensors form cycles: its weights are freed now, before the sessions load
        result = load_model(stage.path)
        output_nodes = count_later(result)  # while the parity runs
        held = True
        doc["parity"], doc["latency"] = {}, {}
        if parity_data is not None:
            held = _compare(doc, runnable(model, source), stage.path, parity_data, tolerance, providers, options,
                            say, tracker, one_at_a_time=all_tensor_bytes(model) >= ONE_SESSION_BYTES)
        elif options.verify:
            reason = str(inputs.error)
            doc["parity"] = {"measured": False, "reason": reason}
            ctx.warn(f"parity not measured: {reason}")
        doc["output"] = {**describe(result, first_feeds, path=stage.path, nodes=output_nodes), "path": str(target)}
        doc["warnings"] = ctx.warnings
        exit_code = 0 if held else 1  # --force writes a failing result but still says it failed
        if held or options.force:
            stage.commit()
            doc["output"]["bytes"] = file_bytes(target)
            return Outcome(doc, exit_code, target)
    doc["output"]["path"] = None
    return Outcome(doc, exit_code, None)


def runnable(model: onnx.ModelProto, path: Path) -> onnx.ModelProto | Path:
    """What ONNX Runtime gets for a loaded model: its file when its weights are referenced (ORT
    reads them there, no copy of them is built here), else the model (as loaded: upgraded)."""
    return path if has_references(model) else model


def verify(reference_path: str | os.PathLike, candidate_path: str | os.PathLike,
           options: RunOptions = RunOptions(), progress: Progress | None = None,
           tracker: Tracker = untracked) -> Outcome:
    """Parity and latency of ``candidate`` against ``reference``; exit code 1 when parity fails."""
    say = progress or (lambda _msg: None)
    providers = resolve_providers(options.providers)
    reference, candidate = load_model(reference_path), load_model(candidate_path)
    _check_same_interface(reference, candidate)
    tolerance = Tolerance.parse(options.tolerance or "exact")
    inputs = run_inputs.Inputs(reference, options, providers)
    data = run_inputs.parity_data(reference, options, inputs)
    if data is None:
        raise inputs.error
    doc = reporting.header("", providers)
    first = next(iter(data))
    doc["input"] = describe(reference, first, path=Path(reference_path))
    doc["output"] = describe(candidate, first, path=Path(candidate_path))
    doc["passes"] = []
    big = max(all_tensor_bytes(reference), all_tensor_bytes(candidate)) >= ONE_SESSION_BYTES
    held = _compare(doc, runnable(reference, Path(reference_path)), runnable(candidate, Path(candidate_path)), data,
                    tolerance, providers, options, say, tracker, one_at_a_time=big)
    doc["warnings"] = []
    return Outcome(doc, 0 if held else 1, None)


def _compare(doc: dict[str, Any], reference: onnx.ModelProto | Path, candidate: onnx.ModelProto | Path,
             data: Iterable[dict[str, np.ndarray]], tolerance: Tolerance, providers: list[str],
             options: RunOptions, say: Progress, tracker: Tracker, one_at_a_time: bool = False) -> bool:
    """Fill the report's parity (on every batch of ``data``), metric and latency; True when it holds.

    ``one_at_a_time``: the two models never have sessions at the same time (``ONE_SESSION_BYTES``).

    With ``--max-drop`` the metric is the budget: the per-output tolerance is still measured and
    reported, but decides only when ``--tolerance`` was given too (``parity.decides``).
    """
    say("parity")
    collector = Metric(options.metric).collector(options.max_drop) if options.metric else None
    pairs = data.with_labels() if isinstance(data, DataSource) else ((feeds, None) for feeds in data)

    def feeds_only():
        for feeds, labels in pairs:
            if collector is not None:
                collector.add_inputs(feeds, labels)
            yield feeds

    batches = tracker(feeds_only(), "parity batches", getattr(data, "len_hint", None))
    generated = not isinstance(data, DataSource) or data.is_random
    parity = compare_models(reference, candidate, batches, providers[0], options.threads, generated=generated,
                            observe=collector.add_outputs if collector is not None else None,
                            one_at_a_time=one_at_a_time)
    decides = options.max_drop is None or options.tolerance is not None
    doc["parity"] = {"data": _describe_data(data), **parity.to_dict(tolerance), "decides": decides}
    held = parity.holds(tolerance) or not decides
    if collector is not None:
        result = collector.evaluate(parity)
        doc["metric"] = result.to_dict()
        held = held and result.held is not False
    say("latency")
    doc["latency"] = _latency([reference, candidate], next(iter(data)), providers, options, one_at_a_time)
    return held


def inspect(path: str | os.PathLike, input_shapes: dict[str, tuple[int, ...]] | None = None, seed: int = 0) -> dict[str, Any]:
    """Op histogram, params, bytes, FLOPs by op type, inputs and outputs of one model.

    Nothing is run: FLOPs come from shape inference, at the inputs' shapes bound as generated
    inputs would take them (``--input-shape`` first), and in the model's symbolic dims.
    """
    model = load_model(path)
    shapes = bind_shapes(model, input_shapes or {})
    doc = describe(model, shapes, path=Path(path))
    doc["inputs"] = [_value_info(v) for v in model.graph.input if v.name not in _initializer_names(model)]
    doc["outputs"] = [_value_info(v) for v in model.graph.output]
    doc["opset"] = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    doc["feed_shapes"] = {k: list(v) for k, v in shapes.items()}
    return doc


def describe(model: onnx.ModelProto, feeds: dict[str, Any] | None, path: Path | None,
             nodes: Future | None = None) -> dict[str, Any]:
    """Costs of one model: bytes, params, FLOPs and node counts (raw and as ORT runs it).

    ``feeds`` (arrays, or shapes, by input name) give the shapes FLOPs are counted at. Nothing
    runs the model: shapes come from shape inference on its weightless copy, which is also what
    ORT loads to count nodes after its optimizations (skipped, with a note, when ORT refuses);
    ``nodes`` is that count when it was started earlier (``runtime.node_count.count_later``).
    """
    nodes = nodes if nodes is not None else count_later(model)
    stats = model_stats(model)
    stub = weightless(model)
    size = file_bytes(path) if path is not None and path.exists() else tensor_bytes(model) + stub.ByteSize()
    packed, estimated = model_compressed_bytes(model, stub)
    costs = flops_report(model, feeds, stub)
    nodes_optimized, why = nodes.result()
    notes = costs["notes"] + ([why] if why else [])
    if estimated:
        notes.append("zip bytes: estimated from samples of each tensor (see README, Definitions)")
    return {
        "path": str(path) if path is not None else None,
        "bytes": size,
        "compressed_bytes": packed,
        "compressed_bytes_estimated": estimated,
        "params": stats.params,
        "nonzero_params": stats.nonzero_params,
        "flops": costs["flops"],
        "flops_symbolic": costs["flops_symbolic"],
        "nodes": stats.nodes,
        "nodes_optimized": nodes_optimized,
        "op_histogram": stats.op_histogram,
        "notes": notes,
    }


def _in_background(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
    """``function(*args, **kwargs)`` in a daemon thread: an interrupt or a failed pass ends the
    run at once instead of waiting for it at exit."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(function(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever asks for the result
            future.set_exception(exc)

    threading.Thread(target=run, name="onnxslim-describe", daemon=True).start()
    return future


def _check_output_path(source: Path, target: Path, dry_run: bool) -> None:
    same = target.resolve() == source.resolve() or (target.exists() and source.exists() and os.path.samefile(source, target))
    if same:
        raise UsageError(f"output path {target} is the input file; choose another -o")
    if dry_run:
        return
    parent = target.parent
    if not parent.is_dir():
        raise UsageError(f"output directory {parent} does not exist")
    if not writable(parent):
        raise UsageError(f"output directory {parent} is not writable")
    if target.is_dir():
        raise UsageError(f"output path {target} is a directory")


def _is_exact(pipeline: Pipeline) -> bool:
    return all(spec.create().exact for spec in pipeline.specs())


def _tolerance(pipeline: Pipeline, text: str | None) -> Tolerance:
    """``--tolerance``; else ``exact`` for an exact pipeline; else the lossy passes' budgets merged
    (per metric the looser bound; see ``Tolerance.merge``)."""
    if text:
        return Tolerance.parse(text)
    budgets = [b for b in (spec.create().tolerance() for spec in pipeline.specs()) if b is not None]
    tolerance = Tolerance.parse("exact")
    if budgets:
        tolerance = budgets[0]
        for budget in budgets[1:]:
            tolerance = tolerance.merge(budget)
    return tolerance


def _latency(models: list[onnx.ModelProto | Path], feeds: dict[str, np.ndarray], providers: list[str],
             options: RunOptions, one_at_a_time: bool = False) -> dict[str, Any]:
    threads = options.threads or os.cpu_count() or 1
    out: dict[str, Any] = {}
    for provider in providers:
        original, result = measure_latency(models, feeds, provider, threads, max_seconds=options.latency_seconds,
                                           one_at_a_time=one_at_a_time)
        out[provider] = {"original": original.to_dict(), "result": result.to_dict(),
                         "ratio": _ratio(original.median_ms, result.median_ms),
                         "interleaved": not one_at_a_time}
    return out


def _ratio(before: float, after: float) -> float | None:
    return round(before / after, 3) if after > 0 else None


def _plan(manager: PassManager, graph: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Every pass's plan (``PassManager.dry_run``), as data for the report and as lines to print."""
    plans: list[dict[str, Any]] = []
    lines: list[str] = []
    for record in manager.dry_run(graph):
        plans.append({**record.plan, "options": record.options, "inserted": record.inserted})
        head = f"{record.name}{{{record.options}}}" if record.options else record.name
        lines += Plan.from_dict(record.plan).lines(head)
    return plans, lines


def _describe_data(data: Iterable[dict[str, np.ndarray]]) -> str:
    return getattr(data, "description", None) or "generated inputs (seeded normal; see README)"


def _check_same_interface(a: onnx.ModelProto, b: onnx.ModelProto) -> None:
    """Two models compared output by output must take the same inputs and name the same outputs."""
    names_a = [o.name for o in a.graph.output]
    names_b = [o.name for o in b.graph.output]
    if names_a != names_b:
        raise UsageError(f"the models have different outputs: {names_a} vs {names_b}")
    inputs_a = {s.name: s.dtype for s in input_specs(a)}
    inputs_b = {s.name: s.dtype for s in input_specs(b)}
    if inputs_a != inputs_b:
        describe_a = ", ".join(f"{k}:{v}" for k, v in inputs_a.items())
        describe_b = ", ".join(f"{k}:{v}" for k, v in inputs_b.items())
        raise UsageError(f"the models take different inputs: {describe_a} vs {describe_b}")


def _initializer_names(model: onnx.ModelProto) -> set[str]:
    return {i.name for i in model.graph.initializer}


def _value_info(value: onnx.ValueInfoProto) -> dict[str, Any]:
    tensor = value.type.tensor_type
    dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in tensor.shape.dim]
    return {"name": value.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
            if tensor.elem_type else None, "dims": dims}
