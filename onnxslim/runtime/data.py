"""Data sources for ``--data`` and ``--calibration-data``, streamed batch by batch.

Accepted, per CONTRACT.md "Data files":

* an ``.npz`` whose keys are input names, samples stacked on axis 0 (key ``label`` is kept
  apart for accuracy evaluation; any other unknown key is an error);
* a folder of ``.npz`` files, read in sorted order one file at a time;
* inputs that do not share axis 0 (scalars, recurrent state): ``.npz`` files holding one feed
  each, and ONNX test-data folders (``input_0.pb``, ...), fed as they are (see ``samples``);
* for a single-input model, ``.npy`` files (one file, memory-mapped, or a folder of them);
* an image folder (searched recursively, sorted) when ``preprocess`` is given (see ``images``);
* ``random``: seeded generated inputs (``RANDOM_BATCHES`` batches); the caller warns.

Every file's array headers are checked when the source is opened (names, ranks, fixed dims,
dtypes), so a bad file fails before any pass runs, without reading its data. A model whose
axis 0 is a fixed 1 is fed one sample at a time; a fixed N > 1 is fed N at a time and a
trailing partial batch is dropped with a warning; otherwise batches hold ``batch_size``
samples, the last one possibly fewer. Arrays are cast to the input dtype when numpy calls the
cast ``same_kind`` (float64 -> float32, int32 -> int64), and between floating types.
"""

from __future__ import annotations

import logging
import math
import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import onnx

from onnxslim.errors import DataError, UsageError
from onnxslim.runtime import images, samples
from onnxslim.runtime.source import LABEL_KEY, Batch, DataSource
from onnxslim.runtime.feeds import InputSpec, bind_shapes, input_specs, random_feeds

logger = logging.getLogger(__name__)

#: Number of batches ``open_data("random", ...)`` yields.
RANDOM_BATCHES = 8
#: Samples per batch of a model with a dynamic batch axis.
RANDOM_BATCH_SIZE = BATCH_SIZE = 32

#: Header-level description of one file: key -> (shape, dtype).
Headers = dict[str, tuple[tuple[int, ...], np.dtype]]


def open_data(
    spec: str | os.PathLike[str],
    model: onnx.ModelProto,
    *,
    batch_size: int = BATCH_SIZE,
    preprocess: str | None = None,
    seed: int = 0,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    values: Mapping[str, np.ndarray] | None = None,
) -> DataSource:
    """Open a data source for ``model`` (see the module docstring for the formats).

    Args:
        spec: a path, or ``"random"``.
        model: the model to feed; its inputs decide names, ranks, dtypes and batching.
        batch_size: samples per batch when the model's batch axis is dynamic.
        preprocess: ``--preprocess`` text; makes a folder an image folder.
        seed: seed of the random source.
        input_shapes: ``--input-shape`` overrides (random source and image size).
        values: inputs of the random source whose values matter (``runtime.inputs``).

    Raises:
        DataError: the data does not fit the model or cannot be read.
        UsageError: a bad ``batch_size`` or ``--preprocess`` text.
    """
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    specs = input_specs(model)
    size, drop_last = _batching(specs, batch_size)
    if os.fspath(spec) == "random":
        return _random_source(model, size, seed, input_shapes, values)
    path = os.fspath(spec)
    if not os.path.exists(path):
        raise DataError(f"data path {path} does not exist")
    if preprocess is not None:
        return _image_source(path, specs, size, drop_last, images.Preprocess.parse(preprocess), input_shapes)
    if samples.is_test_data_folder(path):
        return samples.test_data_source(path, specs)
    files, kind = _data_files(path)
    if kind == ".npy":
        return _npy_source(path, files, specs, size, drop_last)
    headers = [_npz_headers(f) for f in files]
    if not all(samples.shares_sample_axis(h) for h in headers):
        return samples.one_feed_source(path, files, headers, specs)
    return _npz_source(path, files, specs, size, drop_last)


def _batching(specs: list[InputSpec], batch_size: int) -> tuple[int, bool]:
    first = specs[0].dims if specs else None
    if first and isinstance(first[0], int):
        return first[0], first[0] > 1
    return batch_size, False


