"""The command line as users and pipelines run it: exit codes, one-line errors, nothing written on failure."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest

import onnxslim
from onnxslim.api import DEFAULT_PIPELINE
from onnxslim.testing import model_from_text

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "docs" / "report.schema.json").read_text())

CONV_BN = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,3,8,8] input) => (float[N,4] logits) {
    c = Conv<pads=[1,1,1,1]>(input, w, b)
    n = BatchNormalization(c, gamma, beta, mean, var)
    i = Identity(n)
    r = Relu(i)
    p = GlobalAveragePool(r)
    logits = Flatten(p)
}"""


def onnxslim_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onnxslim", *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    weights = {"w": rng.normal(size=(4, 3, 3, 3)), "b": rng.normal(size=4), "gamma": rng.uniform(0.5, 2, 4),
               "beta": rng.normal(size=4), "mean": rng.normal(size=4), "var": rng.uniform(0.5, 2, 4)}
    model = model_from_text(CONV_BN, {k: v.astype(np.float32) for k, v in weights.items()})
    path = tmp_path_factory.mktemp("cli") / "model.onnx"
    onnx.save(model, path)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_optimize_writes_default_output_report_and_table(model_path, tmp_path):
    source = tmp_path / "m.onnx"
    source.write_bytes(model_path.read_bytes())
    proc = onnxslim_cli("optimize", source, "--report", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "m.slim.onnx").exists()
    assert "parity" in proc.stdout and "latency" in proc.stdout and "fold-bn" in proc.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    jsonschema.validate(report, SCHEMA)
    assert report["pipeline"] == DEFAULT_PIPELINE
    assert report["output"]["op_histogram"] == {"Conv": 1, "Flatten": 1, "GlobalAveragePool": 1, "Relu": 1}
    assert report["parity"]["held"] is True


def test_same_input_pipeline_and_seed_give_identical_bytes(model_path, tmp_path):
    for name in ("a.onnx", "b.onnx"):
        assert onnxslim_cli("optimize", model_path, "-o", tmp_path / name, "--seed", "3", "-q").returncode == 0
    assert digest(tmp_path / "a.onnx") == digest(tmp_path / "b.onnx")


def test_parity_failure_exits_1_writes_nothing_but_the_report(model_path, tmp_path):
    out = tmp_path / "out.onnx"
    proc = onnxslim_cli("optimize", model_path, "-o", out, "--tolerance", "max_abs=0", "--report", tmp_path / "r.json")
    assert proc.returncode == 1, proc.stderr
    assert not out.exists()
    assert proc.stderr.count("\n") == 1 and "parity failed" in proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    jsonschema.validate(report, SCHEMA)
    assert report["parity"]["held"] is False
    forced = onnxslim_cli("optimize", model_path, "-o", out, "--tolerance", "max_abs=0", "--force")
    assert forced.returncode == 1 and out.exists()


