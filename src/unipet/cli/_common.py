"""Small helpers shared by the CLI modules (console, progress)."""
from __future__ import annotations

from rich.console import Console

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)