def _data_files(path: str) -> tuple[list[str], str]:
    if os.path.isfile(path):
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in (".npz", ".npy"):
            raise DataError(f"data file {path} is not .npz or .npy (image files need --preprocess)")
        return [path], suffix
    names = sorted(os.listdir(path))
    by_kind = {k: [os.path.join(path, n) for n in names if n.lower().endswith(k)] for k in (".npz", ".npy")}
    if by_kind[".npz"] and by_kind[".npy"]:
        raise DataError(f"data folder {path} mixes .npz and .npy files; keep one kind")
    for kind, files in by_kind.items():
        if files:
            return files, kind
    if any(n.lower().endswith(images.IMAGE_SUFFIXES) for _, _, found in os.walk(path) for n in found):
        raise DataError(f"data folder {path} holds images: give --preprocess to read them")
    raise DataError(f"data folder {path} holds no .npz or .npy files")


def _npz_source(path, files, specs, size, drop_last) -> DataSource:
    headers = [_npz_headers(f) for f in files]
    counts = [_check_headers(f, h, specs) for f, h in zip(files, headers, strict=True)]
    has_labels = all(LABEL_KEY in h for h in headers)
    names = [s.name for s in specs]

    def chunks() -> Iterator[Batch]:
        for file in files:
            with np.load(file, allow_pickle=False) as npz:
                keys = names + ([LABEL_KEY] if has_labels else [])
                yield {k: npz[k] for k in keys}

    return _file_source(
        _describe(path, files, ".npz", sum(counts)), chunks, specs, size, drop_last, sum(counts), has_labels
    )


def _npy_source(path, files, specs, size, drop_last) -> DataSource:
    if len(specs) != 1:
        inputs = ", ".join(s.name for s in specs)
        raise DataError(
            f".npy data holds one input, but the model has {len(specs)} (inputs: {inputs}); use .npz"
        )
    name = specs[0].name
    arrays = [_load_npy(f) for f in files]  # memory-mapped: headers only until sliced
    counts = [
        _check_headers(f, {name: (a.shape, a.dtype)}, specs) for f, a in zip(files, arrays, strict=True)
    ]

    def chunks() -> Iterator[Batch]:
        for file in files:
            yield {name: _load_npy(file)}

    return _file_source(
        _describe(path, files, ".npy", sum(counts)), chunks, specs, size, drop_last, sum(counts), False
    )


def _image_source(path, specs, size, drop_last, prep: images.Preprocess, overrides) -> DataSource:
    if len(specs) != 1 or specs[0].dims is None or len(specs[0].dims) != 4:
        raise DataError("image data needs a model with one 4-D image input")
    spec = specs[0]
    channels, hw = _image_geometry(spec, prep, overrides)
    files = _image_files(path)

    def chunks() -> Iterator[Batch]:
        for file in files:
            yield {spec.name: prep.apply(images.read_image(file), channels, hw)[None]}

    description = f"{path} ({len(files)} images, {hw[0]}x{hw[1]} {prep.layout})"
    return _file_source(description, chunks, specs, size, drop_last, len(files), False)


def _image_geometry(spec: InputSpec, prep: images.Preprocess, overrides) -> tuple[int, tuple[int, int]]:
    dims = list(spec.dims)
    if overrides and spec.name in overrides:
        dims = list(overrides[spec.name])
    c_axis, h_axis = (1, 2) if prep.layout == "NCHW" else (3, 1)
    channels = dims[c_axis] if isinstance(dims[c_axis], int) else 3
    declared = dims[h_axis : h_axis + 2]
    fixed = all(isinstance(d, int) for d in declared)
    if prep.size is not None and fixed and tuple(declared) != prep.size:
        raise DataError(
            f"--preprocess size={prep.size[0]}x{prep.size[1]}, but input {spec.name!r} takes "
            f"{declared[0]}x{declared[1]} images"
        )
    if prep.size is not None:
        return channels, prep.size
    if fixed:
        return channels, (declared[0], declared[1])
    raise DataError(f"input {spec.name!r} has dynamic spatial dims: give size=HxW in --preprocess")


def _image_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    files = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(path)
        for name in names
        if name.lower().endswith(images.IMAGE_SUFFIXES)
    )
    if not files:
        raise DataError(f"image folder {path} holds no .png, .jpg, .jpeg, .bmp or .npy files")
    return files


def _file_source(description, chunks, specs, size, drop_last, count, has_labels) -> DataSource:
    if count == 0:
        raise DataError(f"{description}: no samples")

    def batches() -> Iterator[tuple[Batch, np.ndarray | None]]:
        for batch in _rebatch(chunks(), size, drop_last):
            labels = batch.pop(LABEL_KEY, None)
            yield _conform(batch, specs), labels

    batches_known = count // size if drop_last else math.ceil(count / size)
    return DataSource(description, batches, num_samples=count, len_hint=batches_known, has_labels=has_labels)


