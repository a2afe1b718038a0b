"""Run every corpus model through the onnxslim CLI and record what happened (issue 12's runner).

Usage::

    python models/corpus_run.py [--families node,sklearn,arch,real] [--sample ci]
        [--commands optimize,quantize,prune-weights,prune-channels,svd,inspect,verify,dry-run]
        [--jobs 2] [--timeout 300] [--json out.json] [--table out.txt] [--only SUBSTR]

Each (model, command) runs the real CLI entry point in-process, ``onnxslim.cli.main(argv)``,
in a process forked for that task from a parent that has already imported onnxslim and
onnxruntime: a fork costs milliseconds where a fresh interpreter costs about a second, a crash or
a leak dies with its task, and a task past ``--timeout`` is killed and recorded as ``timeout``.
Its stdout and stderr (file descriptors, so onnxruntime's own log lines too) go to a file.

Commands (``--threads 1`` wherever the CLI takes it; ``-o`` and ``--report`` into a temp dir):

``optimize``        the default pipeline, with ``--data <model>/test_data_set_0`` when it exists
``quantize`` ...    ``--passes <pass> --calibration-data random`` for each lossy pass
``inspect``         ``inspect model.onnx``
``verify``          ``verify model.onnx model.onnx``
``dry-run``         ``optimize --dry-run`` (anything it writes is recorded as a defect)

Recorded per task: the exit code (0/1/2/3, ``timeout``, ``crash`` for a dead process), seconds,
the first stderr line and the ``onnxslim: error:`` line, whether the files of the model folder
changed (SHA-256 before and after, new files included), and for an exit-0 ``optimize``: whether
the output loads in onnxruntime and matches the expected outputs of test_data_set_0 within the
project's ``exact`` rule (max_abs <= 1e-5 + 1e-4 * max|expected|, per output; non-float outputs
equal). Where the original model itself does not match its expected outputs in onnxruntime (an
onnxruntime gap, not ours), the output is compared with the original's onnxruntime outputs
instead, and the record says so.

The JSON is stable: results sorted by model and command, paths written relative to the corpus
root, and seconds kept apart under ``seconds``, so two runs diff cleanly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing.connection
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus  # noqa: E402

COMMANDS = ("optimize", "quantize", "prune-weights", "prune-channels", "svd", "inspect", "verify", "dry-run")
LOSSY = ("quantize", "prune-weights", "prune-channels", "svd")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# ---------------------------------------------------------------- one task, in the forked child


def command_argv(command: str, model_dir: Path, tmp: Path, model_data: bool = True) -> list[str]:
    model = str(model_dir / "model.onnx")
    out, report = str(tmp / "out.onnx"), str(tmp / "report.json")
    data = model_dir / "test_data_set_0"
    data_args = ["--data", str(data)] if model_data and data.is_dir() else []
    if command == "optimize":
        return ["optimize", model, "-o", out, "--report", report, "--threads", "1", *data_args]
    if command in LOSSY:
        return ["optimize", model, "-o", out, "--report", report, "--threads", "1",
                "--passes", command, "--calibration-data", "random"]
    if command == "inspect":
        return ["inspect", model]
    if command == "verify":
        return ["verify", model, model, "--threads", "1"]
    if command == "dry-run":
        return ["optimize", model, "-o", out, "--dry-run", "--threads", "1", *data_args]
    raise ValueError(f"unknown command {command!r}")


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _run_cli(argv: list[str]) -> int:
    from onnxslim.cli import main

    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def run_task(model_dir: Path, command: str, tmp: Path, model_data: bool = True) -> dict:
    """Run one (model, command) in this process; stdout/stderr must already go to files."""
    before = folder_digest(model_dir)
    code = _run_cli(command_argv(command, model_dir, tmp, model_data))
    record: dict = {"exit": code}
    after = folder_digest(model_dir)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    if changed:
        record["changed_inputs"] = changed
    if command == "dry-run" and any(tmp.iterdir()):
        record["dry_run_wrote"] = sorted(p.name for p in tmp.iterdir())
    if command == "optimize" and code == 0:
        record["check"] = check_output(model_dir, tmp / "out.onnx")
    return record


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _ort_run(path: Path, feeds: dict):
    """(outputs by name, None) or (None, one-line error)."""
    try:
        session = _session(path)
        names = [o.name for o in session.get_outputs()]
        wanted = {i.name for i in session.get_inputs()}
        values = session.run(names, {k: v for k, v in feeds.items() if k in wanted})
        return dict(zip(names, values)), None
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types; the message is the record
        return None, _first_line(f"{type(exc).__name__}: {exc}")


def check_output(model_dir: Path, output: Path) -> dict:
    """Does the optimized model load in ORT and compute the expected outputs (``exact``)?"""
    import onnx

    if not output.is_file():
        return {"ort_loads": False, "error": "exit 0 but no output file"}
    try:
        _session(output)
        loads = True
    except Exception as exc:  # noqa: BLE001
        try:
            _session(model_dir / "model.onnx")
        except Exception as original_exc:  # noqa: BLE001 - neither loads: ORT's limit, not a wrong output
            return {"compared": "ORT loads neither the original nor the output: "
                                + _first_line(f"{type(original_exc).__name__}: {original_exc}")}
        return {"ort_loads": False, "error": _first_line(f"{type(exc).__name__}: {exc}")}
    original = onnx.load(str(model_dir / "model.onnx"), load_external_data=False)
    test = corpus.read_test_data(model_dir, original)
    if test is None:
        return {"ort_loads": loads, "compared": "no test data"}
    feeds, expected = test
    reference, ref_error = _ort_run(model_dir / "model.onnx", feeds)
    result: dict = {"ort_loads": loads}
    if reference is not None and compare(reference, expected):
        expected, result["reference"] = reference, "original in ORT (the original misses its expected outputs)"
    elif reference is None:
        result["reference"] = f"expected outputs (the original does not run in ORT: {ref_error})"
    got, error = _ort_run(output, feeds)
    if got is None and reference is None:
        result["compared"] = f"ORT runs neither the original nor the output on the test data: {ref_error}"
        return result
    if got is None:
        result.update(matches=False, error=error)
        return result
    mismatched = compare(got, expected)
    result["matches"] = not mismatched
    if mismatched:
        result["error"] = "; ".join(mismatched[:3])
    return result


def compare(got: dict, expected: dict) -> list[str]:
    """Per-output differences beyond ``exact``; an empty list when every expected output matches."""
    from onnxslim.runtime.tolerance import EXACT_ATOL, EXACT_RTOL

    problems = []
    for name, want in expected.items():
        if name not in got:
            problems.append(f"{name}: missing")
            continue
        why = _differs(got[name], want, EXACT_ATOL, EXACT_RTOL)
        if why:
            problems.append(f"{name}: {why}")
    return problems


def _differs(a, b, atol: float, rtol: float) -> str | None:
    if isinstance(b, dict) or isinstance(a, dict):
        if not isinstance(a, dict) or not isinstance(b, dict) or set(a) != set(b):
            return "map keys differ"
        return next((w for k in b if (w := _differs(a[k], b[k], atol, rtol))), None)
    if isinstance(b, list) or isinstance(a, list):
        if not isinstance(a, list) or not isinstance(b, list) or len(a) != len(b):
            return "sequence lengths differ"
        return next((w for x, y in zip(a, b) if (w := _differs(x, y, atol, rtol))), None)
    if a is None or b is None:
        return None if a is None and b is None else "optional presence differs"
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return f"shape {a.shape} != {b.shape}"
    if b.dtype.kind not in "fc" and str(b.dtype) not in ("bfloat16",) and not str(b.dtype).startswith("float"):
        return None if np.array_equal(a, b) else f"values differ ({b.dtype})"
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if not np.array_equal(np.isnan(a64), np.isnan(b64)) or not np.array_equal(a64[np.isinf(b64)], b64[np.isinf(b64)]):
        return "nan/inf positions differ"
    finite = np.isfinite(b64) & np.isfinite(a64)
    if not finite.any():
        return None
    err = float(np.max(np.abs(a64[finite] - b64[finite])))
    bound = atol + rtol * float(np.max(np.abs(b64[finite])))
    return None if err <= bound else f"max_abs {err:.3g} > {bound:.3g} ({b.dtype})"


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in _ANSI.sub("", text).splitlines() if ln.strip()]
    return lines[0][:300] if lines else ""


# ---------------------------------------------------------------- the parent: fork, watch, kill


def _child(model_dir: Path, command: str, tmp: Path, log: Path, conn, memory_gb: float, model_data: bool) -> None:
    import resource

    if memory_gb > 0:
        limit = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for fd, suffix in ((1, ".out"), (2, ".err")):
        os.dup2(os.open(f"{log}{suffix}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
    try:
        record = run_task(model_dir, command, tmp, model_data)
    except BaseException as exc:  # noqa: BLE001 - a runner bug must not look like an onnxslim one
        record = {"exit": "crash", "runner_error": _first_line(f"{type(exc).__name__}: {exc}")}
    sys.stdout.flush()
    sys.stderr.flush()
    conn.send(record)
    conn.close()
    os._exit(0)


def run(model_dirs: list[Path], commands=COMMANDS, jobs: int = 2, timeout: float = 300,
        memory_gb: float = 8.0, progress=None, lossy_models: set[str] | None = None,
        model_data: str = "auto") -> dict:
    """Run every (model, command); returns {"results": {model: {command: record}}, "seconds", "model_data"}.

    ``lossy_models`` limits the lossy commands to those model ids ("family/name"). ``model_data``:
    ``pb`` passes each model's test_data_set_0 as ``--data``, ``none`` never does, ``auto`` does
    when this onnxslim reads ONNX test-data folders (probed once with a dry run).
    """
    import onnxslim.cli  # noqa: F401 - imported once here so every fork starts warm

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    if model_data == "auto":
        model_data = "pb" if _reads_test_data_folders(model_dirs, timeout, memory_gb) else "none"
    tasks = [(d, c) for d in model_dirs for c in commands
             if c not in LOSSY or lossy_models is None or model_id(d) in lossy_models]
    results: dict = {}
    seconds: dict = {}

    def record(model_dir, command, rec, took, done, total):
        key = model_id(model_dir)
        results.setdefault(key, {})[command] = rec
        seconds[f"{key} {command}"] = round(took, 2)
        if progress:
            progress(done, total, key, command, rec)

    _pool(tasks, jobs, timeout, memory_gb, model_data == "pb", record)
    return {"results": results, "seconds": seconds, "model_data": model_data}


def _reads_test_data_folders(model_dirs: list[Path], timeout: float, memory_gb: float) -> bool:
    with_data = [d for d in model_dirs if (d / "test_data_set_0").is_dir()]
    if not with_data:
        return False
    probe = next((d for d in with_data if d.name == "test_abs"), with_data[0])
    got: list = []
    _pool([(probe, "dry-run")], 1, timeout, memory_gb, True, lambda *a: got.append(a[2]))
    return got[0]["exit"] == 0


def _pool(tasks, jobs: int, timeout: float, memory_gb: float, model_data: bool, on_done) -> None:
    """Fork one process per task, at most ``jobs`` at a time; kill a task past ``timeout``."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    tasks = list(tasks)
    total, done = len(tasks), 0
    running: dict = {}  # connection -> (process, model_dir, command, tmp, log, start)
    workroot = Path(tempfile.mkdtemp(prefix="corpus-run-"))
    try:
        while tasks or running:
            while tasks and len(running) < jobs:
                model_dir, command = tasks.pop(0)
                tmp = Path(tempfile.mkdtemp(dir=workroot))
                log = workroot / tmp.name
                parent_end, child_end = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child,
                                   args=(model_dir, command, tmp, log, child_end, memory_gb, model_data))
                proc.start()
                child_end.close()
                running[parent_end] = (proc, model_dir, command, tmp, log, time.monotonic())
            ready = multiprocessing.connection.wait(list(running), timeout=1.0)
            now = time.monotonic()
            for conn in list(running):
                proc, model_dir, command, tmp, log, start = running[conn]
                rec = None
                if conn in ready:
                    try:
                        rec = conn.recv()
                    except EOFError:
                        proc.join()
                        rec = {"exit": "crash", "signal": -proc.exitcode if proc.exitcode else None}
                elif now - start > timeout:
                    os.kill(proc.pid, signal.SIGKILL)
                    rec = {"exit": "timeout"}
                if rec is None:
                    continue
                proc.join()
                conn.close()
                del running[conn]
                rec.update(_lines(log, model_dir, tmp))
                shutil.rmtree(tmp, ignore_errors=True)
                done += 1
                on_done(model_dir, command, rec, now - start, done, total)
    finally:
        for proc, *_ in running.values():
            os.kill(proc.pid, signal.SIGKILL)
        shutil.rmtree(workroot, ignore_errors=True)


