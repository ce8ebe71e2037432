"""Intensity normalisation schemes, recorded by name and parameters so that prediction repeats training.

A scheme is a JSON-able dict ``{"scheme": NAME, ...params}``; ``apply_normalisation(volume, spec)`` applies it.

CT schemes:
- ``ct-window``: clip to ``level ± width/2`` HU and scale to [0, 1] (gCIS: width 1800, level 0).
- ``ct-zscore``: nnU-Net's CT scheme — clip to the dataset's foreground 0.5/99.5 percentiles, subtract the
  foreground mean, divide by its standard deviation (statistics from the fingerprint).

PET (SUV) schemes:
- ``suv-zscore``: clip to ``[0, clip]`` SUV, subtract ``mean``, divide by ``std`` (dataset statistics).
- ``suv-log``: ``log1p(max(SUV, 0))`` — compresses bladder/brain peaks, keeps low uptake resolved.
- ``suv-clip``: ``clip(SUV, 0, clip) / clip``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from unipet.errors import ConfigError

CT_SCHEMES = ("ct-window", "ct-zscore")
PET_SCHEMES = ("suv-zscore", "suv-log", "suv-clip")


def make_spec(scheme: str, fingerprint: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
    """Build a complete normalisation spec, filling dataset statistics from ``fingerprint`` where needed.

    ``fingerprint["intensity"][modality]`` holds ``mean``, ``std``, ``p00_5``, ``p99_5`` of foreground voxels.
    """
    stats = (fingerprint or {}).get("intensity", {})
    if scheme == "ct-window":
        return {"scheme": scheme, "level": float(params.get("level", 0.0)), "width": float(params.get("width", 1800.0))}
    if scheme == "ct-zscore":
        s = _need(stats, "CT", scheme)
        return {"scheme": scheme, "lo": s["p00_5"], "hi": s["p99_5"], "mean": s["mean"], "std": max(s["std"], 1e-6)}
    if scheme == "suv-zscore":
        s = _need(stats, "PET", scheme)
        clip = float(params.get("clip", max(s["p99_5"], 1.0)))
        return {"scheme": scheme, "clip": clip, "mean": s["mean"], "std": max(s["std"], 1e-6)}
    if scheme == "suv-log":
        return {"scheme": scheme}
    if scheme == "suv-clip":
        return {"scheme": scheme, "clip": float(params.get("clip", 20.0))}
    raise ConfigError(f"unknown normalisation {scheme!r}; CT: {', '.join(CT_SCHEMES)}; PET: {', '.join(PET_SCHEMES)}")


def _need(stats: dict[str, Any], modality: str, scheme: str) -> dict[str, float]:
    if modality not in stats:
        raise ConfigError(f"normalisation {scheme} needs dataset statistics of {modality}; compute a fingerprint first")
    return stats[modality]


def apply_normalisation(volume: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Normalise a volume (any shape) according to ``spec``; returns float32."""
    v = volume.astype(np.float32, copy=False)
    scheme = spec.get("scheme")
    if scheme == "ct-window":
        lo = spec["level"] - spec["width"] / 2.0
        return ((np.clip(v, lo, lo + spec["width"]) - lo) / spec["width"]).astype(np.float32)
    if scheme == "ct-zscore":
        return ((np.clip(v, spec["lo"], spec["hi"]) - spec["mean"]) / spec["std"]).astype(np.float32)
    if scheme == "suv-zscore":
        return ((np.clip(v, 0.0, spec["clip"]) - spec["mean"]) / spec["std"]).astype(np.float32)
    if scheme == "suv-log":
        return np.log1p(np.maximum(v, 0.0)).astype(np.float32)
    if scheme == "suv-clip":
        return (np.clip(v, 0.0, spec["clip"]) / spec["clip"]).astype(np.float32)
    raise ConfigError(f"unknown normalisation scheme {scheme!r} in {spec}")


def foreground_stats(values: np.ndarray) -> dict[str, float]:
    """Mean, std and 0.5/99.5 percentiles of a 1-D sample of foreground intensities."""
    if values.size == 0:
        return {"mean": 0.0, "std": 1.0, "p00_5": 0.0, "p99_5": 1.0, "n": 0}
    p_lo, p_hi = np.percentile(values, [0.5, 99.5])
    return {"mean": float(values.mean()), "std": float(values.std()), "p00_5": float(p_lo), "p99_5": float(p_hi),
            "n": int(values.size)}