def _random_source(model, size, seed, overrides, values=None) -> DataSource:
    shapes = bind_shapes(model, overrides, batch=size)
    first = next(iter(shapes.values()), ())
    per_batch = first[0] if first else 1

    def batches() -> Iterator[tuple[Batch, None]]:
        for index in range(RANDOM_BATCHES):
            batch_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
            yield random_feeds(model, overrides, seed=batch_seed, batch=size, values=values), None

    description = f"random inputs ({RANDOM_BATCHES} batches of {per_batch}, seed {seed})"
    return DataSource(
        description, batches, num_samples=RANDOM_BATCHES * per_batch, len_hint=RANDOM_BATCHES, is_random=True
    )


def _rebatch(chunks: Iterator[Batch], size: int, drop_last: bool) -> Iterator[Batch]:
    """Re-slice chunks of any length into batches of ``size``, carrying remainders over."""
    pending: list[Batch] = []
    count = 0
    for chunk in chunks:
        total = len(next(iter(chunk.values())))
        start = 0
        while start < total:
            take = min(size - count, total - start)
            pending.append({k: v[start : start + take] for k, v in chunk.items()})
            count, start = count + take, start + take
            if count == size:
                yield _concat(pending)
                pending, count = [], 0
    if pending and drop_last:
        logger.warning("dropped the last %d samples: the model takes batches of exactly %d", count, size)
    elif pending:
        yield _concat(pending)


def _concat(parts: list[Batch]) -> Batch:
    if len(parts) == 1:
        return dict(parts[0])
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _conform(batch: Batch, specs: list[InputSpec]) -> Batch:
    return {s.name: np.ascontiguousarray(batch[s.name]).astype(s.dtype, copy=False) for s in specs}


def _check_headers(path: str, headers: Headers, specs: list[InputSpec]) -> int:
    """Validate one file against the inputs; return its sample count."""
    names = [s.name for s in specs]
    inputs = ", ".join(names)
    for key in headers:
        if key != LABEL_KEY and key not in names:
            raise DataError(f"{path}: data key {key!r} names no model input (inputs: {inputs})")
    missing = [n for n in names if n not in headers]
    if missing:
        raise DataError(f"{path}: no data for input {missing[0]!r} (keys: {', '.join(headers)})")
    counts = {k: shape[0] if shape else None for k, (shape, _) in headers.items()}
    if len(set(counts.values())) != 1 or None in counts.values():
        raise DataError(f"{path}: arrays must share axis 0 (the sample axis); got {counts}")
    for spec in specs:
        _check_array(path, spec, *headers[spec.name])
    return next(iter(counts.values()))


def _check_array(path: str, spec: InputSpec, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if spec.dims is not None:
        declared = "[" + ", ".join("?" if d is None else str(d) for d in spec.dims) + "]"
        fixed_ok = all(
            not isinstance(d, int) or d == s for d, s in zip(spec.dims[1:], shape[1:], strict=False)
        )
        if len(shape) != len(spec.dims) or not fixed_ok:
            hint = "; images need --preprocess" if len(spec.dims) == 4 and len(shape) in (2, 3) else ""
            raise DataError(
                f"{path}: input {spec.name!r} is declared {declared}, but the data has shape "
                f"{list(shape)} (samples stacked on axis 0){hint}"
            )
    both_float = dtype.kind == "f" and (spec.dtype.kind == "f" or spec.dtype.name == "bfloat16")
    if dtype != spec.dtype and not both_float and not np.can_cast(dtype, spec.dtype, "same_kind"):
        raise DataError(f"{path}: input {spec.name!r} takes {spec.dtype}, but the data is {dtype}")


def _npz_headers(path: str) -> Headers:
    try:
        with zipfile.ZipFile(path) as archive:
            return dict(
                _npy_header(archive, info) for info in archive.infolist() if info.filename.endswith(".npy")
            )
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} as .npz: {exc}") from None


def _npy_header(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo
) -> tuple[str, tuple[tuple[int, ...], np.dtype]]:
    with archive.open(info) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
    return info.filename[: -len(".npy")], (tuple(shape), dtype)


def _load_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} as .npy: {exc}") from None


def _describe(path: str, files: list[str], kind: str, count: int) -> str:
    if len(files) == 1 and os.path.isfile(path):
        return f"{path} ({count} samples)"
    return f"{path} ({len(files)} {kind} files, {count} samples)"
