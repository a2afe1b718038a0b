"""The command line: optimize, inspect, verify, passes. The only module that prints.

Exit codes: 0 ok; 1 verification failed; 2 bad input or usage; 3 internal error (a bug: the
message says so, and -v shows the traceback). Every error is one line on stderr.

The library (``api`` and what it uses: onnx, ONNX Runtime) is imported inside the commands, so
``onnxslim --help`` and ``onnxslim CMD --help`` answer without starting ONNX Runtime.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from onnxslim import __version__
from onnxslim.cli_format import format_inspect, format_outcome, format_passes
from onnxslim.errors import OnnxSlimError, ParityError, UsageError

if TYPE_CHECKING:
    from onnxslim import api

EXIT_PARITY, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 1, 2, 3, 130

#: One real command per subcommand, shown by its --help (tests/cli parse each against the options).
EXAMPLES = {
    "optimize": "onnxslim optimize models/cnn.onnx --passes quantize --calibration-data models/cnn_calib.npz "
                "--data models/cnn_eval.npz --metric accuracy",
    "verify": "onnxslim verify models/cnn.onnx models/cnn.slim.onnx --data models/cnn_eval.npz --metric accuracy",
    "inspect": "onnxslim inspect models/transformer.onnx --input-shape input=1x8x8",
    "passes": "onnxslim passes",
}


def _example(command: str) -> str:
    # \b keeps click from rewrapping the command line
    return f"Example:\n\n\b\n  {EXAMPLES[command]}"


def _verbosity(func):
    """-q/-v accepted after the command too (``onnxslim optimize m.onnx -q``), as pipelines write them."""

    def apply(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value:
            ctx.ensure_object(dict)[param.name] = value
            _configure_logging(ctx.obj.get("verbose", 0), ctx.obj.get("quiet", False))
        return value

    func = click.option("-v", "--verbose", count=True, expose_value=False, callback=apply,
                        help="More logging (-vv for debug).")(func)
    func = click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=apply,
                        help="Print nothing but errors.")(func)
    return func


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else max(logging.WARNING - 10 * verbose, logging.DEBUG)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True, level=level)


def _common(func):
    func = _verbosity(func)
    func = click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=1x3x224x224",
                        help="Bind the dynamic dims of an input (repeatable).")(func)
    func = click.option("--seed", type=click.IntRange(min=0, max=2**63 - 1), default=0, show_default=True,
                        help="Seed for generated inputs and sampling.")(func)
    return func


def _runtime(func):
    func = click.option("--max-drop", type=float, metavar="P",
                        help="Budget: the --metric may drop at most P points (100 x its scale); the per-output "
                        "tolerance is then informational unless --tolerance is given.")(func)
    func = click.option("--metric", metavar="M",
                        help="Task measure reported beside parity: accuracy (vs the data's 'label'), top1, cosine, "
                        "or module:function (f(outputs, data) -> number, higher is better).")(func)
    func = click.option("--data", metavar="D", help="Parity inputs: .npz (keys = input names), .npy, or a folder of them.")(func)
    func = click.option("--tolerance", metavar="T", help="'exact' or metric=value pairs, e.g. cosine=0.999,top1=0.99 "
                        "(add per_output: class scores by top1 alone, other outputs by the rest).")(func)
    func = click.option("--providers", default="cpu", show_default=True, help="Comma-separated: cpu,cuda,tensorrt.")(func)
    func = click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads for latency and sessions.")(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnxslim")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Compress ONNX models and prove the result computes the same thing."""
    ctx.obj = {"verbose": verbose, "quiet": quiet}
    _configure_logging(verbose, quiet)


@cli.command(epilog=_example("optimize"))
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output path (default IN.slim.onnx beside IN).")
@click.option("--passes", metavar="P", help="Pipeline text, e.g. 'fold-constants,dce,prune-weights{sparsity=0.5}'.")
@click.option("--calibration-data", metavar="C", help="Calibration data (same formats as --data, an image folder, or 'random'); "
              "without --data, its last 20% is held back for parity.")