def model_id(model_dir: Path) -> str:
    return f"{model_dir.parent.name}/{model_dir.name}"


def _lines(log: Path, model_dir: Path, tmp: Path) -> dict:
    """The first stderr line and the ``onnxslim: error:`` line, paths replaced for stable diffs."""
    text = Path(f"{log}.err").read_text(errors="replace") if Path(f"{log}.err").exists() else ""
    text = _ANSI.sub("", text).replace(str(tmp), "<tmp>").replace(str(model_dir), "<model>")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    error = next((ln for ln in lines if ln.startswith("onnxslim: error:")), "")
    return {"first_line": (lines[0] if lines else "")[:300], "error": error[:300]}


# ---------------------------------------------------------------- summaries


def outcome(record: dict) -> str:
    """A short cell for the table: the exit code, '!' wrong output, '*' changed inputs."""
    cell = str(record["exit"])
    check = record.get("check") or {}
    if check.get("matches") is False or check.get("ort_loads") is False:
        cell += "!"
    if record.get("changed_inputs") or record.get("dry_run_wrote"):
        cell += "*"
    return cell


def counts(results: dict) -> dict:
    """Per command: exits by code, wrong outputs, outputs ORT cannot load, changed inputs."""
    table: dict = {}
    for by_command in results.values():
        for command, record in by_command.items():
            row = table.setdefault(command, Counter())
            row[f"exit {record['exit']}"] += 1
            check = record.get("check") or {}
            row["wrong outputs"] += check.get("matches") is False
            row["ORT cannot load output"] += check.get("ort_loads") is False
            row["changed inputs"] += bool(record.get("changed_inputs"))
            row["dry-run wrote"] += bool(record.get("dry_run_wrote"))
    return table


