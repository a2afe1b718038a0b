"""Test data and the ORT-vs-torch check of one exported corpus model.

The stored outputs are torch's, in the dtype the graph declares (a legacy fp16 export can end
in fp32). A mismatch is an output whose largest absolute error exceeds ``t + t * max|torch|``
with t = 1e-3 for fp32 and 2e-2 for fp16, or whose shape differs; it is reported, never fatal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def as_declared(model: onnx.ModelProto, expected: list[np.ndarray]) -> tuple[list[np.ndarray], str]:
    """Expected outputs in the dtype the graph declares (a legacy fp16 export can end in fp32)."""
    cast = []
    for k, (value, array) in enumerate(zip(model.graph.output, expected)):
        elem = value.type.tensor_type.elem_type
        if not elem:
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
        if array.dtype != dtype:
            expected[k] = array.astype(dtype)
            cast.append(f"{value.name} {array.dtype}->{dtype}")
    if not cast:
        return expected, ""
    return expected, "the graph declares other output types than torch returns (stored cast): " + ", ".join(cast)


def store_and_check(folder: Path, model, graph_names, test, expected, fp16: bool):
    """Write input_k.pb / output_k.pb and compare ORT with torch on them."""
    data = folder / "test_data_set_0"
    for old in data.glob("*.pb"):
        old.unlink()
    feeds = {}
    for k, name in enumerate(graph_names):
        feeds[name] = test[name].cpu().numpy()
        (data / f"input_{k}.pb").write_bytes(numpy_helper.from_array(feeds[name], name).SerializeToString())
    expected, cast_note = as_declared(model, expected)
    output_names = [o.name for o in model.graph.output]
    for k, array in enumerate(expected):
        name = output_names[k] if k < len(output_names) else f"output_{k}"
        (data / f"output_{k}.pb").write_bytes(numpy_helper.from_array(array, name).SerializeToString())
    return compare(folder, feeds, expected, fp16), cast_note


def compare(folder: Path, feeds: dict, expected: list[np.ndarray], fp16: bool) -> dict:
    import onnxruntime as ort

    ort.set_default_logger_severity(4)  # a failure at the test size is handled, not logged in red
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    got = session.run(None, feeds)
    if len(got) != len(expected):
        return {"match": False, "max_abs_error": None,
                "mismatch": f"ORT gives {len(got)} outputs, torch {len(expected)}"}
    errors, bad = [], []
    for name, ort_out, ref in zip([o.name for o in session.get_outputs()], got, expected):
        if ort_out.shape != ref.shape:
            bad.append(f"{name}: shape {list(ort_out.shape)} vs torch {list(ref.shape)}")
            errors.append(float("inf"))
            continue
        if ref.size == 0:
            errors.append(0.0)
            continue
        ref64, out64 = ref.astype(np.float64), ort_out.astype(np.float64)
        err = float(np.max(np.abs(out64 - ref64)))
        scale = float(np.max(np.abs(ref64)))
        rel = 2e-2 if fp16 else 1e-3
        errors.append(err)
        if not err <= rel + rel * scale:
            bad.append(f"{name}: max abs {err:.3g} (max |torch| {scale:.3g})")
    result = {"match": not bad, "max_abs_error": max(errors), "per_output": errors}
    if bad:
        result["mismatch"] = "; ".join(bad)
    return result
