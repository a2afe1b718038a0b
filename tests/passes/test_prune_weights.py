"""prune-weights: exact sparsity, N:M patterns, data-aware criteria, sparse storage, declines."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnxslim.passes import prune_weights
from onnxslim.passes.prune_weights import PruneWeights, PruneWeightsOptions

from onnxslim.core.context import PassContext
from onnxslim.core.pipeline import parse
from onnxslim.errors import OptionError, UsageError
from onnxslim.ir import nodes
from onnxslim.ir.stats import model_stats
from onnxslim.sparse import masks, sequential
from onnxslim.sparse.storage import to_dense
from onnxslim.testing import assert_parity, model_from_text, op_types, run_model, run_pass

NET = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,4,8,8] x) => (float[N,10] y) {
    c = Conv<pads=[1,1,1,1]>(x, cw, cb)
    r = Relu(c)
    p = GlobalAveragePool(r)
    f = Flatten(p)
    h = MatMul(f, mw)
    s = Relu(h)
    y = Gemm<transB=1>(s, gw, gb)
}"""
WEIGHTS = {"cw": (16, 4, 3, 3), "cb": (16,), "mw": (16, 32), "gw": (10, 32), "gb": (10,)}
LAYER_WEIGHTS = ("cw", "mw", "gw")


def _net(rng, text=NET):
    return model_from_text(text, {k: rng.normal(size=s).astype(np.float32) for k, s in WEIGHTS.items()})


def _prune(model, ctx=None, **options):
    return run_pass(PruneWeights(PruneWeightsOptions(**options)), model, ctx)


def _weights(model):
    """Weight arrays by the name they had before pruning (initializers and sparse Constants)."""
    out = {}
    for init in model.graph.initializer:
        out[init.name.split("_")[0]] = onnx.numpy_helper.to_array(init)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "sparse_value":
                out[node.output[0].split("_")[0]] = to_dense(attr.sparse_tensor)
    return out


def _calibration(rng, batches=3, size=8):
    return [{"x": rng.normal(size=(size, 4, 8, 8)).astype(np.float32)} for _ in range(batches)]


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_layer_scope_prunes_exactly_the_requested_fraction_of_every_layer(rng, sparsity):
    model = _net(rng)
    out, result = _prune(model, sparsity=sparsity, scope="layer")
    assert result.modified
    weights = _weights(out)
    for name in LAYER_WEIGHTS:
        w = weights[name]
        assert w.size - np.count_nonzero(w) == masks.target_count(sparsity, w.size)
    assert op_types(out) == op_types(model)  # weights change, the graph does not
    _, again = _prune(out, sparsity=sparsity, scope="layer")
    assert not again.modified  # idempotent


@pytest.mark.parametrize("criterion", ["magnitude", "activation", "reconstruct"])
def test_global_scope_prunes_exactly_the_requested_fraction_overall(rng, criterion):
    model = _net(rng)
    ctx = PassContext(model, _calibration(rng))
    out, result = _prune(model, ctx, sparsity=0.7, criterion=criterion)
    weights = _weights(out)
    total = sum(weights[n].size for n in LAYER_WEIGHTS)
    zeros = sum(weights[n].size - np.count_nonzero(weights[n]) for n in LAYER_WEIGHTS)
    assert zeros == masks.target_count(0.7, total) == result.stats["zeros"]
    assert result.stats["nonzero_after"] == total - zeros
    assert len({layer["sparsity"] for layer in result.stats["layers"]}) > 1  # not uniform
    feeds = {"x": rng.normal(size=(2, 4, 8, 8)).astype(np.float32)}
    assert np.all(np.isfinite(run_model(out, feeds)[0]))
    assert any("densifies" in note for note in result.notes)


