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


def test_one_at_a_time_times_each_model_alone(chain, monkeypatch):
    """Large models are timed one session at a time: never two sessions alive together."""
    alive, peak = [0], [0]
    real = bench.make_session

    class Counted:
        def __init__(self, session):
            self.session = session
            alive[0] += 1
            peak[0] = max(peak[0], alive[0])

        def __getattr__(self, name):
            return getattr(self.session, name)

        def __del__(self):
            alive[0] -= 1

    monkeypatch.setattr(bench, "make_session", lambda *a, **k: Counted(real(*a, **k)))
    monkeypatch.setattr(bench, "bind", lambda s, feeds: lambda: s.run(None, feeds))
    stats = measure_latency([chain(2.0), chain(3.0)], {"X": np.ones((3, 5), np.float32)}, warmup=1, repeat=6,
                            max_seconds=60, one_at_a_time=True)
    assert [s.runs for s in stats] == [6, 6] and peak[0] == 1


def test_early_stop_counts_timed_runs_in_blocks(chain):
    """With blocks, the early stop comes once each model has MIN_RUNS timed runs, not MIN_RUNS rounds."""
    stats = measure_latency([chain(2.0), chain(3.0)], {"X": np.ones((1, 5), np.float32)}, threads=2, warmup=0,
                            repeat=30, max_seconds=0)
    per_round = bench.BLOCK - bench.UNTIMED
    assert [s.runs for s in stats] == [-(-MIN_RUNS // per_round) * per_round] * 2
