"""Latency: median and p90 of interleaved runs after warm-up, batch and threads stated.

All models run in one process, one session each, round-robin: every round runs each model
once, and the starting model rotates from round to round. Interleaving spreads frequency
scaling, cache and noisy-neighbour effects over every model alike, so the comparison is fair
even when the absolute numbers drift. Never used to gate correctness.

With more than one intra-op thread, each turn is a block of ``BLOCK`` runs of which the first
``UNTIMED`` are not timed: after a run, ORT's pool threads spin for a while, and on a 2-core
machine the spinning threads of the model that ran last take a core from the next one (MiniLM
fp32 at 2 threads: 43 ms interleaved run by run, 22 ms alone and in blocks).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import onnx

from onnxslim.errors import UsageError
from onnxslim.runtime.session import bind, make_session

logger = logging.getLogger(__name__)

#: Early stopping on ``max_seconds`` still leaves at least this many timed runs per model.
MIN_RUNS = 5
#: Runs per turn with a multi-threaded pool, and how many of them are not timed.
BLOCK, UNTIMED = 6, 2


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one model; times in milliseconds. ``threads`` None means ORT's default."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    batch: int
    threads: int | None
    provider: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def measure_latency(
    models: Sequence[onnx.ModelProto],
    feeds: Mapping[str, np.ndarray],
    provider: str = "CPUExecutionProvider",
    threads: int | None = 1,
    warmup: int = 5,
    repeat: int = 30,
    max_seconds: float = 10.0,
    progress: Callable[[int, int], None] | None = None,
    one_at_a_time: bool = False,
) -> list[LatencyStats]:
    """Time ``models`` on the same ``feeds``, interleaved; one ``LatencyStats`` per model.

    Args:
        models: models to time (each at ORT's deployed optimization level).
        feeds: inputs; each model receives the ones it declares.
        provider: ORT provider name.
        threads: intra-op threads (None: ORT's default).
        warmup: untimed runs per model before timing.
        repeat: timed rounds at most.
        max_seconds: stop after the round that passes this many seconds of timing, once every
            model has ``MIN_RUNS`` runs.
        progress: called after each round with (rounds done, ``repeat``).
        one_at_a_time: time each model alone, its session freed before the next one's is made
            (models of gigabytes: two sessions would hold the weights twice); not interleaved,
            so a change of load on the machine between them is not averaged out.

    Raises:
        UsageError: no models, or a non-positive ``repeat``.
    """
    if not models or repeat < 1 or warmup < 0:
        raise UsageError("measure_latency needs at least one model, repeat >= 1 and warmup >= 0")
    if one_at_a_time:
        seconds = max_seconds / len(models)
        return [measure_latency([m], feeds, provider, threads, warmup, repeat, seconds, progress)[0] for m in models]
    sessions = [make_session(m, provider, threads, optimize=True) for m in models]
    calls = [bind(s, feeds) for s in sessions]
    for call in calls:
        for _ in range(warmup):
            call()
    times = _interleave(calls, repeat, max_seconds, progress, block=1 if threads == 1 else BLOCK)
    batches = [_batch(s, feeds) for s in sessions]
    return [_stats(t, b, threads, provider) for t, b in zip(times, batches, strict=True)]


def _interleave(calls, repeat: int, max_seconds: float, progress, block: int = 1) -> list[list[float]]:
    times: list[list[float]] = [[] for _ in calls]
    started = time.perf_counter()
    for round_index in range(repeat):
        for offset in range(len(calls)):
            index = (round_index + offset) % len(calls)
            if block > 1:
                for _ in range(UNTIMED):  # the previous model's pool threads may still be spinning
                    calls[index]()
            for _ in range(max(1, block - UNTIMED)):
                begin = time.perf_counter_ns()
                calls[index]()
                times[index].append((time.perf_counter_ns() - begin) / 1e6)
        if progress is not None:
            progress(round_index + 1, repeat)
        # MIN_RUNS counts timed runs, not rounds: a round of a multi-threaded model times a whole
        # block, and counting rounds kept 4x the runs asked for (svd's gate on PP-OCRv4 timed each
        # layer for 7 s at batch 32 where max_seconds says 0.5)
        if min(len(t) for t in times) >= MIN_RUNS and time.perf_counter() - started > max_seconds:
            logger.debug("latency: stopped after %d rounds (%.1f s)", round_index + 1, max_seconds)
            break
    return times


def _stats(times: list[float], batch: int, threads: int | None, provider: str) -> LatencyStats:
    values = np.asarray(times)
    return LatencyStats(
        median_ms=float(np.median(values)),
        p90_ms=float(np.percentile(values, 90)),
        mean_ms=float(values.mean()),
        min_ms=float(values.min()),
        runs=len(times),
        batch=batch,
        threads=threads,
        provider=provider,
    )


def _batch(session, feeds: Mapping[str, np.ndarray]) -> int:
    inputs = session.get_inputs()
    if not inputs:
        return 1
    first = feeds[inputs[0].name]
    return int(first.shape[0]) if np.ndim(first) > 0 else 1
