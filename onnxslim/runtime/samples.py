"""Data whose inputs do not share a sample axis: each file is one feed, given as it is.

A scalar (a sample rate), a recurrent state ``[2, batch, 128]`` or a 1-D tensor cannot be
stacked on axis 0 with the other inputs, so two forms hold one whole feed per file:

* an ``.npz`` whose arrays do not share axis 0 (or one of them is a scalar), alone or in a
  folder of such files: each file is fed as it is, one run per file;
* ONNX's own test-data layout: a folder of ``input_0.pb``, ``input_1.pb``, ... (serialized
  ``TensorProto``; a tensor's name, else its position, says which input it feeds), or a folder
  of such ``test_data_set_*`` folders, one feed each (``output_*.pb`` files are ignored).

Every array must have the rank and the fixed dims the model declares (axis 0 included) and a
dtype that casts to the input's (see ``data``'s casting rule).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from onnxslim.errors import DataError
from onnxslim.runtime.feeds import InputSpec
from onnxslim.runtime.source import LABEL_KEY, Batch, DataSource

_INPUT_PB = re.compile(r"^input_(\d+)\.pb$")


def is_test_data_folder(path: str) -> bool:
    """True for a folder of ``input_*.pb`` files, or of ``test_data_set_*`` folders holding them."""
    if not os.path.isdir(path):
        return False
    return bool(_input_files(path)) or bool(_test_sets(path))


def shares_sample_axis(headers: dict[str, tuple[tuple[int, ...], np.dtype]]) -> bool:
    """True when every array of a file has the same length on axis 0 (samples stacked)."""
    lengths = {shape[0] if shape else None for key, (shape, _) in headers.items() if key != "label"}
    return None not in lengths and len(lengths) == 1


def test_data_feeds(path: str, specs: list[InputSpec]) -> tuple[list[str], Iterator[dict[str, np.ndarray]]]:
    """The feed folders under ``path`` (itself when it holds ``input_*.pb``), checked now, and a
    generator of their feeds."""
    folders = [path] if _input_files(path) else _test_sets(path)
    for folder in folders:
        check_feed(folder, _read_pb_headers(folder, specs), specs)

    def feeds() -> Iterator[dict[str, np.ndarray]]:
        for folder in folders:
            yield conform(_read_pb(folder, specs), specs)

    return folders, feeds()


def check_feed(where: str, headers: dict[str, tuple[tuple[int, ...], np.dtype]], specs: list[InputSpec]) -> None:
    """One whole feed: every input present with its declared rank, fixed dims and a castable dtype."""
    names = [s.name for s in specs]
    for key in headers:
        if key != "label" and key not in names:
            raise DataError(f"{where}: data key {key!r} names no model input (inputs: {', '.join(names)})")
    for spec in specs:
        if spec.name not in headers:
            raise DataError(f"{where}: no data for input {spec.name!r}")
        shape, dtype = headers[spec.name]
        if spec.dims is not None:
            fixed_ok = all(not isinstance(d, int) or d == s for d, s in zip(spec.dims, shape, strict=False))
            if len(shape) != len(spec.dims) or not fixed_ok:
                declared = "[" + ", ".join("?" if d is None else str(d) for d in spec.dims) + "]"
                raise DataError(f"{where}: input {spec.name!r} is declared {declared}, but the data has shape "
                                f"{list(shape)} (a one-feed file is fed as it is)")
        both_float = dtype.kind == "f" and (spec.dtype.kind == "f" or spec.dtype.name == "bfloat16")
        if dtype != spec.dtype and not both_float and not np.can_cast(dtype, spec.dtype, "same_kind"):
            raise DataError(f"{where}: input {spec.name!r} takes {spec.dtype}, but the data is {dtype}")
    symbols: dict[str, tuple[int, str]] = {}
    for spec in specs:
        for dim, size in zip(spec.dims or (), headers.get(spec.name, ((), None))[0], strict=False):
            if isinstance(dim, str) and symbols.setdefault(dim, (size, spec.name))[0] != size:
                first, other = symbols[dim]
                raise DataError(f"{where}: dim {dim!r} is {first} in input {other!r} but {size} in input "
                                f"{spec.name!r} (arrays stacked on a sample axis must share axis 0)")


def conform(feed: dict[str, np.ndarray], specs: list[InputSpec]) -> dict[str, np.ndarray]:
    # np.asarray, not ascontiguousarray: the latter makes a scalar 1-D.
    return {s.name: np.asarray(feed[s.name], order="C").astype(s.dtype, copy=False) for s in specs}


def _input_files(folder: str) -> list[str]:
    names = [n for n in os.listdir(folder) if _INPUT_PB.match(n)]
    return [os.path.join(folder, n) for n in sorted(names, key=lambda n: int(_INPUT_PB.match(n).group(1)))]


def _test_sets(folder: str) -> list[str]:
    subfolders = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.startswith("test_data_set_"))
    return [f for f in subfolders if os.path.isdir(f) and _input_files(f)]


def _read_pb(folder: str, specs: list[InputSpec]) -> dict[str, np.ndarray]:
    feed = {}
    for index, file in enumerate(_input_files(folder)):
        tensor = onnx.TensorProto()
        try:
            with open(file, "rb") as stream:
                tensor.ParseFromString(stream.read())
            array = numpy_helper.to_array(tensor)
        except Exception as exc:  # noqa: BLE001 - protobuf and numpy_helper raise various types
            raise DataError(f"cannot read {file} as a serialized TensorProto ({exc})") from None
        feed[_input_name(tensor.name, index, specs, file)] = array
    return feed


def _read_pb_headers(folder: str, specs: list[InputSpec]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    return {k: (v.shape, v.dtype) for k, v in _read_pb(folder, specs).items()}


def _input_name(name: str, index: int, specs: list[InputSpec], file: str) -> str:
    if name in {s.name for s in specs}:
        return name
    if index < len(specs):
        return specs[index].name
    raise DataError(f"{file}: input {index} of a model with {len(specs)} inputs")


def one_feed_source(path, files, headers, specs) -> DataSource:
    """Files whose arrays do not share a sample axis: each is one feed, fed as it is."""
    for file, header in zip(files, headers, strict=True):
        check_feed(file, header, specs)
    has_labels = all(LABEL_KEY in h for h in headers)
    names = [s.name for s in specs]

    def batches() -> Iterator[tuple[Batch, np.ndarray | None]]:
        for file in files:
            with np.load(file, allow_pickle=False) as npz:
                yield conform({k: npz[k] for k in names}, specs), npz[LABEL_KEY] if has_labels else None

    description = f"{path} ({len(files)} .npz feeds, each fed as it is)"
    return DataSource(description, batches, num_samples=len(files), len_hint=len(files), has_labels=has_labels)


def test_data_source(path, specs) -> DataSource:
    folders, _ = test_data_feeds(path, specs)

    def batches() -> Iterator[tuple[Batch, None]]:
        _, feeds = test_data_feeds(path, specs)
        return ((feed, None) for feed in feeds)

    description = f"{path} ({len(folders)} ONNX test-data feed{'s' if len(folders) > 1 else ''})"
    return DataSource(description, batches, num_samples=len(folders), len_hint=len(folders))


def generated_source(resolved) -> DataSource:
    """One batch of generated inputs (``runtime.inputs.ResolvedInputs``) as a data source."""

    def batches() -> Iterator[tuple[Batch, None]]:
        yield dict(resolved.feeds), None

    return DataSource(resolved.description, batches, num_samples=None, len_hint=1, is_random=True)
