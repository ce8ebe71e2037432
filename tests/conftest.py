"""Shared fixtures: paths to the shared reference data, small deterministic volumes."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

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