def exit3_groups(results: dict) -> list[tuple[str, int, str]]:
    """Distinct exit-3 lines (digits folded to N), with their count and one example task."""
    groups: dict[str, list[str]] = {}
    for model, by_command in sorted(results.items()):
        for command, record in sorted(by_command.items()):
            if record["exit"] == 3:
                key = re.sub(r"\d+", "N", record.get("error") or record.get("first_line") or "(no message)")
                groups.setdefault(key, []).append(f"{model} {command}")
    return sorted(((k, len(v), v[0]) for k, v in groups.items()), key=lambda g: (-g[1], g[0]))


def failures(results: dict, known: set | frozenset = frozenset()) -> list[str]:
    """Tasks that break the corpus targets (exit 3, timeout, crash, wrong output, changed input)."""
    bad = []
    for model, by_command in sorted(results.items()):
        for command, record in sorted(by_command.items()):
            check = record.get("check") or {}
            why = []
            if record["exit"] in (3, "timeout", "crash"):
                why.append(f"exit {record['exit']}")
            if check.get("matches") is False or check.get("ort_loads") is False:
                why.append("wrong output: " + check.get("error", ""))
            if record.get("changed_inputs"):
                why.append("changed inputs " + ",".join(record["changed_inputs"]))
            if why and (model, command) not in known:
                bad.append(f"{model} {command}: {'; '.join(why)}: {record.get('error') or record.get('first_line')}")
    return bad


