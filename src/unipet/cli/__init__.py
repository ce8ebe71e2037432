"""Command line: ``unipet <stage> ...``. Thin: each sub-command parses arguments and calls the API.

Sub-commands live in the modules of this package (one module per area); every module is imported here
so that its ``@app.command`` functions register. User mistakes (``UnipetError``) print one line to
stderr and exit with status 2, without a traceback.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys

from unipet.cli.app import app
from unipet.errors import UnipetError

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "app" and not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    try:
        app(args=argv, prog_name="unipet", standalone_mode=False)
    except UnipetError as exc:
        print(f"unipet: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help, Typer/click usage errors
        return int(exc.code or 0)
    except KeyboardInterrupt:
        print("unipet: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # Usage errors of Typer's (vendored) click: they know how to print themselves.
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            return int(exc.exit_code)
        if type(exc).__name__ == "Abort":
            print("unipet: aborted", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def run() -> None:  # pragma: no cover - console script
    sys.exit(main())
