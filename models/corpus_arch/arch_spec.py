"""What one corpus architecture is: a torch module factory, its inputs, and how it is exported.

A ``Spec`` names one model folder of the corpus. ``build()`` returns a torch module in eval
mode whose ``forward`` takes the inputs by the names in ``inputs`` (in that order) and returns
a flat tuple of tensors in the order of ``outputs``. ``inputs(batch, length)`` returns the
named example tensors at a batch size and a sequence length (or image side, or audio samples):
the export uses ``export_at`` and the stored test data ``test_at``, so a dynamic axis is
exported at one size and checked at another, as a user's model meets other sizes than the one
it was traced at. ``dynamic`` maps an input or output name to ``{axis: dim_name}``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import torch

Inputs = "OrderedDict[str, torch.Tensor]"


@dataclass
class Spec:
    name: str
    source: str
    exporter: str  # "legacy" | "dynamo"
    opset: int
    build: Callable[[], torch.nn.Module]
    inputs: Callable[[int, int], "OrderedDict[str, torch.Tensor]"]
    outputs: list[str]
    export_at: tuple[int, int] = (2, 8)
    test_at: tuple[int, int] = (3, 11)
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    notes: str = ""
    fp16: bool = False
    external: bool = False
    ir3: bool = False
    neg1_dims: bool = False


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def token_ids(batch: int, length: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """Ids over the whole vocabulary except the first few (often special tokens)."""
    return torch.randint(3, vocab, (batch, length), generator=seeded(seed), dtype=torch.long)


def padded_mask(batch: int, length: int, pad_left: bool = False) -> torch.Tensor:
    """Ones, with the last (or first) quarter of every second row padded with zeros."""
    mask = torch.ones(batch, length, dtype=torch.long)
    pad = max(1, length // 4)
    for row in range(1, batch, 2):
        if pad_left:
            mask[row, :pad] = 0
        else:
            mask[row, length - pad:] = 0
    return mask


def pixels(batch: int, side: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Normalized image values, roughly what a mean/std preprocessing gives."""
    return torch.randn(batch, channels, side, side, generator=seeded(seed)).clamp(-2.5, 2.5)


def audio(batch: int, samples: int, seed: int = 0) -> torch.Tensor:
    t = torch.arange(samples, dtype=torch.float32) / 16000.0
    tone = 0.3 * torch.sin(2 * torch.pi * 440.0 * t)
    return tone + 0.05 * torch.randn(batch, samples, generator=seeded(seed))


def named(**tensors: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict(tensors)


def axes(names: list[str], spec: dict[int, str]) -> dict[str, dict[int, str]]:
    """The same dynamic axes for several inputs or outputs."""
    return {name: dict(spec) for name in names}


def realistic_norms(module: torch.nn.Module, example: "OrderedDict[str, torch.Tensor]", seed: int = 0) -> None:
    """Give normalization layers what a trained model has: non-trivial affine weights, and
    BatchNorm statistics measured on the example inputs (a random-init network whose BN keeps
    mean 0 / var 1 lets activations vanish: some models output exact zeros).
    """
    g = torch.Generator().manual_seed(seed)
    batch_norms = []
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm, torch.nn.GroupNorm)):
                if getattr(sub, "weight", None) is not None:
                    sub.weight.copy_(torch.empty_like(sub.weight).uniform_(0.5, 1.5, generator=g))
                if getattr(sub, "bias", None) is not None:
                    sub.bias.copy_(0.1 * torch.randn(sub.bias.shape, generator=g))
            if isinstance(sub, torch.nn.modules.batchnorm._BatchNorm) and sub.track_running_stats:
                sub.reset_running_stats()
                sub.momentum = None  # cumulative average: the stats of the batch seen
                batch_norms.append(sub)
        if batch_norms:
            module.train()
            module(*example.values())
    module.eval()
