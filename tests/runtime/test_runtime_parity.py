"""Tolerance text, metric values, streaming accumulation, model comparison, blame."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxslim.errors import DataError, UsageError
from onnxslim.runtime.data import open_data
from onnxslim.runtime.parity import (
    OutputParity,
    Tolerance,
    _Accumulator,
    class_axis,
    compare_models,
    first_divergence,
    is_class_scores,
)
from onnxslim.runtime.tolerance import exact_bounds


def _metrics(*pairs) -> OutputParity:
    acc = _Accumulator("y")
    for a, b in pairs:
        acc.add(np.asarray(a, np.float32), np.asarray(b, np.float32))
    return acc.result()


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("exact", "exact"),
        ("cosine=0.999, top1=0.99", "cosine=0.999,top1=0.99"),
        (
            "top1=0.99,sqnr_db=30,max_rel=1e-3,max_abs=1e-05,exact",
            "exact,max_abs=1e-05,max_rel=0.001,sqnr=30,top1=0.99",
        ),
        ("none", "none"),
    ],
)
def test_tolerance_parse_and_print(text, canonical):
    tol = Tolerance.parse(text)
    assert str(tol) == canonical
    assert Tolerance.parse(str(tol)) == tol


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty --tolerance"),
        ("cosin=0.9", "unknown tolerance 'cosin=0.9'"),
        ("cosine=abc", "'abc' is not a number"),
        ("cosine=1.5", r"out of range \[-1, 1\]"),
        ("top1=-0.1", "out of range"),
        ("max_abs=nan", "out of range"),
        ("cosine=0.9,cosine=0.8", "twice"),
        ("strict", "unknown tolerance"),
    ],
)
def test_tolerance_parse_errors(text, message):
    with pytest.raises(UsageError, match=message):
        Tolerance.parse(text)


def test_tolerance_merge_takes_the_looser_bound():
    a = Tolerance.parse("cosine=0.999,max_abs=0.01")
    b = Tolerance.parse("cosine=0.99,top1=0.98,max_abs=0.001")
    assert str(a.merge(b)) == "max_abs=0.01,cosine=0.99,top1=0.98"
    exact = Tolerance.parse("exact")
    assert exact.merge(exact) == exact
    assert exact.merge(a) == a
    assert a.merge(Tolerance()) == a


def test_identical_outputs():
    m = _metrics(([[1.0, 2.0], [3.0, -4.0]], [[1.0, 2.0], [3.0, -4.0]]))
    assert (m.max_abs, m.max_rel, m.cosine, m.sqnr_db, m.top1, m.max_ref) == (
        0.0,
        0.0,
        1.0,
        math.inf,
        1.0,
        4.0,
    )
    assert Tolerance.parse("exact,cosine=1,sqnr=200,top1=1").check([m]) == []


def test_known_perturbation():
    m = _metrics(([[3.0, 4.0]], [[3.0, 4.5]]))
    assert m.max_abs == 0.5 and m.max_rel == 0.125
    assert m.sqnr_db == pytest.approx(10 * math.log10(25 / 0.25))
    assert m.cosine == pytest.approx((9 + 18) / (5 * math.sqrt(9 + 20.25)))
    assert m.top1 == 1.0
    failures = Tolerance.parse("exact,sqnr=30,cosine=0.99").check([m])
    assert failures == [
        "y: max_abs 0.5 > 1e-05 + 0.0001 × max|a| = 0.00041 (exact)",
        "y: sqnr 20 < 30",
    ]


def test_streaming_matches_one_shot():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((10, 6)).astype(np.float32)
    b = a + 0.01 * rng.standard_normal((10, 6)).astype(np.float32)
    streamed = _metrics((a[:3], b[:3]), (a[3:7], b[3:7]), (a[7:], b[7:]))
    whole = _metrics((a, b))
    for key in ("max_abs", "max_rel", "cosine", "sqnr_db", "top1", "elements"):
        assert getattr(streamed, key) == pytest.approx(getattr(whole, key), rel=1e-12)


def test_top1_agreement_and_rule():
    m = _metrics(([[0.0, 1.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]))
    assert m.top1 == 0.5
    assert Tolerance.parse("top1=0.9").check([m]) == ["y: top1 0.5 < 0.9"]
    assert _metrics(([1.0, 2.0], [1.0, 2.0])).top1 is None  # 1-D: no class axis
    assert Tolerance.parse("top1=0.9").check([_metrics(([1.0], [5.0]))]) == []
    assert not is_class_scores((4, 1), np.dtype(np.float32))
    assert not is_class_scores((4, 10), np.dtype(np.int64))


def test_nan_in_candidate_fails_and_shared_nan_does_not():
    bad = _metrics(([1.0, 2.0], [1.0, float("nan")]))
    assert math.isnan(bad.max_abs) and Tolerance.parse("cosine=0.5").check([bad])
    assert Tolerance.parse("exact").check([bad])
    same = _metrics(([1.0, float("nan"), float("inf")], [1.0, float("nan"), float("inf")]))
    assert same.max_abs == 0.0 and Tolerance.parse("exact").check([same]) == []


def test_zero_reference():
    m = _metrics(([0.0, 0.0], [0.0, 1e-7]))
    assert m.max_rel == math.inf and m.cosine == 0.0 and m.sqnr_db == -math.inf
    assert Tolerance.parse("exact").check([m]) == []  # the absolute floor covers near-zero outputs


def test_shape_mismatch_is_reported():
    acc = _Accumulator("y")
    acc.add(np.zeros((2, 3)), np.zeros((2, 4)))
    (failure,) = Tolerance.parse("none").check([acc.result()])
    assert failure == "y: shape [2, 4] differs from the reference's [2, 3]"


def test_compare_models(chain, mlp):
    report = compare_models(chain(2.0), chain(2.0), open_data("random", chain(2.0), batch_size=4))
    assert report.holds(Tolerance.parse("exact")) and (report.batches, report.samples) == (8, 32)
    close = compare_models(chain(2.0), chain(2.001), open_data("random", chain(2.0), batch_size=4))
    (failure,) = close.failures(Tolerance.parse("exact"))
    assert failure.startswith("Y: max_abs")
    assert close.holds(Tolerance.parse("cosine=0.9999,sqnr=40"))
    document = close.to_dict(Tolerance.parse("exact"))
    assert document["held"] is False and document["tolerance"] == "exact"
    json.dumps(report.to_dict(), allow_nan=False)  # sqnr=inf is written as "inf"
    assert report.outputs[0].to_dict()["sqnr_db"] == "inf"


def test_compare_models_errors(chain, mlp):
    with pytest.raises(UsageError, match="outputs differ"):
        two = chain()
        two.graph.output.append(two.graph.output[0])
        two.graph.output[1].name = "A"
        compare_models(chain(), two, [])
    with pytest.raises(DataError, match="no batches"):
        compare_models(chain(), chain(), [])
    with pytest.raises(DataError, match="no data for model input"):
        compare_models(chain(), chain(), [{"Z": np.zeros((1, 5), np.float32)}])


def test_first_divergence_names_the_node(chain):
    feeds = {"X": np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)}
    exact = Tolerance.parse("exact")
    found = first_divergence(chain(2.0, 1.0), chain(2.5, 1.0), feeds, exact)
    assert (found.node, found.op_type, found.tensor) == ("mul", "Mul", "M")
    assert "max_abs" in str(found) and str(found).startswith("node 'mul' (Mul) output 'M'")
    assert first_divergence(chain(2.0, 1.0), chain(2.0, 1.5), feeds, exact).node == "add"
    assert first_divergence(chain(), chain(), feeds, exact) is None


def test_first_divergence_sees_folded_constants(build):
    """A tensor computed in the reference and stored as an initializer in the candidate."""
    two = np.full(5, 2.0, np.float32)
    reference = build("g (float[N,5] X) => (float[N,5] Y) { S = Add(H, H)\n Y = Mul(X, S) }", H=two / 2)
    reference.graph.node[0].name = "fold_me"
    candidate = build("g (float[N,5] X) => (float[N,5] Y) { Y = Mul(X, S) }", S=two + 1)
    found = first_divergence(
        reference, candidate, {"X": np.ones((1, 5), np.float32)}, Tolerance.parse("exact")
    )
    assert (found.node, found.tensor) == ("fold_me", "S")


_bounds = {
    "max_abs": st.floats(0, 1e6),
    "max_rel": st.floats(0, 1e6),
    "cosine": st.floats(-1, 1),
    "sqnr": st.floats(-1e3, 1e3),
    "top1": st.floats(0, 1),
}


@settings(deadline=None)
@given(st.booleans(), st.booleans(), st.fixed_dictionaries({}, optional=_bounds))
def test_tolerance_text_round_trips(exact, per_output, bounds):
    tol = Tolerance(exact=exact, per_output=per_output, **bounds)
    assert Tolerance.parse(str(tol)) == tol
    assert tol.merge(tol) == tol


F32 = np.dtype(np.float32)


@pytest.mark.parametrize(
    ("shape", "name", "axis"),
    [
        ((4, 10), "logits", 1),
        ((4, 40, 6625), "softmax_out", 2),  # a text-line recognizer: one decision per time step
        ((2, 21, 64, 64), "out", 1),  # a segmentation map: one decision per pixel
        ((2, 1, 64, 64), "maps", None),  # a text detector's probability map has no class axis
        ((4, 1), "score", None),
        ((4, 384), "sentence_embedding", None),
        ((4, 16, 384), "last_hidden_state", None),
        ((4, 100, 4), "pred_boxes", None),
        ((4, 2, 8, 16, 16), "present.0.key", None),
        ((4,), "y", None),
        ((2, 3, 4, 5, 6), "y", None),
    ],
)
def test_class_axis_heuristics(shape, name, axis):
    assert class_axis(shape, F32, name) == axis
    assert class_axis(shape, np.dtype(np.int64), name) is None


def test_top1_counts_every_decision_along_the_class_axis():
    rng = np.random.default_rng(0)
    seq = rng.standard_normal((2, 5, 7)).astype(np.float32)  # [N, T, C]
    moved = seq.copy()
    moved[0, 3] = -moved[0, 3]  # one time step of one sample now argmaxes elsewhere
    m = _metrics((seq, moved))
    assert (m.top1, m.top1_decisions, m.class_axis) == (pytest.approx(9 / 10), 10, 2)
    maps = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)  # [N, C, H, W]
    flipped = maps.copy()
    flipped[0, :, 0, 0] = -flipped[0, :, 0, 0]
    m = _metrics((maps, flipped))
    assert (m.top1, m.top1_decisions, m.class_axis) == (pytest.approx(15 / 16), 16, 1)


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_per_output_judges_class_scores_by_top1_and_the_rest_by_cosine():
    """A recognizer whose softmax flattened (cosine well below budget) while no decision changed."""
    rng = np.random.default_rng(1)
    logits = 3 * rng.standard_normal((4, 40, 50))
    scores = _metrics((_softmax(logits), _softmax(0.4 * logits)))
    assert scores.top1 == 1.0 and scores.cosine < 0.97
    budget = Tolerance.parse("cosine=0.985,top1=0.97,per_output")
    assert budget.check([scores]) == [] and budget.judged_by(scores) == ["top1"]
    assert Tolerance.parse("cosine=0.985,top1=0.97").check([scores])  # without per_output: every bound
    embedding = _Accumulator("sentence_embedding")
    embedding.add(logits[:, 0].astype(np.float32), 0.5 * logits[:, 0].astype(np.float32) + 1)
    emb = embedding.result()
    assert emb.top1 is None and budget.judged_by(emb) == ["cosine"]
    assert budget.check([emb]) == [f"sentence_embedding: cosine {emb.cosine:.6g} < 0.985"]
    # on generated inputs top-1 decides nothing: class scores fall back to cosine
    assert budget.judged_by(scores, generated=True) == ["cosine"]
    assert budget.check([scores], generated=True)


def test_per_output_text_and_merge():
    tol = Tolerance.parse("top1=0.9,cosine=0.95,per_output")
    assert str(tol) == "cosine=0.95,top1=0.9,per_output" and Tolerance.parse(str(tol)) == tol
    merged = Tolerance.parse("exact").merge(tol)
    assert merged == tol
    assert Tolerance.parse("cosine=0.99").merge(tol) == tol
    assert not Tolerance.parse("cosine=0.99").merge(Tolerance.parse("cosine=0.9")).per_output


def test_lossy_budgets_are_per_output():
    from onnxslim.core.registry import all_passes

    lossy = [cls for cls in all_passes() if cls.name in ("quantize", "prune-weights", "prune-channels", "svd")]
    assert len(lossy) == 4 and not any(cls.exact for cls in lossy)
    for cls in lossy:
        budget = cls().tolerance()
        assert budget.per_output and budget.top1 is not None and budget.cosine is not None, cls.name


def test_exact_fits_the_output_dtype():
    assert exact_bounds("float32") == exact_bounds("float64") == (1e-5, 1e-4)
    assert exact_bounds("float16") == (2.0**-10, 10 * 2.0**-10)
    assert exact_bounds("bfloat16") == (2.0**-7, 10 * 2.0**-7)
    a = np.array([[3.0, 1.0, -2.0]])
    b = a + np.array([[0.002, 0.0, -0.001]])  # about 1 unit in the last place of float16 at 3.0
    half = _Accumulator("y")
    half.add(a.astype(np.float16), b.astype(np.float16))
    single = _Accumulator("y")
    single.add(a.astype(np.float32), b.astype(np.float32))
    exact = Tolerance.parse("exact")
    assert half.result().dtype == "float16" and exact.check([half.result()]) == []
    (failure,) = exact.check([single.result()])
    assert failure.endswith("(exact)")
    far = _Accumulator("y")
    far.add(a.astype(np.float16), (a + 0.2).astype(np.float16))  # 7% of max|a|: not rounding
    (failure,) = exact.check([far.result()])
    assert "(exact, float16)" in failure


def test_compare_models_reports_judged_by_and_hands_outputs_to_observe(chain):
    seen = []
    report = compare_models(chain(2.0), chain(2.0), open_data("random", chain(2.0), batch_size=4),
                            generated=True, observe=lambda ref, cand: seen.append((ref["Y"].shape, cand["Y"].shape)))
    assert report.generated and len(seen) == 8 and seen[0] == ((4, 5), (4, 5))
    (entry,) = report.to_dict(Tolerance.parse("cosine=0.9,top1=0.9,per_output"))["outputs"]
    assert entry["judged_by"] == ["cosine"] and entry["class_axis"] == 1 and entry["dtype"] == "float32"


def test_sequence_outputs_of_uneven_tensors_are_compared_pairwise():
    """SplitToSequence's uneven split (node test test_split_to_sequence_2) returns tensors of
    different shapes; numpy cannot stack them and the comparison exited 3."""
    reference = [np.ones((2, 3), np.float32), np.ones((1, 3), np.float32)]
    same = _Accumulator("seq")
    same.add(reference, [x.copy() for x in reference])
    assert same.result().max_abs == 0 and same.result().elements == 9
    moved = _Accumulator("seq")
    moved.add(reference, [reference[0], reference[1] + 0.5])
    assert moved.result().max_abs == 0.5
    reshaped = _Accumulator("seq")
    reshaped.add(reference, [np.ones((1, 3), np.float32), np.ones((2, 3), np.float32)])
    assert "sequence" in reshaped.result().error


def test_one_session_at_a_time_gives_the_same_report(chain):
    """Large models are compared with one ORT session at a time (the reference's outputs kept)."""
    data = list(open_data("random", chain(2.0), batch_size=4))
    together = compare_models(chain(2.0), chain(2.001), data)
    apart = compare_models(chain(2.0), chain(2.001), data, one_at_a_time=True)
    assert apart.to_dict() == together.to_dict() and apart.batches == 8
    with pytest.raises(DataError, match="no batches"):
        compare_models(chain(), chain(), [], one_at_a_time=True)


def test_a_sequence_of_maps_is_compared_by_its_values():
    """A scikit-learn classifier's ZipMap output: int8 moves each probability a little (cosine
    near 1, every decision kept); different keys are an error, not a zero cosine."""
    ref = [{0: 0.5, 1: 0.4, 2: 0.1}, {0: 0.2, 1: 0.7, 2: 0.1}]
    moved = [{0: 0.49, 1: 0.41, 2: 0.1}, {0: 0.21, 1: 0.69, 2: 0.1}]
    acc = _Accumulator("output_probability")
    acc.add(ref, moved)
    result = acc.result()
    assert result.shape == (2, 3) and result.cosine > 0.999 and result.top1 == 1.0
    other = _Accumulator("output_probability")
    other.add(ref, [{0: 0.5, 1: 0.5}, {0: 0.2, 1: 0.8}])
    assert other.result().error == "the maps' keys differ from the reference's"
    same = _Accumulator("output_probability")
    same.add(ref, [dict(m) for m in ref])
    assert same.result().max_abs == 0 and same.result().cosine == 1.0


def test_outputs_as_numbers_for_the_int8_check():
    """quantize's check compares a ZipMap's probabilities by value and leaves string labels out."""
    from onnxslim.quant.mixed import CheckData
    from onnxslim.runtime.values import numbers

    ref = [{0: 0.5, 1: 0.4, 2: 0.1}, {0: 0.2, 1: 0.7, 2: 0.1}]
    np.testing.assert_array_equal(numbers(ref), [[0.5, 0.4, 0.1], [0.2, 0.7, 0.1]])
    assert numbers(np.array(["cat", "dog"])) is None
    logits = np.ones((2, 3), np.float32)
    assert numbers(logits) is logits
    check = CheckData({}, {"probabilities": numbers(ref)})
    assert check.cosine({"probabilities": ref}) == pytest.approx(1.0)
    flipped = [{0: 0.1, 1: 0.4, 2: 0.5}, {0: 0.1, 1: 0.7, 2: 0.2}]
    assert check.cosine({"probabilities": flipped}) < 0.9