def test_layer_overrides_are_exact_and_the_rest_meets_the_global_target(rng):
    model = _net(rng)
    out, result = _prune(model, sparsity=0.5, layer_sparsity=("/never*=0.1", "gw=0.2"))
    weights = _weights(out)
    assert weights["gw"].size - np.count_nonzero(weights["gw"]) == masks.target_count(0.2, weights["gw"].size)
    assert result.stats["zeros"] == masks.target_count(0.5, sum(weights[n].size for n in LAYER_WEIGHTS))


@pytest.mark.parametrize(("pattern", "n", "m"), [("2:4", 2, 4), ("4:8", 4, 8)])
@pytest.mark.parametrize("criterion", ["magnitude", "reconstruct"])
def test_nm_patterns_hold_in_every_block_along_the_reduction_dimension(rng, pattern, n, m, criterion):
    model = _net(rng)
    out, result = _prune(model, PassContext(model, _calibration(rng)), pattern=pattern, criterion=criterion)
    weights = _weights(out)
    matmul = weights["mw"].T.reshape(-1, m)  # blocks along K
    gemm = weights["gw"].reshape(-1, m)  # transB: rows already along K
    checked = [matmul, gemm]
    if m == 4:
        checked.append(weights["cw"].transpose(0, 2, 3, 1).reshape(-1, m))  # blocks along input channels
    else:  # 4 input channels cannot hold 8-blocks
        assert [d.where for d in result.declines] == ["c"]
    for blocks in checked:
        assert np.all(np.count_nonzero(blocks, axis=1) == n)
    assert result.stats["sparsity"] == 0.5


def test_nm_declines_layers_whose_reduction_does_not_fit(rng):
    text = NET.replace("float[N,4,8,8] x", "float[N,3,8,8] x")
    weights = {k: rng.normal(size=s).astype(np.float32) for k, s in WEIGHTS.items()}
    weights["cw"] = rng.normal(size=(16, 3, 3, 3)).astype(np.float32)
    _, result = _prune(model_from_text(text, weights), pattern="2:4")
    assert [d.where for d in result.declines] == ["c"]
    assert "not a multiple of 4" in result.declines[0].reason
    assert result.stats["excluded"][0]["where"] == "c"


def test_exclude_and_min_params_are_reported(rng):
    out, result = _prune(_net(rng), exclude=("mw",), min_params=400)
    reasons = {d.where: d.reason for d in result.declines}
    assert "exclude" in reasons["h"] and "min_params" in reasons["y"]
    assert np.count_nonzero(_weights(out)["mw"]) == 16 * 32


@pytest.mark.parametrize("copies", ["", "w1 = Identity(w)\n    w2 = Identity(w)\n"])
def test_shared_weight_is_declined(rng, copies):
    """Also when each layer reads its own Identity copy (PyTorch's export of ALBERT's shared layers)."""
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,8] x) => (float[N,8] y) {
    COPIES a = MatMul(x, w1)
    y = MatMul(a, w2)
}""".replace("COPIES", copies)
    if not copies:
        text = text.replace("w1", "w").replace("w2", "w")
    _, result = _prune(model_from_text(text, {"w": rng.normal(size=(8, 8)).astype(np.float32)}))
    names = ["w1", "w2"] if copies else ["w", "w"]
    assert not result.modified
    assert [d.reason for d in result.declines] == [f"weight {n!r} is shared by 2 nodes" for n in names]


def test_constant_node_weights_are_pruned_into_a_new_constant_node_and_the_old_one_dropped(rng):
    """A model without initializers (Paddle) stays without them: the pruned weight is a Constant node too."""
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,6] x) => (float[N,4] y) {
    w = Constant<value = float[4,6] {VALUES}>()
    y = Gemm<transB=1>(x, w)
}""".replace("VALUES", ",".join(str(v) for v in rng.normal(size=24).round(3) + 0.001))
    out, result = _prune(model_from_text(text), sparsity=0.5)
    assert result.modified and op_types(out) == ["Constant", "Gemm"] and not out.graph.initializer
    assert out.graph.node[0].output[0] != "w"
    assert np.count_nonzero(onnx.numpy_helper.to_array(out.graph.node[0].attribute[0].t)) == 12


