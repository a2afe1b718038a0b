"""Corpus part 2 (issue 12): architectures exported from PyTorch with random weights.

    python models/corpus_arch.py --out /work/corpus-cache/arch [--only a,b] [--list] [--force]

Every model is built from a ``transformers`` config or a hand-written torch module at a tiny
size (hidden 32-64, 2 layers, small vocabularies, 32-64 px images), with random weights and no
download (``HF_HUB_OFFLINE=1``). Each one becomes a folder::

    DIR/<name>/model.onnx            (+ model.onnx.data when the model keeps external data)
    DIR/<name>/test_data_set_0/input_<k>.pb   the graph inputs, in graph-input order
    DIR/<name>/test_data_set_0/output_<k>.pb  the torch module's outputs for them
    DIR/<name>/meta.json             family, source, exporter, opset, tags, ORT-vs-torch error

The folder is written under a temporary name and renamed into place, so it is either complete
or absent; an existing folder is kept unless ``--force``. An export that fails is reported in
one line and skipped. Each export is checked: ONNX Runtime on the stored inputs against the
torch outputs; the largest absolute error is stored in meta.json and a mismatch (above
``1e-3 + 1e-3 * max|torch|`` for fp32, ``2e-2 + 2e-2 * max|torch|`` for fp16) is noted there,
the model is kept.

Needs, beside the project: ``pip install torch==2.13.0 transformers==5.25.0 onnxscript==0.7.2``.
The model list lives in ``models/corpus_arch/`` (text and audio, vision, hand-written).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import sys
import time
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().with_suffix("")))

import onnx  # noqa: E402
import torch  # noqa: E402

from arch_check import store_and_check  # noqa: E402
from arch_spec import Spec, realistic_norms  # noqa: E402

DATA_FILE = "model.onnx.data"
IR3_OPSET = 8


def all_specs() -> list[Spec]:
    import arch_handwritten
    import arch_text
    import arch_vision

    specs = arch_text.specs() + arch_vision.specs() + arch_handwritten.specs()
    names = [s.name for s in specs]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"duplicate corpus names: {sorted(duplicates)}")
    return specs


# ---------------------------------------------------------------- export


def _cast_inputs(inputs, fp16: bool):
    if not fp16:
        return inputs
    return type(inputs)((k, v.half() if v.is_floating_point() else v) for k, v in inputs.items())


def _export(spec: Spec, module: torch.nn.Module, example) -> onnx.ModelProto:
    args = tuple(example.values())
    names = list(example)
    dynamic = spec.dynamic or None
    if spec.exporter == "legacy":
        buffer = io.BytesIO()
        torch.onnx.export(
            module, args, buffer, dynamo=False, opset_version=spec.opset,
            input_names=names, output_names=spec.outputs, dynamic_axes=dynamic,
            do_constant_folding=True,
        )
        return onnx.load_from_string(buffer.getvalue())
    program = torch.onnx.export(
        module, args, dynamo=True, opset_version=spec.opset, input_names=names,
        output_names=spec.outputs, dynamic_axes=dynamic, verbose=False, external_data=False,
    )
    return program.model_proto


@contextlib.contextmanager
def _quiet():
    """Silence the exporters, whose C++ side prints graphs straight to file descriptors 1 and 2."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _set_neg1_dims(model: onnx.ModelProto) -> None:
    """Write every symbolic input dim as dim_value -1, as older exporters did."""
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") or not dim.HasField("dim_value"):
                dim.Clear()
                dim.dim_value = -1


def _to_ir3(model: onnx.ModelProto) -> onnx.ModelProto:
    """Opset 8 by onnx.version_converter, then IR 3: every initializer also a graph input."""
    from onnx import version_converter

    old = version_converter.convert_version(model, IR3_OPSET)
    graph = old.graph
    listed = {v.name for v in graph.input}
    for init in graph.initializer:
        if init.name not in listed:
            graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, init.dims))
    old.ir_version = 3
    onnx.checker.check_model(old)
    return old


def _save(model: onnx.ModelProto, folder: Path, external: bool) -> None:
    path = folder / "model.onnx"
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=DATA_FILE, size_threshold=512)
        if not (folder / DATA_FILE).exists():
            raise RuntimeError("no tensor was large enough to go to external data")
        (folder / DATA_FILE).chmod(0o644)
    else:
        onnx.save_model(model, str(path))


