"""The CI sample of the issue-12 corpus: a fixed, representative slice run through the real CLI.

150 ONNX node tests, 5 other backend tests (old IR and opsets), up to 8 architectures (those
models/corpus_arch.py builds) and 12 sklearn models go through optimize, inspect, verify and --dry-run; the lossy commands (quantize,
prune-weights, prune-channels, svd) run on a fixed quarter of the node sample and the sklearn
models only (``corpus.ci_lossy_models``), which keeps the test within about 6 minutes on 2 cores.

Targets asserted: no exit 3, no timeout or crash, no wrong or unloadable output from the default
pipeline, no changed input file, except the pairs listed in KNOWN_BROKEN (each with the upstream
defect that excuses it). A listed pair that passes fails the test too: the list may not outlive
its defect.

The runner is started as its own process (the README command) rather than from this pytest
process: it forks one process per task, and forking a process that has already run onnxruntime
sessions in earlier tests is not safe. In CI (``CI=true``) a corpus that cannot be built fails
the test; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from onnxslim.testing import models_module

MODELS = Path(__file__).resolve().parents[2] / "models"
corpus = models_module("corpus")
corpus_run = models_module("corpus_run")

#: (model, command) pairs excused from the targets, each with the upstream defect that breaks it
#: (ONNX Runtime lacks the op, the model itself is invalid...); our own bugs are fixed, never listed.
#: Measured empty on 2026-12-05 (`python models/corpus_run.py --sample ci --jobs 1`: 908 tasks here,
#: no exit 3, timeout, crash, wrong output or changed input; the pairs ORT cannot run exit 2).
KNOWN_BROKEN: dict[tuple[str, str], str] = {}


@pytest.mark.slow
def test_corpus_ci_sample(tmp_path: Path) -> None:
    try:
        corpus.build(("node", "backend", "sklearn", "arch"), "ci")
    except (corpus.CorpusError, ImportError, OSError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the corpus sample could not be built: {exc}")
        pytest.skip(f"the corpus sample could not be built (pip install -e '.[corpus]'): {exc}")
    out = tmp_path / "run.json"
    done = subprocess.run([sys.executable, str(MODELS / "corpus_run.py"), "--sample", "ci", "--jobs", "2",
                           "--timeout", "300", "--json", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    assert len([m for m in results if m.startswith("node/")]) == len(corpus.CI_NODE_SAMPLE)
    assert any(m.startswith("sklearn/") for m in results)
    assert len([m for m in results if m.startswith("backend/")]) == len(corpus.CI_BACKEND_SAMPLE)
    stale = sorted(f"{model} {command} ({why})" for (model, command), why in KNOWN_BROKEN.items()
                   if command in results.get(model, {})
                   and not corpus_run.failures({model: {command: results[model][command]}}))
    assert not stale, f"KNOWN_BROKEN pairs that pass now (remove them): {stale}"
    new = corpus_run.failures(results, set(KNOWN_BROKEN))
    assert not new, f"{len(new)} corpus failures not in KNOWN_BROKEN:\n" + "\n".join(new)