def test_sparse_storage_loads_in_ort_with_identical_outputs_and_reports_its_choice(rng):
    model = _net(rng)
    dense, _ = _prune(model, sparsity=0.9, scope="layer")
    stored, result = _prune(model, sparsity=0.9, scope="layer", storage="sparse")
    choices = {c["tensor"]: c for c in result.stats["storage"]}
    assert set(choices) == set(LAYER_WEIGHTS)
    for c in choices.values():
        assert c["format"] == ("sparse" if c["sparse_bytes"] < c["dense_bytes"] else "dense")
    assert "sparse" in {c["format"] for c in choices.values()}
    assert any(a.name == "sparse_value" for n in stored.graph.node for a in n.attribute)
    feeds = {"x": rng.normal(size=(2, 4, 8, 8)).astype(np.float32)}
    assert_parity(dense, stored, feeds, atol=0, rtol=0)
    assert stored.ByteSize() < dense.ByteSize()
    assert model_stats(stored).nonzero_params == model_stats(dense).nonzero_params
    assert model_stats(stored).params == model_stats(dense).params


def test_data_aware_criteria_need_calibration(rng):
    model = _net(rng)
    with pytest.raises(UsageError, match="calibration"):
        _prune(model, criterion="activation")
    assert PruneWeights(PruneWeightsOptions(criterion="reconstruct")).needs_calibration()
    assert not PruneWeights().needs_calibration()


@pytest.mark.parametrize(("options", "message"), [
    ({"sparsity": 1.0}, r"sparsity.*\[0, 1\)"),
    ({"sparsity": -0.1}, "sparsity"),
    ({"pattern": "2:4", "sparsity": 0.7}, "fixes sparsity at 0.5"),
    ({"layer_sparsity": ("fc1",)}, "GLOB=S"),
    ({"layer_sparsity": ("fc1=1.5",)}, "GLOB=S"),
    ({"criterion": "random"}, "magnitude"),
    ({"samples": 0}, "samples"),
])
def test_options_are_validated(options, message):
    with pytest.raises(OptionError, match=message):
        PruneWeightsOptions(**options)


def test_pipeline_text_round_trips():
    text = 'prune-weights{sparsity=0.7,criterion=reconstruct,pattern=2:4,layer_sparsity="/fc1/*=0.9;gw=0.2"}'
    with pytest.raises(OptionError):
        parse(text)  # 2:4 with 0.7
    text = 'prune-weights{sparsity=0.7,criterion=reconstruct,scope=layer,layer_sparsity="/fc1/*=0.9;gw=0.2"}'
    pipeline = parse(text)
    assert parse(str(pipeline)) == pipeline


def test_budget_loosens_with_sparsity():
    tight = PruneWeights(PruneWeightsOptions(sparsity=0.5)).tolerance()
    loose = PruneWeights(PruneWeightsOptions(sparsity=0.9)).tolerance()
    assert loose.cosine < tight.cosine
    assert PruneWeights(PruneWeightsOptions(pattern="2:4")).tolerance() == tight


def _evaluate(repo):
    spec = importlib.util.spec_from_file_location("evaluate", repo / "models" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.accuracy


def test_mlp_half_pruned_by_magnitude_keeps_accuracy_and_halves_nonzeros(repo):
    model = onnx.load(str(repo / "models" / "mlp.onnx"))
    out, _ = _prune(model, sparsity=0.5)
    accuracy = _evaluate(repo)
    data = repo / "models" / "mlp_eval.npz"
    before, after = accuracy(model.SerializeToString(), data)[0], accuracy(out.SerializeToString(), data)[0]
    assert before - after <= 0.01
    assert model_stats(model).nonzero_params == 235_146
    assert model_stats(out).nonzero_params == 235_146 - masks.target_count(0.5, 234_752)


def test_a_sparse_stored_model_can_be_optimized_again(rng):
    model = _net(rng)
    stored, _ = _prune(model, sparsity=0.9, scope="layer", storage="sparse")
    again, result = _prune(stored, sparsity=0.9, scope="layer", storage="sparse")  # re-imported densely
    feeds = {"x": rng.normal(size=(2, 4, 8, 8)).astype(np.float32)}
    assert_parity(stored, again, feeds, atol=0, rtol=0)
    assert result.stats["zeros_before"] == result.stats["zeros"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "onnxslim", *map(str, args)], capture_output=True, text=True, check=False)


