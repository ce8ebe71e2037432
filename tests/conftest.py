"""Shared fixtures: paths to the shared reference data, small deterministic volumes."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# tests/ mirrors src/unipet/ (tests/<package>/test_<module>.py) and is collected with --import-mode=importlib;
# the shared helpers (_synthetic, _browser, ...) live here and are imported by name from every folder
sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the checkout (IBSI SUV DROs live there)."""
    return SHARED


@pytest.fixture(scope="session")
def ibsi_dir() -> Path:
    """The IBSI SUV digital reference objects; the test skips with a reason when they are absent."""
    path = SHARED / "ibsi_suv_dro" / "DRO"
    if not path.is_dir():
        pytest.skip(f"IBSI SUV DROs not found at {path} (they live in ../shared beside the checkout)")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


TESTS = Path(__file__).resolve().parent
#: folders whose tests are whole pipelines or benchmark runs (tens of seconds each); they run in CI too
EXPENSIVE = ("e2e", "benchmarks")


def pytest_collection_modifyitems(config, items):
    """Mark the tests under tests/e2e and tests/benchmarks ``slow`` (select or skip them with ``-m``)."""
    for item in items:
        parts = Path(str(item.fspath)).resolve().relative_to(TESTS).parts
        if parts and parts[0] in EXPENSIVE:
            item.add_marker(pytest.mark.slow)
