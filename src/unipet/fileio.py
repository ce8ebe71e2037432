"""Atomic, non-destructive file writing shared by every writer in unipet.

Writes go to a temporary file in the destination folder and are moved into place with ``os.replace``,
so a crash never leaves a half-written output. Existing outputs are refused unless ``overwrite=True``.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from unipet.errors import DiskFullError, InputFileError, OutputError, OutputExistsError


def umask_mode(directory: bool = False) -> int:
    """Permission bits a new file (0666) or folder (0777) gets under the process umask, as ``open`` and ``mkdir``
    give them; ``tempfile.mkstemp``/``mkdtemp`` create 0600/0700, so atomic writers apply this before the rename."""
    return (0o777 if directory else 0o666) & ~_umask()


def _umask() -> int:
    """The process umask: read from ``/proc/self/status`` where Linux offers it (no window in which another thread
    could create a file under a changed umask), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Return ``path`` as a Path after checking that writing it destroys nothing unasked.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name for this output (--overwrite never replaces a folder)")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; choose another output or pass --overwrite to replace it")
    return path


def ensure_folder(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``folder`` (and parents) if needed and check that files can be created in it.

    Raises:
        OutputError: ``folder`` (or a parent) is a file, or the folder is not writable.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{what} {folder} is a file, not a folder; give a folder path") from None
    except NotADirectoryError:
        raise OutputError(f"{what} {folder} lies below a file, not a folder; give a folder path") from None
    except PermissionError:
        raise OutputError(f"{what} {folder} cannot be created (permission denied); choose a writable place") from None
    if not folder.is_dir():
        raise OutputError(f"{what} {folder} is a file, not a folder; give a folder path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {folder} is not writable; choose another folder or fix its permissions")
    return folder


def check_output_folder(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """``ensure_folder``'s checks without creating anything: ``folder`` is a writable folder, or the nearest
    existing parent is a writable folder (so that a run can refuse a bad output path before it starts).

    Raises:
        OutputError: as ``ensure_folder``.
    """
    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            raise OutputError(f"{what} {folder} is a file, not a folder; give a folder path")
        probe = folder
    else:
        probe = next((p for p in folder.absolute().parents if p.exists()), Path("/"))
        if not probe.is_dir():
            raise OutputError(f"{what} {folder} lies below a file, not a folder; give a folder path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {folder} is not writable; choose another folder or fix its permissions")
    return folder


def inside(folder: str | os.PathLike, name: str) -> Path:
    """``folder / name``, checked to stay inside ``folder`` (no separators or ``..`` escaping it).

    Raises:
        OutputError: the resolved path leaves ``folder``.
    """
    folder = Path(folder)
    path = folder / name
    root = folder.resolve()
    if path.resolve().parent != root and root not in path.resolve().parents:
        raise OutputError(f"output name {name!r} would be written outside {folder}; names must not contain path "
                          "separators or '..'")
    return path


def _os_error(exc: OSError, path: Path) -> OutputError:
    """An OSError while writing ``path`` as one clear line."""
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        free = shutil.disk_usage(path.parent if path.parent.exists() else Path.cwd()).free
        return DiskFullError(f"disk full while writing {path} ({free / 1e6:.0f} MB free); free space and run again "
                             "(outputs already written are complete and kept)")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"cannot write {path}: {exc.strerror}; choose a writable output folder")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return OutputError(f"cannot write {path}: {exc.strerror} (a file stands where a folder must be, or the "
                           "reverse); choose another output path")
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path`` atomically.

    ``suffix`` defaults to the destination's full suffix (``.nii.gz`` stays ``.nii.gz``) so that writers
    which pick their format from the file name keep working. On an exception the temporary file is removed
    and ``path`` is left untouched.
    """
    path = check_writable(path, overwrite)
    ensure_folder(path.parent)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    except OSError as exc:
        raise _os_error(exc, path) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
            os.chmod(tmp, umask_mode())  # mkstemp made it 0600; outputs get the mode any tool would give them
            os.replace(tmp, path)
        except OSError as exc:
            raise _os_error(exc, path) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically. Returns the final path."""
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, overwrite: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically. Returns the final path."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite)


def atomic_write_json(path: str | os.PathLike, obj: Any, overwrite: bool = False) -> Path:
    """Write ``obj`` as indented, strict JSON atomically (NaN and ±Inf become ``null``). Returns the final path."""
    text = json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False)
    return atomic_write_text(path, text + "\n", overwrite)


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that strict JSON accepts: NumPy values to Python, NaN/±Inf to None, paths to str."""
    import math

    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return json_safe(_json_default(obj))


def _json_default(obj: Any) -> Any:
    """Serialise NumPy scalars/arrays and paths that ``json`` does not know."""
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def read_csv_table(path: str | os.PathLike, what: str = "table", fix: str = "check the file") -> Any:
    """A CSV file as a pandas DataFrame.

    Raises:
        InputFileError: the file is missing or is not readable CSV; the message names ``what`` and ``fix``.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{what} {path} does not exist; {fix}")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{what} {path} cannot be read as CSV ({exc}); {fix}") from None


def read_json_object(path: str | os.PathLike, what: str = "file", fix: str = "re-create it") -> dict[str, Any]:
    """A JSON file holding an object, as a dict.

    Raises:
        InputFileError: the file is missing, not valid JSON or not an object; the message names ``what`` and ``fix``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{what} {path} does not exist; {fix}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{what} {path} is not valid JSON ({exc}); {fix}") from None
    if not isinstance(data, dict):
        raise InputFileError(f"{what} {path} holds no JSON object; {fix}")
    return data