def _old_opset_attention(module: torch.nn.Module, opset: int) -> str:
    """Below opset 14 the legacy exporter has no scaled_dot_product_attention: use eager attention."""
    if opset >= 14:
        return ""
    from transformers import PreTrainedModel

    for sub in module.modules():
        if isinstance(sub, PreTrainedModel):
            if getattr(sub.config, "_attn_implementation", None) in (None, "eager"):
                return ""
            sub.set_attn_implementation("eager")
            return "eager attention (sdpa needs opset 14)"
    return ""


# ---------------------------------------------------------------- check


def _flatten(outputs) -> list[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    flat = []
    for item in outputs:
        flat.extend(_flatten(item))
    return flat


def _graph_inputs(model: onnx.ModelProto) -> list[str]:
    initializers = {i.name for i in model.graph.initializer}
    return [v.name for v in model.graph.input if v.name not in initializers]


# ---------------------------------------------------------------- one model


def build_one(spec: Spec, out: Path) -> dict:
    """Export, post-process, store test data, check with ORT; return meta. Raises on failure."""
    torch.manual_seed(0)
    start = time.perf_counter()
    module = spec.build().eval()
    notes = _old_opset_attention(module, spec.opset)
    realistic_norms(module, spec.inputs(*spec.export_at))
    if spec.fp16:
        module = module.half()
    example = _cast_inputs(spec.inputs(*spec.export_at), spec.fp16)
    test = _cast_inputs(spec.inputs(*spec.test_at), spec.fp16)
    with torch.no_grad(), _quiet():
        model = _export(spec, module, example)
        expected = [t.detach().cpu().numpy() for t in _flatten(module(*test.values()))]
    export_seconds = time.perf_counter() - start
    if spec.neg1_dims:
        _set_neg1_dims(model)
    if spec.ir3:
        model = _to_ir3(model)
    folder = out / f".tmp-{spec.name}-{os.getpid()}"
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "test_data_set_0").mkdir(parents=True)
    try:
        _save(model, folder, spec.external)
        extra_tags = []
        graph_names = _graph_inputs(model)
        if sorted(graph_names) != sorted(test):
            raise RuntimeError(f"graph inputs {graph_names} are not the module's {list(test)}")
        try:
            check, cast_note = store_and_check(folder, model, graph_names, test, expected, spec.fp16)
        except Exception as exc:  # noqa: BLE001 - ORT's errors have no common type
            if spec.test_at == spec.export_at:
                raise
            # the export runs only at the size it was traced at: keep it, test it there
            test = _cast_inputs(spec.inputs(*spec.export_at), spec.fp16)
            with torch.no_grad():
                expected = [t.detach().cpu().numpy() for t in _flatten(module(*test.values()))]
            check, cast_note = store_and_check(folder, model, graph_names, test, expected, spec.fp16)
            extra_tags.append("runs_at_export_size_only")
            notes += (" " if notes else "") + (
                f"ORT fails at batch/size {spec.test_at} ({_one_line(exc)[:160]}), so the test data is at the "
                f"export's {spec.export_at}")
        notes = " ".join(n for n in (notes, cast_note) if n)
        meta = _meta(spec, model, check, export_seconds, folder, notes, extra_tags)
        (folder / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        target = out / spec.name
        if target.exists():
            trash = out / f".old-{spec.name}-{os.getpid()}"
            target.rename(trash)
            shutil.rmtree(trash)
        folder.rename(target)
        return meta
    finally:
        if folder.exists():
            shutil.rmtree(folder)


def _meta(spec: Spec, model: onnx.ModelProto, check: dict, seconds: float, folder: Path, extra: str,
          extra_tags: list[str]) -> dict:
    import transformers

    tags = list(spec.tags) + extra_tags
    for flag, tag in ((spec.fp16, "fp16"), (spec.external, "external"), (spec.ir3, "ir3"),
                      (spec.neg1_dims, "neg1_dims"), (bool(spec.dynamic), "dynamic")):
        if flag and tag not in tags:
            tags.append(tag)
    if not spec.dynamic or not any(0 in a for a in spec.dynamic.values()):
        tags.append("fixed_batch")
    notes = " ".join(n for n in (spec.notes, extra) if n)
    if not check["match"]:
        notes = (notes + " " if notes else "") + "ORT does not match torch: " + check.get("mismatch", "")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "family": "arch", "name": spec.name, "source": spec.source, "exporter": spec.exporter,
        "opset": opset, "export_opset": spec.opset, "ir_version": model.ir_version,
        "tags": tags, "notes": notes,
        "ort_match": check["match"], "ort_max_abs_error": check["max_abs_error"],
        "ort_max_abs_error_per_output": check.get("per_output"),
        "inputs_shapes": {n: list(a.dims) for n, a in _stored_inputs(folder)},
        "file_bytes": sum(p.stat().st_size for p in folder.glob("model.onnx*")),
        "export_seconds": round(seconds, 2),
        "torch": torch.__version__, "transformers": transformers.__version__, "onnx": onnx.__version__,
    }


