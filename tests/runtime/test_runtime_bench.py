"""Latency measurement: structure only; never a speed."""

from __future__ import annotations

import numpy as np
import pytest

from onnxslim.errors import UsageError
from onnxslim.runtime import bench
from onnxslim.runtime.bench import MIN_RUNS, measure_latency


def test_measure_latency_structure(chain):
    feeds = {"X": np.ones((3, 5), np.float32)}
    rounds = []
    stats = measure_latency(
        [chain(2.0), chain(3.0)],
        feeds,
        warmup=1,
        repeat=6,
        max_seconds=60,
        progress=lambda d, t: rounds.append((d, t)),
    )
    assert len(stats) == 2 and rounds == [(i, 6) for i in range(1, 7)]
    for s in stats:
        assert s.runs == 6 and s.batch == 3 and s.threads == 1 and s.provider == "CPUExecutionProvider"
        assert 0 < s.min_ms <= s.median_ms <= s.p90_ms
        assert set(s.to_dict()) == {
            "median_ms",
            "p90_ms",
            "mean_ms",
            "min_ms",
            "runs",
            "batch",
            "threads",
            "provider",
        }


def test_measure_latency_stops_early_after_min_runs(chain):
    stats = measure_latency([chain()], {"X": np.ones((1, 5), np.float32)}, warmup=0, repeat=30, max_seconds=0)
    assert stats[0].runs == MIN_RUNS


def test_measure_latency_rejects_bad_arguments(chain):
    with pytest.raises(UsageError):
        measure_latency([], {})
    with pytest.raises(UsageError):
        measure_latency([chain()], {"X": np.ones((1, 5), np.float32)}, repeat=0)


def test_multi_threaded_models_run_in_blocks_with_untimed_starts(chain, monkeypatch):
    """A pool's spinning threads must not slow the next model: blocks, the first runs untimed."""
    order = []
    real_bind = bench.bind

    def counting_bind(session, feeds):
        call = real_bind(session, feeds)
        index = len(order)
        order.append([])
        return lambda: (order[index].append(1), call())[1]

    monkeypatch.setattr(bench, "bind", counting_bind)
    feeds = {"X": np.ones((1, 5), np.float32)}
    stats = measure_latency([chain(2.0), chain(3.0)], feeds, threads=2, warmup=1, repeat=3, max_seconds=60)
    assert [s.runs for s in stats] == [3 * (bench.BLOCK - bench.UNTIMED)] * 2
    assert [len(calls) for calls in order] == [1 + 3 * bench.BLOCK] * 2
    single = measure_latency([chain(2.0)], feeds, threads=1, warmup=0, repeat=3, max_seconds=60)
    assert single[0].runs == 3