def test_cli_end_to_end_reconstruct_with_sparse_storage_on_the_mlp(repo, tmp_path):
    out, report = tmp_path / "mlp.onnx", tmp_path / "r.json"
    proc = _cli("optimize", repo / "models" / "mlp.onnx", "-o", out, "--report", report,
                "--passes", "prune-weights{sparsity=0.9,criterion=reconstruct,storage=sparse}",
                "--calibration-data", repo / "models" / "mlp_calib.npz", "--data", repo / "models" / "mlp_eval.npz")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(report.read_text())
    stats = doc["passes"][-1]["stats"]
    assert stats["sparsity"] == pytest.approx(0.9, abs=1e-5)
    assert {c["format"] for c in stats["storage"]} == {"sparse", "dense"}  # fc1/fc2 sparse, the small head dense
    assert doc["output"]["nonzero_params"] == 235_146 - stats["zeros"]
    assert doc["output"]["params"] == doc["input"]["params"]
    assert doc["output"]["bytes"] < doc["input"]["bytes"] / 3
    assert any("densifies" in note for note in doc["passes"][-1]["notes"])


def test_cli_data_aware_criterion_without_calibration_is_exit_2(repo, tmp_path):
    proc = _cli("optimize", repo / "models" / "mlp.onnx", "-o", tmp_path / "o.onnx",
                "--passes", "prune-weights{criterion=activation}")
    assert proc.returncode == 2
    assert "calibration" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("options", [{"criterion": "reconstruct", "sparsity": 0.7}, {"criterion": "activation"},
                                     {"criterion": "reconstruct", "pattern": "2:4"}])
def test_a_second_run_with_the_same_request_changes_nothing(rng, options):
    model = _net(rng)
    ctx = PassContext(model, _calibration(rng))
    out, first = _prune(model, ctx, **options)
    _, second = _prune(out, PassContext(out, _calibration(rng)), **options)
    assert first.modified and not second.modified
    assert second.stats["zeros"] == first.stats["zeros"]


def test_sequential_reconstruction_with_enough_rows_refits_and_stays_exact(rng):
    model = _net(rng)
    calibration = _calibration(rng, batches=10, size=16)  # 160 rows: >= 4 per input feature of every layer
    out, result = _prune(model, PassContext(model, calibration), sparsity=0.7, criterion="reconstruct")
    plain, _ = _prune(model, PassContext(model, calibration), sparsity=0.7, criterion="reconstruct", sequential=False)
    assert result.stats["zeros"] == masks.target_count(0.7, 576 + 512 + 320)
    refit = _weights(out)["gw"]
    assert not np.allclose(refit, _weights(plain)["gw"])  # the last layer was refit to the original outputs
    feeds = calibration[0]
    ref = run_model(model, feeds)[0]
    assert np.linalg.norm(run_model(out, feeds)[0] - ref) < np.linalg.norm(run_model(plain, feeds)[0] - ref)


def test_layers_with_fewer_calibration_rows_than_features_are_named_in_a_note(rng):
    model = _net(rng)  # the Gemm reads 32 features after a global pool: one row per sample
    _, few = _prune(model, PassContext(model, _calibration(rng, batches=3, size=8)), criterion="reconstruct")
    thin = [note for note in few.notes if "fewer calibration rows" in note]
    assert len(thin) == 1 and "(24 rows, 32 features)" in thin[0] and "1 layers" in thin[0]
    _, enough = _prune(model, PassContext(model, _calibration(rng, batches=5, size=8)), criterion="reconstruct")
    assert not any("fewer calibration rows" in note for note in enough.notes)