def _stored_inputs(folder: Path):
    for path in sorted((folder / "test_data_set_0").glob("input_*.pb"), key=lambda p: int(p.stem[6:])):
        tensor = onnx.TensorProto()
        tensor.ParseFromString(path.read_bytes())
        yield tensor.name, tensor


# ---------------------------------------------------------------- driver


def build(out: Path, only: list[str] | None = None, force: bool = False, log=print) -> dict:
    specs = all_specs()
    if only:
        unknown = sorted(set(only) - {s.name for s in specs})
        if unknown:
            raise ValueError(f"unknown model names: {', '.join(unknown)}")
        specs = [s for s in specs if s.name in only]
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    summary = {"built": [], "skipped": [], "failed": {}, "mismatch": {}}
    start = time.perf_counter()
    for spec in specs:
        if (out / spec.name).exists() and not force:
            summary["skipped"].append(spec.name)
            continue
        t0 = time.perf_counter()
        try:
            meta = build_one(spec, out)
        except Exception as exc:  # one model's failure must not stop the corpus
            reason = _one_line(exc)
            summary["failed"][spec.name] = reason
            log(f"FAIL  {spec.name}: {reason}")
            logging.getLogger(__name__).debug("%s", traceback.format_exc())
            continue
        summary["built"].append(spec.name)
        if not meta["ort_match"]:
            summary["mismatch"][spec.name] = meta["notes"]
        log(f"ok    {spec.name:32s} {spec.exporter:6s} op{meta['opset']:<3d} err {_fmt(meta['ort_max_abs_error'])} "
            f"{meta['file_bytes'] / 1e6:6.2f} MB {time.perf_counter() - t0:5.1f}s {','.join(meta['tags'])}")
    summary["seconds"] = round(time.perf_counter() - start, 1)
    return summary


def _remove_stale(out: Path) -> None:
    """Temporary folders left by a build that was killed (their process is gone)."""
    for folder in list(out.glob(".tmp-*")) + list(out.glob(".old-*")):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)


def _fmt(err) -> str:
    return "   n/a " if err is None else f"{err:7.1e}"


def _one_line(exc: BaseException) -> str:
    while exc.__cause__ is not None:  # the exporters wrap the reason that matters
        exc = exc.__cause__
    text = f"{type(exc).__name__}: {exc}".strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (" ".join(lines[:2]))[:300]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="corpus folder (one sub-folder per model)")
    parser.add_argument("--only", help="comma-separated model names")
    parser.add_argument("--list", action="store_true", help="print the model names and exit")
    parser.add_argument("--force", action="store_true", help="rebuild folders that exist")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(1)
    if args.list:
        for spec in all_specs():
            extra = [t for t, f in (("fp16", spec.fp16), ("external", spec.external), ("ir3", spec.ir3),
                                    ("neg1_dims", spec.neg1_dims)) if f]
            print(f"{spec.name:32s} {spec.exporter:6s} op{spec.opset:<3d} {','.join(spec.tags + extra)}")
        return 0
    if args.out is None:
        parser.error("--out is required unless --list")
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    try:
        summary = build(args.out, only, args.force)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\nbuilt {len(summary['built'])}, skipped {len(summary['skipped'])} (exist), "
          f"failed {len(summary['failed'])}, ORT mismatch {len(summary['mismatch'])}, {summary['seconds']} s")
    for name, reason in summary["failed"].items():
        print(f"  failed   {name}: {reason}")
    for name, reason in summary["mismatch"].items():
        print(f"  mismatch {name}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
