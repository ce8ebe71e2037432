"""Small helpers shared by the CLI modules (console, progress)."""
from __future__ import annotations

from rich.console import Console

# soft_wrap: a line is never broken at the console width (80 columns when the output is a file or a pipe);
# tables still fit the width.
console = Console(stderr=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
