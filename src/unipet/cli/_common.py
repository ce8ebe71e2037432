"""Small helpers shared by the CLI modules (console, progress)."""
from __future__ import annotations

from rich.console import Console

# soft_wrap: a line is never broken at the console width (80 columns when the output is a file or a pipe);
# tables still fit the width.
console = Console(stderr=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def require_inputs(**paths) -> None:
    """Refuse a missing input in one line before a command imports anything heavy (torch, MONAI, pandas):
    ``require_inputs(manifest=path, cache=None)`` checks every path that is not None, named by its keyword."""
    from pathlib import Path

    from unipet.errors import InputFileError

    for what, path in paths.items():
        if path is not None and not Path(path).exists():
            raise InputFileError(f"{what.replace('_', ' ')} {path} does not exist; check the path")
