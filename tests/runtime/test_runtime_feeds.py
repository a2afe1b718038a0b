"""Input specs, --input-shape parsing, dynamic-dim binding and generated feeds."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxslim.errors import UsageError
from onnxslim.runtime.feeds import (
    DEFAULT_DIMS,
    DEFAULT_ID_BOUND,
    InputSpec,
    bind_shape,
    bind_shapes,
    input_specs,
    parse_input_shapes,
    random_feeds,
    vocabulary_sizes,
)


@pytest.fixture
def bert_like(build):
    """ids -> Gather(30-row table); mask and token types; a float and a bool input."""
    table = np.zeros((30, 4), np.float32)
    return build(
        """g (int64[batch, seq] input_ids, int64[batch, seq] attention_mask,
             int64[batch, seq] token_type_ids, int32[batch, 2] other_ids,
             float16[batch, 3] features, bool[batch] flags)
          => (float[batch, seq, 4] E) {
            E = Gather(table, input_ids)
        }""",
        table=table,
    )


def test_input_specs_skip_initializers_and_read_dims(mlp):
    mlp.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, [4, 3]))
    assert input_specs(mlp) == [InputSpec("X", np.dtype(np.float32), ("N", 4))]


def test_input_specs_unknown_rank_and_unnamed_dims():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    graph = helper.make_graph([], "g", [x, y], [])
    specs = input_specs(helper.make_model(graph))
    assert specs[0].dims is None and specs[1].dims == (None, 3) and specs[1].is_dynamic


def test_parse_input_shapes():
    assert parse_input_shapes(["input=1x3x224x224", "a=b=2X5"]) == {"input": (1, 3, 224, 224), "a=b": (2, 5)}


@pytest.mark.parametrize("text", ["input", "=1x2", "input=", "input=1x", "input=0x3", "input=-1x3", "x=ax2"])
def test_parse_input_shapes_malformed(text):
    with pytest.raises(UsageError, match="malformed --input-shape"):
        parse_input_shapes([text])


def test_parse_input_shapes_duplicate():
    with pytest.raises(UsageError, match="twice"):
        parse_input_shapes(["x=1", "x=2"])


@pytest.mark.parametrize(
    ("dims", "expected"),
    [
        ((None, 3, None, None), (1, 3, 224, 224)),  # NCHW
        (("N", None, None, 3), (1, 224, 224, 3)),  # NHWC
        (("batch_size", "sequence_length"), (1, 16)),
        (("b", "height", "width", 8), (1, 224, 224, 8)),
        ((None, "feat"), (1, DEFAULT_DIMS["other"])),
        ((7, 2), (7, 2)),
        ((), ()),
    ],
)
def test_bind_shape_defaults(dims, expected):
    assert bind_shape(InputSpec("x", np.dtype(np.float32), dims)) == expected


def test_bind_shape_overrides_and_batch():
    spec = InputSpec("x", np.dtype(np.float32), ("N", 3, None))
    assert bind_shape(spec, {"x": (4, 3, 9)}) == (4, 3, 9)
    assert bind_shape(spec, batch=8) == (8, 3, DEFAULT_DIMS["other"])
    assert bind_shape(spec, symbols={"N": 5}, batch=8) == (5, 3, DEFAULT_DIMS["other"])


@pytest.mark.parametrize(
    ("override", "message"),
    [((1, 4, 2), r"sets axis 1 to 4, but the input fixes it to 3 \(\[N, 3, \?\]\)"), ((1, 3), "has rank 2")],
)
def test_bind_shape_bad_override(override, message):
    spec = InputSpec("x", np.dtype(np.float32), ("N", 3, None))
    with pytest.raises(UsageError, match=message):
        bind_shape(spec, {"x": override})


def test_bind_shape_unknown_rank_needs_override():
    spec = InputSpec("x", np.dtype(np.float32), None)
    with pytest.raises(UsageError, match="unknown rank"):
        bind_shape(spec)
    assert bind_shape(spec, {"x": (2, 2)}) == (2, 2)


def test_bind_shapes_shares_symbols_and_rejects_unknown_names(bert_like):
    shapes = bind_shapes(bert_like, {"input_ids": (2, 32)})
    assert shapes["attention_mask"] == (2, 32) and shapes["flags"] == (2,)
    with pytest.raises(UsageError, match=r"names no model input: nope \(inputs: input_ids, "):
        bind_shapes(bert_like, {"nope": (1,)})


def test_random_feeds_follow_the_contract(bert_like):
    feeds = random_feeds(bert_like, None, seed=0, batch=3)
    assert feeds["input_ids"].shape == (3, 16) and feeds["input_ids"].dtype == np.int64
    assert feeds["input_ids"].min() >= 0 and feeds["input_ids"].max() < 30  # the table's rows
    assert np.all(feeds["attention_mask"] == 1)
    assert np.all(feeds["token_type_ids"] == 0)
    other = feeds["other_ids"]
    assert other.dtype == np.int32 and other.min() >= 0 and other.max() < DEFAULT_ID_BOUND
    assert feeds["features"].dtype == np.float16 and feeds["features"].shape == (3, 3)
    assert feeds["flags"].dtype == bool and feeds["flags"].all()


def test_random_feeds_are_seeded_and_independent_per_input(bert_like):
    a = random_feeds(bert_like, seed=1)
    b = random_feeds(bert_like, seed=1)
    c = random_feeds(bert_like, seed=2)
    d = random_feeds(bert_like, {"other_ids": (1, 2)}, seed=1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["features"], c["features"])
    assert np.array_equal(a["features"], d["features"])


def test_random_feeds_normal_floats(mlp):
    x = random_feeds(mlp, {"X": (4000, 4)}, seed=0)["X"]
    assert x.dtype == np.float32 and abs(x.mean()) < 0.05 and abs(x.std() - 1) < 0.05


def test_vocabulary_through_cast_and_smallest_table(build):
    model = build(
        """g (int32[N] ids) => (float[N, 2] A, float[N, 2] B) {
            ids64 = Cast<to=7>(ids)
            A = Gather(big, ids64)
            B = Gather(small, ids)
        }""",
        big=np.zeros((50, 2), np.float32),
        small=np.zeros((12, 2), np.float32),
    )
    assert vocabulary_sizes(model) == {"ids": 12}


def test_string_input_cannot_be_generated():
    graph = helper.make_graph([], "g", [helper.make_tensor_value_info("s", TensorProto.STRING, [1])], [])
    with pytest.raises(UsageError, match="pass --data"):
        random_feeds(helper.make_model(graph))


def test_non_tensor_input_is_a_usage_error():
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph([], "g", [seq], []))
    with pytest.raises(UsageError, match="input 's' has sequence type; only tensor inputs"):
        input_specs(model)
    assert isinstance(model, onnx.ModelProto)
