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
from unipet.errors import InterruptedRun, UnipetError

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "app" and not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    try:
        code = app(args=argv, prog_name="unipet", standalone_mode=False)
    except InterruptedRun as exc:
        print(f"unipet: {exc}", file=sys.stderr)
        return exc.exit_code
    except UnipetError as exc:
        print(f"unipet: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # read-only folders, full disks, missing paths met outside unipet's own checks
        print(f"unipet: error: {_os_error_line(exc)}", file=sys.stderr)
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
    return code if isinstance(code, int) else 0


def _one_line(exc: BaseException) -> str:
    """The message on one line (a multi-line message from a library is joined)."""
    return " ".join(str(exc).split("\n")).strip()


def _os_error_line(exc: OSError) -> str:
    import errno

    what = f"{exc.filename}: " if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{what}disk full ({exc.strerror}); free space and run the same command again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{what}{exc.strerror}; choose a path you can write to (or read)"
    if exc.errno in (errno.ENOTDIR, errno.EISDIR, errno.EEXIST):
        return f"{what}{exc.strerror}: a file stands where a folder must be, or the reverse; choose another path"
    if exc.errno == errno.ENOENT:
        return f"{what}does not exist; check the path"
    return f"{what}{exc.strerror or exc}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def run() -> None:  # pragma: no cover - console script
    sys.exit(main())