@click.option("--preprocess", metavar="SPEC", help="Image preprocessing, e.g. 'size=224x224,mean=...,std=...,layout=NCHW'.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="Write the JSON report here.")
@click.option("--verify-each", is_flag=True, help="Check parity after each pass; roll back a pass that breaks its budget.")
@click.option("--no-verify", is_flag=True, help="Skip the final parity and latency measurement.")
@click.option("--dry-run", is_flag=True, help="Show what each pass would change; write nothing.")
@click.option("--force", is_flag=True, help="Write the output even when parity fails (exit code stays 1).")
@_runtime
@_common
@click.pass_context
def optimize(ctx: click.Context, model: Path, output: Path | None, report: Path | None, **flags: Any) -> None:
    """Run a pipeline of passes on MODEL, verify the result and write it."""
    from onnxslim import api

    options = _run_options(flags, verify=not flags.pop("no_verify"))
    if report is not None:
        if options.dry_run:
            raise UsageError("--dry-run writes nothing: drop --report (the plan is printed)")
        target = output if output is not None else api.default_output(model)
        _check_report_path(report, [model, target, Path(f"{target}.data")],
                           [options.data, options.calibration_data])
    outcome = api.optimize(model, output, options, progress=_progress(ctx), tracker=_tracker(ctx))
    _finish(ctx, outcome, report, lambda: format_outcome(outcome, model))


@cli.command(epilog=_example("verify"))
@click.argument("reference", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("candidate", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="Write the JSON report here.")
@_runtime
@_common
@click.pass_context
def verify(ctx: click.Context, reference: Path, candidate: Path, report: Path | None, **flags: Any) -> None:
    """Parity and latency of CANDIDATE against REFERENCE."""
    from onnxslim import api

    options = _run_options(flags)
    if report is not None:
        _check_report_path(report, [reference, candidate], [options.data])
    outcome = api.verify(reference, candidate, options, progress=_progress(ctx), tracker=_tracker(ctx))
    _finish(ctx, outcome, report, lambda: format_outcome(outcome, reference))


@cli.command(epilog=_example("inspect"))
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_common
@click.pass_context
def inspect(ctx: click.Context, model: Path, as_json: bool, input_shapes: tuple[str, ...], seed: int) -> None:
    """Op histogram, parameters, bytes, FLOPs by op type, inputs and outputs."""
    from onnxslim import api
    from onnxslim.runtime.feeds import parse_input_shapes

    doc = api.inspect(model, parse_input_shapes(input_shapes), seed)
    if as_json:
        import json

        click.echo(json.dumps(doc, indent=2))
    elif not ctx.obj["quiet"]:
        click.echo(format_inspect(doc))


@cli.command("passes", epilog=_example("passes"))
@_verbosity
def list_passes() -> None:
    """Every registered pass with its options, defaults and help."""
    click.echo(format_passes())


def _run_options(flags: dict[str, Any], **extra: Any) -> api.RunOptions:
    from onnxslim import api
    from onnxslim.runtime.feeds import parse_input_shapes

    names = {f.name for f in dataclasses.fields(api.RunOptions)}
    values = {k: v for k, v in flags.items() if k in names and v is not None}
    values["input_shapes"] = parse_input_shapes(flags.get("input_shapes", ()))
    values["providers"] = tuple(p.strip() for p in flags["providers"].split(",") if p.strip())
    return api.RunOptions(**values, **extra)


def _check_report_path(report: Path, models: list[Path], data: list[str | None]) -> None:
    """The report is an output like the model: never a model, a data file or the other output."""
    from onnxslim.ir.io import writable

    parent = report.parent if str(report.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"report directory {parent} does not exist")
    if not writable(parent):
        raise UsageError(f"report directory {parent} is not writable")
    if report.is_dir():
        raise UsageError(f"report path {report} is a directory")
    for role, paths in (("a model file", models), ("a data file", [Path(d) for d in data if d and d != "random"])):
        for path in paths:
            if _same_file(report, path):
                raise UsageError(f"--report {report} is {role} of this run ({path}); choose another path")
    if report.exists() and any(_same_file(report, s) for s in _external_files(models[0])):
        raise UsageError(f"--report {report} is external data of {models[0]}; choose another path")


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == Path(b).resolve():
        return True
    return a.exists() and Path(b).exists() and os.path.samefile(a, b)


def _external_files(model: Path) -> set[Path]:
    """Files a model's tensors name as external data (read without loading them)."""
    import onnx

    from onnxslim.ir.weightless import iter_tensors

    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception:  # noqa: BLE001 - an unreadable model is reported by the run itself
        return set()
    return {model.parent / e.value for t in iter_tensors(proto.graph) for e in t.external_data if e.key == "location"}


def _progress(ctx: click.Context):
    if ctx.obj["quiet"] or not sys.stderr.isatty():
        return None
    return lambda message: click.echo(f"... {message}", err=True)


def _tracker(ctx: click.Context):
    """A progress bar on stderr for long iterations, only when a person is watching."""
    if ctx.obj["quiet"] or not sys.stderr.isatty():
        from onnxslim.core.context import untracked

        return untracked

    def track(items, label, total):
        with click.progressbar(items, length=total, label=label, file=sys.stderr) as bar:
            yield from bar

    return track


def _finish(ctx: click.Context, outcome: api.Outcome, report: Path | None, render) -> None:
    from onnxslim.report import write_json

    if report is not None:
        write_json(outcome.report, report)
    if not ctx.obj["quiet"]:
        click.echo(render())
    if outcome.exit_code == EXIT_PARITY:
        parity, metric = outcome.report.get("parity", {}), outcome.report.get("metric") or {}
        failures = ([metric["failure"]] if metric.get("failure") else []) + (
            parity.get("failures", []) if parity.get("decides", True) else [])
        raise ParityError("parity failed: " + "; ".join(failures[:3])
                          + ("" if outcome.output else " (nothing written; --force writes anyway)"))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors and the contract's exit codes, never a traceback."""
    verbose = any(a in ("-v", "-vv", "--verbose") for a in (argv or sys.argv[1:]))
    # Read by numpy when it is imported, which the commands do. numpy asks the kernel for
    # transparent huge pages on every array of 4 MB or more; where the kernel then compacts
    # memory at the page fault (THP defrag "madvise", the kernel's default), that costs more than
    # huge pages save on weights that are written once and read once. 100 M-parameter model,
    # default pipeline: fold-affine's products 0.55 -> 0.2 s of CPU, the run 3.5-4.5 -> 3.0-3.6 s
    # (user + system) on the 2-core benchmark machine. The user's own setting wins.
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
    try:
        cli.main(args=argv, prog_name="onnxslim", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:  # click's form of KeyboardInterrupt
        _fail("interrupted", EXIT_INTERRUPTED)
    except click.UsageError as exc:
        _fail(exc.format_message().replace("\n", " "), EXIT_USAGE)
    except click.ClickException as exc:
        _fail(exc.format_message().replace("\n", " "), EXIT_USAGE)
    except ParityError as exc:
        _fail(str(exc), EXIT_PARITY)
    except UsageError as exc:
        _fail(str(exc), EXIT_USAGE)
    except OnnxSlimError as exc:
        _fail(str(exc), EXIT_INTERNAL)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        if verbose:
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (run with -v for the traceback)", EXIT_INTERNAL)


def _fail(message: str, code: int) -> None:
    first = message.strip().splitlines()[0] if message.strip() else "error"
    click.echo(f"onnxslim: error: {first}", err=True)
    sys.exit(code)
