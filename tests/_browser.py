"""Headless Chromium for the browser tests: screenshot a local page, dump its DOM, collect its console lines.

Debian's ``chromium`` (``.ci/run`` installs it when missing). WebGL2 runs on SwiftShader (CPU). Tests that need
it call ``require_chromium()``, which skips with the reason when no browser can be found.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]?\s*(.*)")
_FLAGS = ["--headless", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync", "--mute-audio",
          "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--enable-logging=stderr", "--v=0",
          "--force-device-scale-factor=1"]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def require_chromium() -> str:
    exe = chromium()
    if exe is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium; .ci/run does it)")
    return exe


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="unipet-chromium-") as profile:
        env = {**os.environ, "HOME": profile}
        return subprocess.run([require_chromium(), *_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout, env=env)


def console_lines(stderr: str) -> list[str]:
    """The page's console messages (and uncaught errors) that Chromium logged to stderr."""
    return [m.group(1) for line in stderr.splitlines() if (m := CONSOLE.search(line))]


def screenshot(url: str, png: Path, size: tuple[int, int] = (1280, 2000), wait_ms: int = 4000,
               timeout: float = 60.0) -> tuple[np.ndarray, list[str]]:
    """Render ``url`` at ``size`` (width, height) px to ``png``; returns the RGB pixels ``(h, w, 3)`` and the
    console lines."""
    from PIL import Image

    proc = _run([f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={wait_ms}",
                 f"--screenshot={png}", url], timeout)
    assert png.exists(), f"chromium wrote no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return np.asarray(Image.open(png).convert("RGB")), console_lines(proc.stderr)


def dump_dom(url: str, wait_ms: int = 4000, size: tuple[int, int] = (1280, 900),
             timeout: float = 60.0) -> tuple[str, list[str]]:
    """The DOM of ``url`` after loading (and ``wait_ms`` of virtual time), and the console lines."""
    proc = _run([f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={wait_ms}", "--dump-dom", url],
                timeout)
    return proc.stdout, console_lines(proc.stderr)


def non_blank_fraction(region: np.ndarray, background: tuple[int, int, int] = (255, 255, 255), tol: int = 12) -> float:
    """Share of pixels of ``region`` (h, w, 3) that differ from ``background`` by more than ``tol`` in a channel."""
    diff = np.abs(region.astype(np.int16) - np.asarray(background, np.int16)).max(axis=-1)
    return float((diff > tol).mean())
