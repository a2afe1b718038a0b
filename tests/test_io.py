"""Loading and saving: what must survive a pipeline, the >2 GB path, atomic writes, bad files."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslim import api
from onnxslim.errors import ModelLoadError
from onnxslim.ir import external
from onnxslim.ir import io as ir_io
from onnxslim.runtime import session as ort_session


def _rich_model(rng) -> onnx.ModelProto:
    """If with outer-scope reads, a model-local function, a com.microsoft op, fp16 and bf16 data."""
    then_g = helper.make_graph([helper.make_node("Add", ["h", "one"], ["t_out"])], "then", [],
                               [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([helper.make_node("Sub", ["h", "one"], ["e_out"])], "else", [],
                               [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, None)])
    func = helper.make_function("local", "Double", ["a"], ["b"],
                                [helper.make_node("Add", ["a", "a"], ["b"])], [helper.make_opsetid("", 17)])
    nodes = [
        helper.make_node("Identity", ["x"], ["xi"]),
        helper.make_node("MatMul", ["xi", "w"], ["h"]),
        helper.make_node("ReduceSum", ["h"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["branch"], then_branch=then_g, else_branch=else_g),
        helper.make_node("Double", ["branch"], ["doubled"], domain="local"),
        helper.make_node("Gelu", ["doubled"], ["y"], domain="com.microsoft"),
        helper.make_node("Cast", ["y"], ["y16"], to=TensorProto.FLOAT16),
        helper.make_node("Add", ["y16", "bias16"], ["out16"]),
    ]
    graph = helper.make_graph(
        nodes, "rich",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("out16", TensorProto.FLOAT16, ["N", 4]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [numpy_helper.from_array(rng.normal(size=(4, 4)).astype(np.float32), "w"),
         numpy_helper.from_array(np.array(1.0, np.float32), "one"),
         numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
         numpy_helper.from_array(rng.normal(size=4).astype(np.float16), "bias16"),
         helper.make_tensor("unused_bf16", TensorProto.BFLOAT16, [2], [1.0, 2.0])],
    )
    model = helper.make_model(graph, functions=[func], opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1), helper.make_opsetid("local", 1)])
    model.ir_version = 8
    model.producer_name = "test-exporter"
    helper.set_model_props(model, {"author": "tests", "license": "MIT"})
    onnx.checker.check_model(model)
    return model


def test_default_pipeline_preserves_everything_it_must(tmp_path, rng):
    source = tmp_path / "rich.onnx"
    onnx.save(_rich_model(rng), source)
    before = source.read_bytes()
    outcome = api.optimize(source, tmp_path / "rich.out.onnx")
    assert outcome.exit_code == 0, outcome.report["parity"]
    assert source.read_bytes() == before
    out = onnx.load(tmp_path / "rich.out.onnx")
    assert [i.name for i in out.graph.input] == ["x"]
    assert [o.name for o in out.graph.output] == ["out16", "cond"]
    assert {p.key: p.value for p in out.metadata_props} == {"author": "tests", "license": "MIT"}
    assert out.producer_name == "test-exporter" and out.ir_version == 8
    assert [f.name for f in out.functions] == ["Double"]
    ops = [n.op_type for n in out.graph.node]
    assert "If" in ops and "Gelu" in ops and "Double" in ops and "Identity" not in ops
    branch = next(n for n in out.graph.node if n.op_type == "If")
    assert [n.op_type for n in branch.attribute[0].g.node] in (["Add"], ["Sub"])
    assert out.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert outcome.report["parity"]["held"]


def test_large_model_path_uses_external_data(tmp_path, rng, monkeypatch):
    monkeypatch.setattr(external, "LARGE_MODEL_BYTES", 1000)
    model = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])],
        [numpy_helper.from_array(rng.normal(size=(64, 64)).astype(np.float32), "w")]),
        opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    serialize = onnx.ModelProto.SerializeToString
    calls = []

    def guarded(self, *args, **kwargs):  # a large model must never become one byte string
        calls.append(self.ByteSize())
        return serialize(self, *args, **kwargs)

    ir_io.save_model(model, tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").exists()
    loaded = ir_io.load_model(tmp_path / "big.onnx")
    assert ir_io.is_large(loaded)
    monkeypatch.setattr(onnx.ModelProto, "SerializeToString", guarded)
    ir_io.save_model(loaded, tmp_path / "out.onnx")
    assert (tmp_path / "out.onnx.data").stat().st_size >= 64 * 64 * 4
    assert all(size < 1000 for size in calls)
    monkeypatch.setattr(onnx.ModelProto, "SerializeToString", serialize)
    again = ir_io.load_model(tmp_path / "out.onnx")
    w = next(numpy_helper.to_array(i) for i in again.graph.initializer)
    np.testing.assert_array_equal(w, numpy_helper.to_array(model.graph.initializer[0]))


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path, rng):
    model = _rich_model(rng)
    target = tmp_path / "out.onnx"
    target.write_bytes(b"previous")
    ir_io.save_model(model, target)
    assert onnx.load(target).graph.name == "rich"
    assert sorted(os.listdir(tmp_path)) == ["out.onnx"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not an onnx model", "not an ONNX model"),
        (b"", "not an ONNX model"),
    ],
)
def test_load_rejects_non_onnx(tmp_path, content, message):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message):
        ir_io.load_model(bad)


def test_an_opset_onnx_runtime_cannot_run_is_upgraded_and_says_it_is_unchecked(tmp_path, caplog):
    """Opset 6 at IR 3 (as old PyTorch exports wrote them), with an initializer not listed as an
    input: IR 4 makes it valid, the converter upgrades it, and the warning says ORT cannot check."""
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["s"], broadcast=1), helper.make_node("Relu", ["s"], ["y"])], "old",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(np.array([1, -2, 3], np.float32), "b")]), opset_imports=[helper.make_opsetid("", 6)])
    model.ir_version = 3
    onnx.save(model, tmp_path / "old.onnx")
    with caplog.at_level("WARNING"):
        upgraded = ir_io.load_model(tmp_path / "old.onnx")
    assert upgraded.ir_version >= 4 and upgraded.opset_import[0].version == ir_io.MIN_OPSET
    assert "not against the original's outputs" in caplog.text
    x = np.array([[0.5, 1.0, -4.0], [-1.0, 2.5, 0.0]], np.float32)
    import onnxruntime as ort
    got = ort.InferenceSession(upgraded.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, np.maximum(x + np.array([1, -2, 3], np.float32), 0))


def test_load_rejects_what_the_checker_rejects(tmp_path):
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["nowhere"], ["y"])], "broken", [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "broken.onnx")
    with pytest.raises(ModelLoadError, match="rejected by onnx.checker"):
        ir_io.load_model(tmp_path / "broken.onnx")


def test_bfloat16_weights_keep_their_type(tmp_path):
    weight = helper.make_tensor("wbf", TensorProto.BFLOAT16, [4], [1.0, 2.0, 3.0, 4.0])
    graph = helper.make_graph(
        [helper.make_node("Cast", ["wbf"], ["wf"], to=TensorProto.FLOAT), helper.make_node("Add", ["x", "wf"], ["y"])],
        "bf16", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "bf16.onnx")
    outcome = api.optimize(tmp_path / "bf16.onnx", tmp_path / "out.onnx", api.RunOptions(latency_seconds=0.2))
    assert outcome.exit_code == 0
    out = onnx.load(tmp_path / "out.onnx")
    assert [(i.name, i.data_type) for i in out.graph.initializer] == [("wbf", TensorProto.BFLOAT16)]


def _external_model(tmp_path, rng, name: str, location: str):
    model = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])],
        [numpy_helper.from_array(rng.normal(size=(64, 64)).astype(np.float32), "w")]),
        opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(tmp_path / name), save_as_external_data=True, location=location, size_threshold=0)
    return tmp_path / name


def test_missing_external_data_is_a_load_error_exit_2(tmp_path, rng):
    import subprocess
    import sys
    path = _external_model(tmp_path, rng, "m.onnx", "m.onnx.data")
    (tmp_path / "m.onnx.data").unlink()
    with pytest.raises(ModelLoadError, match="external data file .*m.onnx.data does not exist"):
        ir_io.load_model(path)
    for command in (["optimize", path, "--no-verify"], ["inspect", path]):
        proc = subprocess.run([sys.executable, "-m", "onnxslim", *map(str, command)], capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "m.onnx.data" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_output_beside_the_input_never_replaces_the_inputs_weights(tmp_path, rng, monkeypatch):
    # the input reads its weights from the file the output's external data would be named
    source = _external_model(tmp_path, rng, "m.onnx", "out.onnx.data")
    weights = (tmp_path / "out.onnx.data").read_bytes()
    monkeypatch.setattr(external, "LARGE_MODEL_BYTES", 1000)
    outcome = api.optimize(source, tmp_path / "out.onnx")
    assert outcome.exit_code == 0
    assert (tmp_path / "out.onnx.data").read_bytes() == weights  # the input's, untouched
    assert (tmp_path / "out.onnx.1.data").exists()
    again = ir_io.load_model(tmp_path / "out.onnx")
    np.testing.assert_array_equal(numpy_helper.to_array(again.graph.initializer[0]),
                                  np.frombuffer(weights, np.float32).reshape(64, 64))
    # and with the usual names, the input's own m.onnx.data stays as it was
    plain = _external_model(tmp_path, rng, "p.onnx", "p.onnx.data")
    before = (tmp_path / "p.onnx.data").read_bytes()
    assert api.optimize(plain, tmp_path / "p.slim.onnx").exit_code == 0
    assert (tmp_path / "p.onnx.data").read_bytes() == before
    assert (tmp_path / "p.slim.onnx.data").exists()


def test_checker_on_the_weightless_copy_never_serializes_the_weights(rng, monkeypatch):
    model = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 256])],
        [numpy_helper.from_array(rng.normal(size=(256, 256)).astype(np.float32), "w")]),
        opset_imports=[helper.make_opsetid("", 17)])
    calls = []
    serialize = onnx.ModelProto.SerializeToString

    def guarded(self, *args, **kwargs):
        data = serialize(self, *args, **kwargs)
        calls.append(len(data))
        return data

    assert external.tensor_bytes(ir_io.weightless(model)) == 0
    monkeypatch.setattr(onnx.ModelProto, "SerializeToString", guarded)
    ir_io.check(model)
    assert calls and max(calls) < 4096
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    broken.graph.node[0].input[1] = "nowhere"
    with pytest.raises(onnx.checker.ValidationError):
        ir_io.check(broken)


IF_RETURNS_OPTIONAL = """<ir_version: 8, opset_import: ["": 16]>
g (bool cond) => (optional(seq(float[5])) out) {
    out = If(cond) <else_branch = e () => (optional(seq(float[5])) else_opt) {
        x = Constant<value = float[5] {1, 2, 3, 4, 5}>()
        else_seq = SequenceConstruct(x)
        else_opt = Optional(else_seq)
    }, then_branch = t () => (optional(seq(float[5])) empty) {
        empty = Optional<type = seq(float[5])>()
    }>
}"""


def test_optional_values_and_type_attributes_in_a_body_survive_a_pipeline(tmp_path):
    """The node test test_if_opt: gs cannot write an optional type back and skips a TYPE_PROTO
    attribute; the pipeline exited 3 (UnboundLocalError), then wrote an Optional without its type."""
    source = tmp_path / "if_opt.onnx"
    onnx.save(onnx.parser.parse_model(IF_RETURNS_OPTIONAL), source)
    outcome = api.optimize(source, tmp_path / "out.onnx")
    assert outcome.exit_code == 0, outcome.report
    out = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(out, full_check=True)
    assert out.graph.output[0].type == onnx.load(source).graph.output[0].type
    session = ort_session.make_session(out)
    assert session.run(None, {"cond": np.array(True)})[0] is None
    assert [list(a) for a in session.run(None, {"cond": np.array(False)})[0]] == [[1, 2, 3, 4, 5]]


# The node test test_sequence_map_identity_2_sequences_expanded, reduced: two loop-carried
# sequences start from identical SequenceEmpty nodes, which cse merges.
SEQUENCES_IN_A_LOOP = """<ir_version: 8, opset_import: ["": 17]>
g (seq(float[N]) x0, seq(float[M]) x1) => (seq(float[N]) y0, seq(float[M]) y1) {
    n = SequenceLength(x0)
    go = Constant<value = bool {1}>()
    e0 = SequenceEmpty<dtype = 1>()
    e1 = SequenceEmpty<dtype = 1>()
    y0, y1 = Loop(n, go, e0, e1) <body = b (int64 i, bool c, seq(float[N]) a0, seq(float[M]) a1)
                                            => (bool c_out, seq(float[N]) o0, seq(float[M]) o1) {
        c_out = Identity(c)
        t0 = SequenceAt(x0, i)
        t1 = SequenceAt(x1, i)
        o0 = SequenceInsert(a0, t0)
        o1 = SequenceInsert(a1, t1)
    }>
}"""


def test_a_dry_run_keeps_sequence_types(tmp_path):
    """The dry run works on a copy of the graph; gs's copy dropped every value's sequence type
    and the checker refused the graph after cse (exit 3)."""
    source = tmp_path / "seq.onnx"
    onnx.save(onnx.parser.parse_model(SEQUENCES_IN_A_LOOP), source)
    outcome = api.optimize(source, tmp_path / "out.onnx", api.RunOptions(dry_run=True))
    assert outcome.exit_code == 0, outcome.report
    assert any(line.startswith("cse: would change") for line in outcome.plan)
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("with_data_file", [False, True])
def test_a_model_loaded_by_reference_is_optimized_exactly_and_left_untouched(tmp_path, monkeypatch, with_data_file):
    """The large-model flow (ir.refs) on a small model: weights read from the input file on demand,
    the output streamed, verified from its staged file; the input's bytes never change."""
    from onnxslim.ir import refs
    from onnxslim.testing import models_module

    dense_stack = models_module("large_models", folder="benchmarks").dense_stack

    monkeypatch.setattr(refs, "REFERENCE_MIN_BYTES", 1)
    if with_data_file:
        monkeypatch.setattr(external, "LARGE_MODEL_BYTES", 1000)
    src = dense_stack(tmp_path / "m.onnx", layers=3, width=64, external=with_data_file)
    files = {p: p.read_bytes() for p in tmp_path.iterdir()}
    loaded = ir_io.load_model(src)
    assert refs.has_references(loaded)
    out = api.optimize(src, tmp_path / "out.onnx")
    assert out.exit_code == 0 and out.report["parity"]["outputs"]
    assert {p: p.read_bytes() for p in files} == files
    assert (tmp_path / "out.onnx.data").exists() == with_data_file
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".onnxslim-")]
    assert len(onnx.load(str(tmp_path / "out.onnx")).graph.node) < len(loaded.graph.node)