def write_table(results: dict, commands, path: Path) -> None:
    width = max([len(m) for m in results] + [5])
    lines = ["model".ljust(width) + "".join(f" {c:>14}" for c in commands)]
    for model, by_command in sorted(results.items()):
        cells = [outcome(by_command[c]) if c in by_command else "-" for c in commands]
        lines.append(model.ljust(width) + "".join(f" {c:>14}" for c in cells))
    lines.append("")
    lines.append("cells: exit code (0/1/2/3/timeout/crash); ! wrong or unloadable output; * changed input files")
    path.write_text("\n".join(lines) + "\n")


def format_summary(results: dict, commands, top: int = 30) -> str:
    table = counts(results)
    keys = ["exit 0", "exit 1", "exit 2", "exit 3", "exit timeout", "exit crash",
            "wrong outputs", "ORT cannot load output", "changed inputs", "dry-run wrote"]
    lines = [f"{'command':<16}" + "".join(f"{k.replace('exit ', ''):>9}" if k.startswith("exit") else f" {k}"
                                          for k in keys)]
    lines[0] = f"{'command':<16}{'0':>7}{'1':>7}{'2':>7}{'3':>7}{'timeout':>9}{'crash':>7}{'wrong':>7}" \
               f"{'no-load':>9}{'changed':>9}{'dry-wrote':>10}"
    for command in commands:
        row = table.get(command, Counter())
        lines.append(f"{command:<16}" + "".join(f"{row[k]:>{w}}" for k, w in zip(keys, (7, 7, 7, 7, 9, 7, 7, 9, 9, 10))))
    groups = exit3_groups(results)
    lines.append(f"\nexit-3 first lines ({sum(g[1] for g in groups)} tasks, {len(groups)} distinct; top {top}):")
    for key, count, example in groups[:top]:
        lines.append(f"{count:>5}  {key}   [e.g. {example}]")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", help="comma-separated family folders (default: all present)")
    parser.add_argument("--sample", choices=("ci",))
    parser.add_argument("--commands", default=",".join(COMMANDS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--memory-gb", type=float, default=8.0, help="address-space limit per task (0: none)")
    parser.add_argument("--model-data", choices=("auto", "pb", "none"), default="auto",
                        help="pass test_data_set_0 as --data to optimize/dry-run (auto: when onnxslim reads it)")
    parser.add_argument("--only", help="only models whose family/name contains this")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--table", type=Path, help="write the model x command table here")
    parser.add_argument("--top", type=int, default=30, help="exit-3 groups to print")
    args = parser.parse_args(argv)
    commands = tuple(c for c in args.commands.split(",") if c)
    unknown = [c for c in commands if c not in COMMANDS]
    if unknown:
        parser.error(f"unknown command {unknown[0]!r}; choose from {','.join(COMMANDS)}")
    root = corpus.corpus_root()
    families = tuple(args.families.split(",")) if args.families else None
    dirs = [d for d in corpus.model_dirs(root, families, args.sample) if not args.only or args.only in model_id(d)]
    if not dirs:
        print(f"corpus_run: no models under {root} (build them: python models/corpus.py build)", file=sys.stderr)
        return 2

    def progress(done, total, model, command, record):
        if record["exit"] not in (0, 1, 2) or done % 100 == 0:
            print(f"[{done}/{total}] {model} {command}: {outcome(record)} {record.get('error', '')}",
                  file=sys.stderr, flush=True)

    started = time.monotonic()
    lossy = corpus.ci_lossy_models() if args.sample == "ci" else None
    doc = run(dirs, commands, args.jobs, args.timeout, args.memory_gb, progress, lossy, args.model_data)
    doc = {"corpus": str(root), "commands": list(commands), **doc}
    table = args.table or (args.json.with_suffix(".txt") if args.json else root / "last-run.txt")
    write_table(doc["results"], commands, table)
    out = args.json or root / "last-run.json"
    out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(format_summary(doc["results"], commands, args.top))
    print(f"\n{len(dirs)} models, {time.monotonic() - started:.0f} s, optimize --data: "
          f"{'test_data_set_0' if doc['model_data'] == 'pb' else 'none (generated inputs)'}; table {table}, json {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
