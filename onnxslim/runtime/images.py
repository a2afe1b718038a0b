"""Image folders for ``--data``/``--calibration-data``: the ``--preprocess`` spec and decoding.

Spec text, e.g. ``size=224x224,mean=0.485;0.456;0.406,std=0.229;0.224;0.225,layout=NCHW,order=RGB,scale=255``:

* ``size=HxW``: resize target (bilinear, half-pixel centres); defaults to the model input's
  fixed spatial dims;
* ``scale`` (default 1): pixel values are divided by it first, so ``scale=255`` maps 8-bit
  pixels to [0, 1];
* ``mean``/``std`` (defaults 0 and 1): one value, or one per channel, separated by ``;``;
  applied as ``(pixel / scale - mean) / std``;
* ``layout``: ``NCHW`` (default) or ``NHWC``; ``order``: ``RGB`` (default) or ``BGR``.

Images are ``.npy`` arrays (``HxW`` or ``HxWxC`` pixels) or, when pillow happens to be
importable, ``.png``/``.jpg``/``.jpeg``/``.bmp`` files. Pillow is deliberately not a dependency.
The channel count comes from the model input: colour images become grey by ITU-R BT.601
luma weights for a 1-channel input, and grey images are repeated for a 3-channel one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from onnxslim.errors import DataError, UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".npy")
_DECODED_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Preprocess:
    """A parsed ``--preprocess`` spec; ``size`` is None when the model's dims should be used."""

    size: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "NCHW"
    order: str = "RGB"
    scale: float = 1.0

    @classmethod
    def parse(cls, text: str) -> Preprocess:
        """Parse spec text; raises UsageError naming the bad item."""
        values: dict[str, object] = {}
        for item in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip().lower()
            if not sep or key not in _PARSERS:
                known = ", ".join(_PARSERS)
                raise UsageError(f"--preprocess: bad item {item!r} (keys: {known})")
            try:
                values[key] = _PARSERS[key](value.strip())
            except ValueError as exc:
                raise UsageError(f"--preprocess: bad {key} {value.strip()!r}: {exc}") from None
        return cls(**values)

    def apply(self, pixels: np.ndarray, channels: int, size: tuple[int, int]) -> np.ndarray:
        """One image (HxW or HxWxC pixels) -> model layout without the batch axis."""
        image = _match_channels(pixels.astype(np.float32), channels)
        image = _resize_bilinear(image, size)
        if self.order == "BGR":
            image = image[..., ::-1]
        image = (image / self.scale - _per_channel(self.mean, channels)) / _per_channel(self.std, channels)
        return np.ascontiguousarray(image.transpose(2, 0, 1) if self.layout == "NCHW" else image)


def read_image(path: str) -> np.ndarray:
    """Pixels of one image file as an array (HxW or HxWxC)."""
    if path.lower().endswith(".npy"):
        try:
            pixels = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read image {path}: {exc}") from None
        if pixels.ndim not in (2, 3):
            raise DataError(f"image {path} has shape {pixels.shape}; expected HxW or HxWxC")
        return pixels
    try:
        from PIL import Image  # noqa: PLC0415 -- optional: pillow is not a dependency
    except ImportError:
        raise DataError(
            f"reading {os.path.splitext(path)[1]} images needs pillow (pip install pillow); "
            "or save the images as .npy arrays"
        ) from None
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB" if image.mode not in ("L", "I", "F") else image.mode))
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError("expected HxW with positive integers, e.g. 224x224")
    return int(parts[0]), int(parts[1])


def _floats(text: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in text.split(";"))
    if not values:
        raise ValueError("expected numbers separated by ';'")
    return values


def _choice(*options: str):
    def parse(text: str) -> str:
        if text.upper() not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return text.upper()

    return parse


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be positive")
    return value


def _std(text: str) -> tuple[float, ...]:
    values = _floats(text)
    if any(v == 0 for v in values):
        raise ValueError("must not be zero")
    return values


_PARSERS = {
    "size": _size,
    "mean": _floats,
    "std": _std,
    "layout": _choice("NCHW", "NHWC"),
    "order": _choice("RGB", "BGR"),
    "scale": _positive,
}


def _per_channel(values: tuple[float, ...], channels: int) -> np.ndarray:
    if len(values) not in (1, channels):
        raise UsageError(f"--preprocess: {len(values)} mean/std values for {channels} channels")
    return np.asarray(values, dtype=np.float32)


def _match_channels(image: np.ndarray, channels: int) -> np.ndarray:
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 4:
        image = image[..., :3]  # drop alpha
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 3 and channels == 1:
        return (image @ _LUMA)[..., None]
    if have == 1:
        return np.repeat(image, channels, axis=-1)
    raise DataError(f"image has {have} channels; the model input takes {channels}")


def _resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with half-pixel centres (as Pillow and ONNX Resize do)."""
    height, width = image.shape[:2]
    if (height, width) == tuple(size):
        return image
    ys, y0, y1 = _axis_weights(height, size[0])
    xs, x0, x1 = _axis_weights(width, size[1])
    top = image[y0][:, x0] * (1 - xs)[None, :, None] + image[y0][:, x1] * xs[None, :, None]
    bottom = image[y1][:, x0] * (1 - xs)[None, :, None] + image[y1][:, x1] * xs[None, :, None]
    return top * (1 - ys)[:, None, None] + bottom * ys[:, None, None]


def _axis_weights(src: int, dst: int):
    coords = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
    low = np.floor(coords).astype(np.int64)
    high = np.minimum(low + 1, src - 1)
    return (coords - low).astype(np.float32), low, high
