"""Fixtures and the hypothesis profile.

Helper functions shared by tests live in ``onnxslim.testing`` (pytest's importlib mode cannot import
a helper module from ``tests/``); what needs pytest itself lives here as fixtures and hooks.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from onnxslim.testing import models_module

REPO = Path(__file__).resolve().parents[1]

settings.register_profile("ci", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=40, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that reads a real model (the ``fetched`` or ``unfetchable`` fixture) is ``slow``,
    whether or not its file says so, so ``-m "not slow"`` leaves every one of them out."""
    for item in items:
        if {"fetched", "unfetchable"} & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def repo() -> Path:
    return REPO


def _unfetchable(name: str, exc: Exception) -> None:
    """A real model that cannot be fetched skips the test, except in CI (CI=true), where it fails
    it: CI must run them (the contract's rule)."""
    if os.environ.get("CI", "").lower() == "true":
        raise exc
    pytest.skip(f"cannot fetch {name}: {exc}")


@pytest.fixture
def unfetchable():
    """``unfetchable(name, exc)``, called where a real model's fetch failed: the one CI rule."""
    return _unfetchable


@pytest.fixture
def fetched():
    """``fetched(name)``: the path of a real model from models/fetch.py, or the test skips (fails
    in CI) when it cannot be fetched."""
    fetch = models_module("fetch")

    def get(name: str) -> Path:
        try:
            return fetch.fetch(name)
        except fetch.FetchError as exc:
            _unfetchable(name, exc)

    return get
