"""Data sources: .npz files and folders, .npy, image folders, random; validation errors."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest

from onnxslim.errors import DataError, UsageError
from onnxslim.runtime import data as data_mod
from onnxslim.runtime.data import RANDOM_BATCHES, open_data
from onnxslim.runtime.images import Preprocess


@pytest.fixture
def two_inputs(build):
    return build("g (float[N,3] a, int64[N] b) => (float[N,3] y) { y = Identity(a) }")


@pytest.fixture
def fixed_one(build):
    return build("g (float[1,4] X) => (float[1,4] Y) { Y = Relu(X) }")


def _samples(n, offset=0):
    return np.arange(offset, offset + n * 4, dtype=np.float64).reshape(n, 4)


def test_npz_batches_cast_and_labels(tmp_path, mlp):
    path = tmp_path / "calib.npz"
    np.savez(path, X=_samples(10), label=np.arange(10))
    source = open_data(path, mlp, batch_size=4)
    batches = list(source)
    assert [b["X"].shape[0] for b in batches] == [4, 4, 2]
    assert all(b["X"].dtype == np.float32 and set(b) == {"X"} for b in batches)
    np.testing.assert_array_equal(np.concatenate([b["X"] for b in batches]), _samples(10))
    assert source.description == f"{path} (10 samples)"
    assert (source.num_samples, source.len_hint, source.is_random, source.has_labels) == (10, 3, False, True)
    assert len(list(source)) == 3  # re-iterable
    np.testing.assert_array_equal(np.concatenate(list(source.labels())), np.arange(10))


def test_npz_folder_is_streamed_in_sorted_order(tmp_path, mlp, monkeypatch):
    for name in ["b.npz", "a.npz", "c.npz"]:
        np.savez_compressed(tmp_path / name, X=_samples(3, offset=100 * "abc".index(name[0])))
    (tmp_path / "README.txt").write_text("ignored")
    opened = []
    load = np.load
    monkeypatch.setattr(data_mod.np, "load", lambda path, **kw: opened.append(str(path)) or load(path, **kw))
    source = open_data(tmp_path, mlp, batch_size=4)
    assert source.num_samples == 9 and "3 .npz files" in source.description
    batches = iter(source)
    first = next(batches)
    assert [p.rsplit("/", 1)[1] for p in opened] == ["a.npz", "b.npz"]  # only what the batch needs
    np.testing.assert_array_equal(first["X"], np.concatenate([_samples(3), _samples(3, 100)[:1]]))
    assert [b["X"].shape[0] for b in batches] == [4, 1]


def test_npy_file_and_folder_for_single_input(tmp_path, mlp):
    np.save(tmp_path / "x0.npy", _samples(5).astype(np.float32))
    np.save(tmp_path / "x1.npy", _samples(2).astype(np.float32))
    assert [b["X"].shape[0] for b in open_data(tmp_path / "x0.npy", mlp, batch_size=2)] == [2, 2, 1]
    folder = open_data(tmp_path, mlp, batch_size=10)
    assert folder.num_samples == 7 and [b["X"].shape[0] for b in folder] == [7]


def test_npy_needs_a_single_input_model(tmp_path, two_inputs):
    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(DataError, match=r"\.npy data holds one input, but the model has 2 \(inputs: a, b\)"):
        open_data(tmp_path / "x.npy", two_inputs)


def test_unknown_key_is_an_error_but_label_is_not(tmp_path, two_inputs):
    np.savez(
        tmp_path / "d.npz", a=np.zeros((2, 3)), b=np.zeros(2, np.int64), x=np.zeros(2), label=np.zeros(2)
    )
    with pytest.raises(DataError, match=r"data key 'x' names no model input \(inputs: a, b\)"):
        open_data(tmp_path / "d.npz", two_inputs)


def test_missing_input_is_an_error(tmp_path, two_inputs):
    np.savez(tmp_path / "d.npz", a=np.zeros((2, 3)))
    with pytest.raises(DataError, match="no data for input 'b'"):
        open_data(tmp_path / "d.npz", two_inputs)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"a": np.zeros((2, 4)), "b": np.zeros(2, np.int64)},
            r"input 'a' is declared \[N, 3\], but the data has shape \[2, 4\]",
        ),
        ({"a": np.zeros((2, 3, 1)), "b": np.zeros(2, np.int64)}, "input 'a' is declared"),
        ({"a": np.zeros((2, 3)), "b": np.zeros(2)}, "input 'b' takes int64, but the data is float64"),
        ({"a": np.zeros((2, 3)), "b": np.zeros(3, np.int64)}, "must share axis 0"),
    ],
)
def test_shape_and_dtype_mismatches(tmp_path, two_inputs, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=message):
        open_data(tmp_path / "d.npz", two_inputs)


def test_fixed_batch_one_is_fed_sample_by_sample(tmp_path, fixed_one):
    np.savez(tmp_path / "d.npz", X=_samples(3))
    source = open_data(tmp_path / "d.npz", fixed_one, batch_size=32)
    assert source.len_hint == 3 and [b["X"].shape for b in source] == [(1, 4)] * 3


def test_fixed_batch_above_one_drops_the_remainder(tmp_path, build, caplog):
    model = build("g (float[2,4] X) => (float[2,4] Y) { Y = Relu(X) }")
    np.savez(tmp_path / "d.npz", X=_samples(5))
    source = open_data(tmp_path / "d.npz", model)
    with caplog.at_level(logging.WARNING):
        assert [b["X"].shape for b in source] == [(2, 4), (2, 4)]
    assert source.len_hint == 2 and "dropped the last 1 samples" in caplog.text


def test_random_source(mlp):
    source = open_data("random", mlp, batch_size=4, seed=3)
    batches = list(source)
    assert source.is_random and len(batches) == RANDOM_BATCHES == source.len_hint
    assert batches[0]["X"].shape == (4, 4) and source.num_samples == 4 * RANDOM_BATCHES
    assert not np.array_equal(batches[0]["X"], batches[1]["X"])
    assert all(np.array_equal(a["X"], b["X"]) for a, b in zip(batches, source, strict=True))
    assert "seed 3" in source.description


def test_missing_path_and_empty_folder(tmp_path, mlp):
    with pytest.raises(DataError, match="does not exist"):
        open_data(tmp_path / "nope.npz", mlp)
    with pytest.raises(DataError, match=r"no \.npz or \.npy"):
        open_data(tmp_path, mlp)
    with pytest.raises(UsageError, match="batch size"):
        open_data("random", mlp, batch_size=0)


def test_image_folder_of_npy_images(tmp_path, build):
    model = build("g (float[N,3,4,4] X) => (float[N,3,4,4] Y) { Y = Relu(X) }")
    (tmp_path / "cls_b").mkdir()
    (tmp_path / "cls_a").mkdir()
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    np.save(tmp_path / "cls_a" / "red.npy", red)
    np.save(tmp_path / "cls_b" / "grey.npy", np.full((2, 2), 51, np.uint8))
    with pytest.raises(DataError, match="images need --preprocess"):
        open_data(tmp_path / "cls_a", model)  # without --preprocess .npy files are sample stacks
    with pytest.raises(DataError, match="holds images: give --preprocess"):
        open_data(tmp_path, model)  # class subfolders
    spec = "mean=0.5,std=0.5,layout=NCHW,order=BGR,scale=255"
    source = open_data(tmp_path, model, preprocess=spec, batch_size=8)
    (batch,) = list(source)
    assert batch["X"].shape == (2, 3, 4, 4) and source.num_samples == 2
    np.testing.assert_allclose(batch["X"][0, :, 0, 0], [-1.0, -1.0, 1.0])  # red, channels flipped
    np.testing.assert_allclose(batch["X"][1], (0.2 - 0.5) / 0.5, rtol=1e-6)  # grey, repeated


def test_image_size_needed_for_dynamic_spatial_dims(tmp_path, build):
    model = build("g (float[N,1,H,W] X) => (float[N,1,H,W] Y) { Y = Relu(X) }")
    np.save(tmp_path / "img.npy", np.zeros((6, 6, 3), np.uint8))
    with pytest.raises(DataError, match="give size=HxW"):
        open_data(tmp_path, model, preprocess="scale=255")
    (batch,) = list(open_data(tmp_path, model, preprocess="size=3x2,scale=255"))
    assert batch["X"].shape == (1, 1, 3, 2)
    fixed = build("g (float[N,1,4,4] X) => (float[N,1,4,4] Y) { Y = Relu(X) }")
    with pytest.raises(DataError, match="size=3x2, but input 'X' takes 4x4 images"):
        open_data(tmp_path, fixed, preprocess="size=3x2")


@pytest.mark.skipif(importlib.util.find_spec("PIL") is not None, reason="pillow is installed")
def test_png_without_pillow_names_pillow(tmp_path, build):
    model = build("g (float[N,3,4,4] X) => (float[N,3,4,4] Y) { Y = Relu(X) }")
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    with pytest.raises(DataError, match=r"needs pillow \(pip install pillow\)"):
        list(open_data(tmp_path, model, preprocess="scale=255"))


def test_preprocess_parse():
    parsed = Preprocess.parse(
        "size=224x200,mean=0.485;0.456;0.406,std=0.229;0.224;0.225,layout=nhwc,order=RGB,scale=255"
    )
    assert parsed.size == (224, 200) and parsed.layout == "NHWC" and parsed.mean == (0.485, 0.456, 0.406)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("size=224", "bad size"),
        ("colour=rgb", "bad item"),
        ("std=0", "must not be zero"),
        ("layout=CHW", "NCHW, NHWC"),
    ],
)
def test_preprocess_parse_errors(text, message):
    with pytest.raises(UsageError, match=message):
        Preprocess.parse(text)
