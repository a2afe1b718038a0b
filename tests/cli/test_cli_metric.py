"""--metric, --max-drop, the held-back calibration split and fp16 outputs, as users run them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "docs" / "report.schema.json").read_text())
MLP, EVAL = REPO / "models" / "mlp.onnx", REPO / "models" / "mlp_eval.npz"

USER_METRIC = '''
def accuracy(outputs, data):
    return float((outputs["logits"].argmax(1) == data["label"]).mean())

def broken(outputs, data):
    raise KeyError("score")
'''


def onnxslim_cli(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onnxslim", *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """mlp.onnx, a copy whose head is scaled (fails exact, keeps most decisions), data, a metric module."""
    root = tmp_path_factory.mktemp("metric")
    model = onnx.load(MLP)
    onnx.save(model, root / "a.onnx")
    for tensor in model.graph.initializer:
        if tensor.name == "fc3.weight":
            weight = numpy_helper.to_array(tensor)
            noise = np.random.default_rng(0).standard_normal(weight.shape).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(weight * 1.05 + 0.8 * noise * weight.std(), tensor.name))
    onnx.save(model, root / "b.onnx")
    data = np.load(EVAL)
    np.savez(root / "eval.npz", input=data["input"][:128], label=data["label"][:128])
    np.savez(root / "nolabel.npz", input=data["input"][:64])
    (root / "user_metric.py").write_text(USER_METRIC)
    return root


def _report(path: Path) -> dict:
    report = json.loads(path.read_text())
    jsonschema.validate(report, SCHEMA)
    return report


def test_verify_reports_accuracy_and_a_user_function_alike(work):
    proc = onnxslim_cli("verify", "a.onnx", "b.onnx", "--data", "eval.npz", "--metric", "accuracy",
                        "--report", "r.json", cwd=work)
    assert proc.returncode == 1, proc.stderr  # exact fails and decides: --metric alone only reports
    builtin = _report(work / "r.json")["metric"]
    assert builtin["metric"] == "accuracy" and builtin["output"] == "logits" and builtin["max_drop"] is None
    assert builtin["samples"] == 128 and 0.8 < builtin["original"] <= 1
    assert f"metric accuracy on logits: {builtin['original']:.4f} -> {builtin['result']:.4f}" in proc.stdout
    proc = onnxslim_cli("verify", "a.onnx", "b.onnx", "--data", "eval.npz", "--metric", "user_metric:accuracy",
                        "--report", "u.json", cwd=work)
    custom = _report(work / "u.json")["metric"]
    assert (custom["original"], custom["result"]) == (builtin["original"], builtin["result"])


def test_max_drop_is_the_budget_and_parity_becomes_informational(work):
    proc = onnxslim_cli("verify", "a.onnx", "b.onnx", "--data", "eval.npz", "--metric", "top1", "--max-drop", "50",
                        "--report", "r.json", cwd=work)
    assert proc.returncode == 0, proc.stderr
    report = _report(work / "r.json")
    assert report["parity"]["held"] is False and report["parity"]["decides"] is False  # exact failed, informational
    assert report["metric"]["held"] is True and "informational: --max-drop decides" in proc.stdout
    drop = report["metric"]["drop_points"]
    assert 0 < drop < 50
    proc = onnxslim_cli("verify", "a.onnx", "b.onnx", "--data", "eval.npz", "--metric", "top1",
                        "--max-drop", f"{drop / 2:.4f}", cwd=work)
    assert proc.returncode == 1 and "metric top1 dropped" in proc.stderr and len(proc.stderr.splitlines()) == 1
    proc = onnxslim_cli("verify", "a.onnx", "b.onnx", "--data", "eval.npz", "--metric", "top1", "--max-drop", "50",
                        "--tolerance", "exact", cwd=work)
    assert proc.returncode == 1 and "max_abs" in proc.stderr  # an explicit --tolerance still decides


def test_optimize_with_max_drop_writes_only_within_budget(work):
    args = ["optimize", "a.onnx", "--passes", "prune-weights{sparsity=0.7}", "--data", "eval.npz",
            "--metric", "accuracy"]
    proc = onnxslim_cli(*args, "-o", "ok.onnx", "--max-drop", "100", "--report", "ok.json", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert (work / "ok.onnx").exists() and _report(work / "ok.json")["metric"]["held"] is True
    proc = onnxslim_cli(*args, "-o", "no.onnx", "--max-drop", "0", "--metric", "cosine", cwd=work)
    assert proc.returncode == 1 and not (work / "no.onnx").exists()
    assert "metric cosine dropped" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metric", "f1"], "unknown --metric 'f1'"),
        (["--metric", "nowhere_xyz:fn"], "cannot import 'nowhere_xyz'"),
        (["--metric", "user_metric:missing"], "has no 'missing'"),
        (["--metric", "user_metric:broken"], "raised KeyError"),
        (["--metric", "accuracy", "--data", "nolabel.npz"], "needs labels"),
        (["--metric", "accuracy"], "needs labels"),  # generated inputs have no labels
        (["--max-drop", "2"], "--max-drop needs --metric"),
        (["--metric", "top1", "--max-drop", "-1"], "--max-drop must be"),
        (["--metric", "top1", "--no-verify"], "drop --no-verify"),
        (["--metric", "top1", "--max-drop", "abc"], "abc"),
    ],
)
def test_bad_metric_values_exit_2_with_one_line(work, args, message):
    proc = onnxslim_cli("optimize", "a.onnx", "-o", "bad.onnx", *args, cwd=work)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr
    assert "Traceback" not in proc.stderr and not (work / "bad.onnx").exists()


def test_calibration_data_alone_verifies_on_its_held_back_part(work):
    data = np.load(EVAL)
    np.savez(work / "calib.npz", input=data["input"][:100], label=data["label"][:100])
    proc = onnxslim_cli("optimize", "a.onnx", "-o", "q.onnx", "--passes", "quantize", "--calibration-data", "calib.npz",
                        "--metric", "accuracy", "--report", "q.json", cwd=work)
    assert proc.returncode == 0, proc.stderr
    report = _report(work / "q.json")
    assert report["parity"]["samples"] == 20 and "held back from calibration" in report["parity"]["data"]
    assert report["metric"]["samples"] == 20
    (logits,) = report["parity"]["outputs"]
    assert logits["judged_by"] == ["top1"] and logits["class_axis"] == 1
    np.savez(work / "one.npz", input=data["input"][:1])
    proc = onnxslim_cli("optimize", "a.onnx", "-o", "one.onnx", "--calibration-data", "one.npz",
                        "--report", "one.json", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert any("too few to hold some back" in w for w in _report(work / "one.json")["warnings"])


def _fp16_conv_bn(depth: int = 4, width: int = 16) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    lines, weights, prev = [], {}, "X"
    for i in range(depth):
        cin = 3 if i == 0 else width
        weights[f"W{i}"] = rng.standard_normal((width, cin, 3, 3)) * (2 / (cin * 9)) ** 0.5
        weights[f"B{i}"] = 0.1 * rng.standard_normal(width)
        weights[f"s{i}"], weights[f"b{i}"] = rng.uniform(0.5, 2.0, width), rng.standard_normal(width)
        weights[f"m{i}"], weights[f"v{i}"] = 0.5 * rng.standard_normal(width), rng.uniform(0.5, 3.0, width)
        lines += [f"c{i} = Conv<pads=[1,1,1,1]>({prev}, W{i}, B{i})",
                  f"n{i} = BatchNormalization(c{i}, s{i}, b{i}, m{i}, v{i})", f"r{i} = Relu(n{i})"]
        prev = f"r{i}"
    weights["Wf"] = 0.3 * rng.standard_normal((width, 10))
    lines += [f"p = GlobalAveragePool({prev})", "f = Flatten(p)", "logits = MatMul(f, Wf)"]
    model = onnx.parser.parse_model('<ir_version: 8, opset_import: ["": 17]> g (float16[N,3,32,32] X) => '
                                    '(float16[N,10] logits) {' + "\n".join(lines) + "}")
    model.graph.initializer.extend(numpy_helper.from_array(v.astype(np.float16), k) for k, v in weights.items())
    onnx.checker.check_model(model, full_check=True)
    return model


def test_fp16_model_holds_exact_through_the_default_pipeline(tmp_path):
    onnx.save(_fp16_conv_bn(), tmp_path / "half.onnx")
    proc = onnxslim_cli("optimize", "half.onnx", "-o", "out.onnx", "--report", "r.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = _report(tmp_path / "r.json")
    (logits,) = report["parity"]["outputs"]
    assert logits["dtype"] == "float16" and logits["judged_by"] == ["exact"]
    assert report["passes"][[p["name"] for p in report["passes"]].index("fold-bn")]["changed"] is True
    assert report["output"]["op_histogram"].get("BatchNormalization", 0) == 0