DEEP = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,4,8,8] x) => (float[N,10] y) {
    c = Conv<pads=[1,1,1,1]>(x, cw, cb)
    r = Relu(c)
    d = Conv<pads=[1,1,1,1]>(r, dw)
    e = Relu(d)
    t = Reshape(e, shape)
    q = Transpose<perm=[0,2,1]>(t)
    u = MatMul(q, uw)
    f = ReduceMean<axes=[1], keepdims=0>(u)
    h = MatMul(f, mw)
    s = Relu(h)
    y = Gemm<transB=1>(s, gw, gb)
}"""


def test_reference_rows_kept_from_the_first_run_give_what_rerunning_the_original_gives(rng, monkeypatch):
    """Later stages take the original model's inputs kept in the first run: as sampled rows (the
    sequence MatMul: 64 rows per sample, 32 kept) or as they are where that is smaller (the second
    Conv's 3x3 patches); past the memory budget the original runs again."""
    weights = {**{k: rng.normal(size=s).astype(np.float32) for k, s in WEIGHTS.items()},
               "dw": rng.normal(size=(16, 16, 3, 3)).astype(np.float32),
               "uw": rng.normal(size=(16, 16)).astype(np.float32), "shape": np.array([0, 16, 64], np.int64)}
    model = model_from_text(DEEP, weights)
    calibration = _calibration(rng, batches=4, size=8)
    forms, add = set(), sequential.ReferenceRows.add

    def spy(self, values, samples):
        add(self, values, samples)
        forms.update(type(v[-1]).__name__ for v in (self.rows or {}).values())
    monkeypatch.setattr(sequential.ReferenceRows, "add", spy)
    kept, kept_result = _prune(model, PassContext(model, calibration), sparsity=0.6, criterion="reconstruct")
    assert forms == {"ndarray", "Raw"}
    monkeypatch.setattr(prune_weights, "REFERENCE_BYTES", 0)
    rerun, rerun_result = _prune(model, PassContext(model, calibration), sparsity=0.6, criterion="reconstruct")
    assert kept_result.stats == rerun_result.stats
    a, b = _weights(kept), _weights(rerun)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["dw"], weights["dw"]) and not np.array_equal(a["uw"], weights["uw"])


def test_stages_taking_the_previous_runs_values_give_what_running_each_prefix_gives(rng, monkeypatch):
    """A stage's run starts from the values the previous run computed that pruning did not change
    (the relay); with no room for them each stage runs its whole prefix: the same weights."""
    weights = {**{k: rng.normal(size=s).astype(np.float32) for k, s in WEIGHTS.items()},
               "dw": rng.normal(size=(16, 16, 3, 3)).astype(np.float32),
               "uw": rng.normal(size=(16, 16)).astype(np.float32), "shape": np.array([0, 16, 64], np.int64)}
    model = model_from_text(DEEP, weights)
    calibration = _calibration(rng, batches=3, size=8)
    cuts, between = [], nodes.between
    monkeypatch.setattr(nodes, "between", lambda graph, given, names: (cuts.append(sorted(given)),
                                                                       between(graph, given, names))[1])
    relayed, relayed_result = _prune(model, PassContext(model, calibration), sparsity=0.6, criterion="reconstruct")
    assert cuts == [["r"], ["q"], ["f"]]  # from stage 2 on, each starts at the input of the layer pruned before it
    monkeypatch.setattr(prune_weights, "RELAY_BYTES", 0)
    full, full_result = _prune(model, PassContext(model, calibration), sparsity=0.6, criterion="reconstruct")
    assert relayed_result.stats == full_result.stats
    a, b = _weights(relayed), _weights(full)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