def test_verify_each_reports_parity_per_pass(model_path, tmp_path):
    proc = onnxslim_cli("optimize", model_path, "-o", tmp_path / "o.onnx", "--verify-each", "--report", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    jsonschema.validate(report, SCHEMA)
    folded = next(p for p in report["passes"] if p["name"] == "fold-bn")
    assert folded["parity"]["held"] is True and not folded["rolled_back"]


def test_dry_run_writes_nothing_and_shows_the_plan(model_path, tmp_path):
    proc = onnxslim_cli("optimize", model_path, "-o", tmp_path / "o.onnx", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "o.onnx").exists()
    assert "fold-bn: would change (folded=1)" in proc.stdout


def test_verify_inspect_and_passes(model_path, tmp_path):
    same = onnxslim_cli("verify", model_path, model_path)
    assert same.returncode == 0 and "held" in same.stdout
    other = tmp_path / "other.onnx"
    model = onnx.load(model_path)
    model.graph.initializer[0].raw_data = (onnx.numpy_helper.to_array(model.graph.initializer[0]) * 2).tobytes()
    onnx.save(model, other)
    differs = onnxslim_cli("verify", model_path, other)
    assert differs.returncode == 1 and "parity failed" in differs.stderr
    inspected = onnxslim_cli("inspect", model_path)
    assert inspected.returncode == 0
    assert "BatchNormalization" in inspected.stdout and "FLOPs" in inspected.stdout
    listed = onnxslim_cli("passes")
    assert listed.returncode == 0
    for name in ("fold-constants", "dce", "fold-bn", "remove-identity"):
        assert name in listed.stdout


BAD_INPUTS = {
    "missing file": (["optimize", "{tmp}/nope.onnx", "-o", "{tmp}/bad.onnx"], "no such file"),
    "not ONNX": (["optimize", "{tmp}/garbage.onnx", "-o", "{tmp}/bad.onnx"], "not an ONNX model"),
    "truncated": (["optimize", "{tmp}/truncated.onnx", "-o", "{tmp}/bad.onnx"], "not an ONNX model"),
    "checker rejects": (["optimize", "{tmp}/broken.onnx", "-o", "{tmp}/bad.onnx"], "rejected by onnx.checker"),
    "unknown pass": (["optimize", "{model}", "-o", "{tmp}/bad.onnx", "--passes", "no-such-pass"], "unknown pass"),
    "unknown option": (["optimize", "{model}", "-o", "{tmp}/bad.onnx", "--passes", "fold-constants{nope=1}"], "unknown option"),
    "mistyped option": (["optimize", "{model}", "-o", "{tmp}/bad.onnx", "--passes", "fold-constants{max_growth_bytes=lots}"], "expected a int"),
    "lossy pass without calibration data": (["optimize", "{model}", "-o", "{tmp}/bad.onnx", "--passes", "quantize"], "calibration data"),
    "output equals input": (["optimize", "{tmp}/same.onnx", "-o", "{tmp}/same.onnx"], "is the input file"),
    "output directory missing": (["optimize", "{model}", "-o", "{tmp}/no/such/dir/bad.onnx"], "does not exist"),
    "output directory is a file": (["optimize", "{model}", "-o", "{tmp}/garbage.onnx/bad.onnx"], "does not exist"),
    "unknown data key": (["optimize", "{model}", "-o", "{tmp}/bad.onnx", "--data", "{tmp}/k.npz"], "names no model input"),
    "malformed input shape": (["optimize", "{model}", "-o", "{tmp}/bad.onnx", "--input-shape", "input=1xbig"], "input-shape"),
    "bad tolerance": (["optimize", "{model}", "-o", "{tmp}/bad.onnx", "--tolerance", "closeness=1"], "closeness"),
    "unavailable provider": (["optimize", "{model}", "-o", "{tmp}/bad.onnx", "--providers", "cpu,cuda"], "onnxslim[gpu]"),
    "unknown flag": (["optimize", "{model}", "-o", "{tmp}/bad.onnx", "--frobnicate"], "frobnicate"),
    "verify with a missing file": (["verify", "{model}", "{tmp}/nope.onnx"], "no such file"),
    "inspect garbage": (["inspect", "{tmp}/garbage.onnx"], "not an ONNX model"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, model_path, tmp_path):
    (tmp_path / "garbage.onnx").write_text("not an onnx model")
    (tmp_path / "truncated.onnx").write_bytes(model_path.read_bytes()[:300])
    (tmp_path / "same.onnx").write_bytes(model_path.read_bytes())
    broken = onnx.load(model_path)
    broken.graph.node[0].input[0] = "nowhere"
    (tmp_path / "broken.onnx").write_bytes(broken.SerializeToString())
    np.savez(tmp_path / "k.npz", nosuch=np.zeros((1, 3, 8, 8), np.float32))
    before = {p.name: digest(p) for p in tmp_path.iterdir() if p.is_file()}
    args, message = BAD_INPUTS[case]
    proc = onnxslim_cli(*[a.replace("{tmp}", str(tmp_path)).replace("{model}", str(model_path)) for a in args])
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]
    assert not (tmp_path / "bad.onnx").exists()
    assert {p.name: digest(p) for p in tmp_path.iterdir() if p.is_file()} == before


def test_this_checkout_is_the_onnxslim_imported():
    # The public OnnxSlim on PyPI has the same import name; the two must not share an environment.
    assert Path(onnxslim.__file__).resolve().is_relative_to(REPO)


def test_pass_notes_are_printed_under_their_pass():
    from onnxslim.cli_format import _passes_table

    row = {"name": "quantize", "options": "", "changed": True, "seconds": 1.0, "stats": {"quantized_nodes": 3},
           "declines": [], "notes": ["2 layer(s) run dynamic int8 (activation range per run): a, b"]}
    lines = _passes_table([row]).splitlines()
    assert lines[1].startswith("quantize") and "quantized_nodes=3" in lines[1]
    assert lines[2].strip() == "note: 2 layer(s) run dynamic int8 (activation range per run): a, b"


@pytest.mark.parametrize("which", ["input", "output", "data", "output data"])
def test_report_never_overwrites_a_model_or_data_file(model_path, tmp_path, which):
    source = tmp_path / "a.onnx"
    source.write_bytes(model_path.read_bytes())
    data = tmp_path / "d.npz"
    np.savez(data, input=np.zeros((2, 3, 8, 8), np.float32))
    output = tmp_path / "o.onnx"
    output.write_bytes(b"previous output")
    (tmp_path / "o.onnx.data").write_bytes(b"previous weights")
    report = {"input": source, "output": output, "data": data, "output data": tmp_path / "o.onnx.data"}[which]
    before = {p: digest(p) for p in (source, data, output, tmp_path / "o.onnx.data")}
    proc = onnxslim_cli("optimize", source, "-o", output, "--data", data, "--report", report)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "--report" in proc.stderr
    assert before == {p: digest(p) for p in before}


def test_verify_report_never_overwrites_either_model(model_path, tmp_path):
    other = tmp_path / "b.onnx"
    other.write_bytes(model_path.read_bytes())
    proc = onnxslim_cli("verify", model_path, other, "--report", other)
    assert proc.returncode == 2 and other.read_bytes() == model_path.read_bytes()


def test_report_is_readable_like_any_output(model_path, tmp_path):
    proc = onnxslim_cli("optimize", model_path, "-o", tmp_path / "o.onnx", "--report", tmp_path / "r.json", "--no-verify")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r.json").stat().st_mode & 0o044 == 0o044


@pytest.mark.parametrize("args", [
    ["--passes", ""],
    ["--seed", "-1"],
    ["--dry-run", "--report", "REPORT"],
    ["--report", "/proc/onnxslim-report.json"],
    ["--input-shape", "input=100000x3x8000x8000"],
])
def test_more_bad_usage_is_exit_2_with_one_line_and_nothing_written(model_path, tmp_path, args):
    out = tmp_path / "o.onnx"
    args = [str(tmp_path / "r.json") if a == "REPORT" else a for a in args]
    proc = onnxslim_cli("optimize", model_path, "-o", out, *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not out.exists() and not (tmp_path / "r.json").exists()


def test_verify_of_models_with_different_inputs_is_exit_2(model_path, tmp_path):
    model = onnx.load(model_path)
    model.graph.input[0].name = "pixels"
    model.graph.node[0].input[0] = "pixels"
    other = tmp_path / "other.onnx"
    onnx.save(model, other)
    proc = onnxslim_cli("verify", model_path, other)
    assert proc.returncode == 2 and "different inputs" in proc.stderr


def test_interrupt_exits_130(monkeypatch, capsys):
    from onnxslim import api, cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "inspect", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["inspect", "models/mlp.onnx"])
    assert exit_info.value.code == 130 and "interrupted" in capsys.readouterr().err


def test_lossy_pass_on_inputs_that_never_run_is_exit_2_naming_the_input(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.array([3, -1], np.int64), "shape")
    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "feat"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], [shape, weight])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    proc = onnxslim_cli("optimize", path, "-o", tmp_path / "o.onnx", "--passes", "prune-weights{sparsity=0.5}")
    assert proc.returncode == 2 and "input 'x'" in proc.stderr and "--data" in proc.stderr
    assert not (tmp_path / "o.onnx").exists()
