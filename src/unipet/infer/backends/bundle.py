"""The folder ``unipet export`` writes, read and written in one place.

Layout of ``OUT/``::

    meta.json      the checkpoint's ``CheckpointMeta`` (model config, channels, preprocessing, spacing, patch, task
                   set, recipe, versions): what the predictor needs to segment a study from the export alone
    export.json    the export's record: format, precision, task mode, tile shape, the graph of each task, the
                   classifier graph, the source checkpoint's id, the check against PyTorch, the int8 acceptance
    network*.onnx  ONNX graphs (``--format onnx``), or
    network*.xml   OpenVINO IR (``.xml`` + ``.bin``; ``--format openvino``)
    classifier.*   the task classifier's graph (models with ``--task auto``)

An export's id (recorded in the masks it predicts, as a checkpoint's is) is the first 16 hex digits of the SHA-256
of its graph files' SHA-256s.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from unipet.checkpoint import CheckpointMeta, file_sha256
from unipet.errors import ConfigError, InputFileError

EXPORT_FILE = "export.json"
META_FILE = "meta.json"
#: format of ``export.json``
EXPORT_VERSION = 1


def is_export(path: str | Path) -> bool:
    """True when ``path`` is a folder written by ``unipet export``."""
    path = Path(path)
    return (path / EXPORT_FILE).is_file() and (path / META_FILE).is_file()


def graph_files(record: dict[str, Any]) -> list[str]:
    """Every graph file an export record names (weights files of OpenVINO IR included)."""
    names = list(record.get("networks", {}).values()) + ([record["classifier"]] if record.get("classifier") else [])
    return names + [n[:-4] + ".bin" for n in names if n.endswith(".xml")]


def export_id(folder: Path, record: dict[str, Any]) -> str:
    """16 hex digits identifying an export's graphs (see the module docstring)."""
    h = hashlib.sha256()
    for name in sorted(graph_files(record)):
        h.update(file_sha256(folder / name).encode())
    return h.hexdigest()[:16]


def read_export(path: str | Path) -> tuple[CheckpointMeta, dict[str, Any]]:
    """``(meta, record)`` of an export folder; a missing or damaged file is one ``UnipetError``."""
    folder = Path(path)
    if not is_export(folder):
        raise InputFileError(f"{folder} is not a folder written by `unipet export` ({META_FILE} + {EXPORT_FILE}); "
                             "export a checkpoint first: unipet export RUN_DIR OUT --format onnx")
    try:
        record = json.loads((folder / EXPORT_FILE).read_text())
        raw = json.loads((folder / META_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{folder} holds a damaged JSON file ({exc}); export the checkpoint again") from None
    if not isinstance(record, dict) or record.get("version", 0) > EXPORT_VERSION:
        raise ConfigError(f"{folder / EXPORT_FILE} was written by a newer unipet; upgrade unipet to read it")
    missing = [n for n in graph_files(record) if not (folder / n).is_file()]
    if missing:
        raise InputFileError(f"{folder} lacks {', '.join(missing)}; the export is incomplete — export again")
    meta = CheckpointMeta.from_dict(raw, str(folder / META_FILE))
    meta.checkpoint_id = record.get("id")
    return meta, record

