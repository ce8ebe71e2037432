"""Self-describing, pickle-free checkpoints.

Layout of ``RUN_DIR/checkpoint/``::

    model.safetensors         weights and persistent buffers (text embeddings, ...)
    meta.json                 model config (registry name + kwargs + task set), channels and their
                              normalisation, spacing, patch, recipe, versions, data fingerprint, iteration
    train_state.safetensors   optimizer tensors (flattened: ``optimizer.<param>.<name>``), RNG states
    train_state.json          the rest of the training state (optimizer hyper-parameters, iteration,
                              sampler state, numpy RNG, grad-scaler state)

``meta.json`` is read and written here only, as a typed :class:`CheckpointMeta` with a format version
(``"format"``; a file without one is version 1, the first format). A version newer than this unipet reads is
refused with one ``ConfigError`` line. The training state's contents (optimizer, scaler, RNG) are
``unipet.train.state``'s business: this module stores what it is handed and gives it back.

The folder is written under a temporary name and swapped in by renames: the previous checkpoint is
renamed to ``.checkpoint.old``, the new one into place, then the old one is deleted. A process killed at
any moment leaves either ``checkpoint/`` or ``.checkpoint.old/`` complete; ``find_checkpoint`` takes
whichever exists; ``clean_stale_temporaries`` removes the ``.checkpoint.tmp*`` folders a killed write leaves.
Nothing is unpickled when loading: tensors come from safetensors, the rest from JSON.

Integrity: ``meta.json`` records ``weights_sha256``, the SHA-256 of ``model.safetensors``; loading verifies it
and refuses a damaged file, a damaged safetensors header, non-finite weights, and metadata that does not
describe the weights (an edited model name or kwargs), each with one ``UnipetError`` line. Checkpoints written
before the checksum existed (the shipped ``dpdnet-small`` among them) have no ``weights_sha256``: they are
accepted without a warning — their header, tensor shapes and finiteness are still checked — and
``checkpoint_id`` hashes their weights file on the fly, so every checkpoint has an id.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib import resources
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

import errno
import numpy as np

from unipet.errors import ConfigError, DiskFullError, InputFileError, UnipetError

CHECKPOINT = "checkpoint"
OLD = ".checkpoint.old"
TMP_PREFIX = ".checkpoint.tmp"
FORMAT_VERSION = 1
#: metadata key of the weights file's SHA-256 (hex)
CHECKSUM_KEY = "weights_sha256"



@dataclass
class CheckpointMeta:
    """Everything about a checkpoint except its tensors: what ``meta.json`` holds, typed.

    Attributes:
        model: the registry config ``{"name", "in_channels", "num_classes", "tasks", "patch_size", "kwargs"}``
            (empty for a pre-training checkpoint, which holds encoders, not a segmentation model).
        output_activation: ``"softmax"`` or ``"sigmoid"``.
        channels: input channel names in model order (e.g. ``["CT", "PET"]``).
        preprocess: the ``PreprocessConfig`` dict training used (prediction repeats it).
        spacing: training voxel spacing (z, y, x) in mm.
        patch_size: training patch (z, y, x) in voxels.
        tasks: names of the task set's tasks.
        recipe, sampler, data: the recipe, the sampler's description, the data record (fingerprint, cases, source).
        iteration, complete: how far training got, and whether it reached its last iteration.
        init_from: where the weights were initialised from (``unipet.train.init``'s record).
        pruned: gCIS pruning record (task, route, parameter counts) of an exported one-task model.
        kind: ``"pretrain"`` / ``"pretrain-anatomy"`` for pre-training checkpoints, None for segmentation models.
        encoder, pretrain: cross-modal pre-training: the encoders' shapes and the ``PretrainConfig``.
        anatomy, mastpro_kwargs: anatomical pre-training: its config and the MAST-Pro kwargs that load it.
        last: the last logged losses of a pre-training run.
        versions: unipet, torch and MONAI versions that wrote it.
        weights_sha256: SHA-256 of ``model.safetensors`` (None for checkpoints written before checksums).
        checkpoint_id: 16 hex digits of the weights' SHA-256; set on loading, never written.
        extra: every other key of ``meta.json`` (e.g. the shipped checkpoint's ``provenance``), kept as read.
        version: the metadata format (``"format"`` in the file).
    """

    model: dict[str, Any] = field(default_factory=dict)
    output_activation: str | None = None
    channels: list[str] | None = None
    preprocess: dict[str, Any] | None = None
    spacing: list[float] | None = None
    patch_size: list[int] | None = None
    tasks: list[str] | None = None
    recipe: dict[str, Any] | None = None
    sampler: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    iteration: int | None = None
    complete: bool | None = None
    init_from: dict[str, Any] | None = None
    pruned: dict[str, Any] | None = None
    kind: str | None = None
    encoder: dict[str, Any] | None = None
    pretrain: dict[str, Any] | None = None
    anatomy: dict[str, Any] | None = None
    mastpro_kwargs: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    versions: dict[str, str] | None = None
    weights_sha256: str | None = None
    checkpoint_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    # ------------------------------------------------------------------ file format
    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "meta.json") -> "CheckpointMeta":
        """Parse ``meta.json``'s dict; a format newer than this unipet reads is one ``ConfigError``."""
        if isinstance(raw, CheckpointMeta):
            return raw
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source} holds no JSON object; the checkpoint is damaged")
        raw = dict(raw)
        version = raw.pop("format", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ConfigError(f"{source} records the metadata format {version!r}, which is no unipet format; the "
                              "checkpoint is damaged")
        if version > FORMAT_VERSION:
            raise ConfigError(f"{source} is metadata format {version}, written by a newer unipet; this unipet reads "
                              f"format {FORMAT_VERSION} and older — upgrade unipet to load this checkpoint")
        names = {f.name for f in fields(cls)} - {"extra", "version"}
        known = {k: raw.pop(k) for k in list(raw) if k in names}
        if known.get("model") is None:
            known["model"] = {}
        return cls(**known, extra=raw, version=version)

    @classmethod
    def coerce(cls, meta: "CheckpointMeta | Mapping[str, Any]") -> "CheckpointMeta":
        """``meta`` itself, or a dict parsed by ``from_dict`` (callers that build metadata by hand)."""
        return meta if isinstance(meta, CheckpointMeta) else cls.from_dict(meta)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``meta.json`` (None fields and the load-time ``checkpoint_id`` left out)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("extra", "version", "checkpoint_id") or value is None or (f.name == "model" and not value):
                continue
            out[f.name] = value
        out.update(self.extra)
        out["format"] = self.version
        return out

    # ------------------------------------------------------------------ what readers ask
    @property
    def model_name(self) -> str | None:
        """Registry name of the model (None for pre-training checkpoints)."""
        return self.model.get("name")

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """The model's extra constructor arguments (a copy), with the legacy value of every option the recorded
        config predates (``unipet.models.registry.upgrade_kwargs``: a gCIS config without ``layout`` is
        ``layout="levels5"``)."""
        from unipet.models.registry import upgrade_kwargs

        kwargs = dict(self.model.get("kwargs") or {})
        return upgrade_kwargs(self.model_name, kwargs) if self.model_name else kwargs

    @property
    def num_classes(self) -> int:
        """Output channels of the model (2 when unrecorded: background + lesion)."""
        return int(self.model.get("num_classes", 2))

    @property
    def task_set(self):
        """The model's ``TaskSet``."""
        from unipet.tasks import TaskSet

        return TaskSet.from_dict(self.model["tasks"])

    @property
    def patch(self) -> tuple[int, int, int]:
        """Patch (z, y, x) prediction uses: the recorded training patch, else the model's."""
        return tuple(int(p) for p in (self.patch_size or self.model["patch_size"]))

    @property
    def preprocess_channels(self) -> list[str]:
        """Upper-case channel names of the recorded preprocessing (empty when unrecorded)."""
        return [str(c).upper() for c in (self.preprocess or {}).get("channels", [])]

    @property
    def data_fingerprint(self) -> str | None:
        """Fingerprint of the training data (``data_fingerprint`` of its cache), None when unrecorded."""
        return (self.data or {}).get("fingerprint")

    @property
    def augmentation(self) -> dict[str, Any]:
        """The training recipe's augmentation settings (empty when unrecorded)."""
        return (self.recipe or {}).get("augmentation") or {}

    @property
    def sampling(self) -> dict[str, float] | None:
        """The training recipe's patch-kind mix (None when unrecorded)."""
        return (self.recipe or {}).get("sampling")


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 (hex) of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def checkpoint_id(path: str | Path) -> str:
    """A short, stable id of a checkpoint's weights: the first 16 hex digits of their SHA-256.

    Read from ``meta.json`` (``weights_sha256``) when recorded, else computed from ``model.safetensors``.
    """
    folder = find_checkpoint(path)
    recorded = read_meta(folder).weights_sha256
    return (recorded if isinstance(recorded, str) and recorded else file_sha256(folder / "model.safetensors"))[:16]


def recover_interrupted_swap(run_dir: str | Path) -> bool:
    """Put ``.checkpoint.old/`` back as ``checkpoint/`` when a write was killed between its two renames (only the
    old one is left). Returns True when it did."""
    run_dir = Path(run_dir)
    final, old = run_dir / CHECKPOINT, run_dir / OLD
    if not final.exists() and (old / "meta.json").exists() and (old / "model.safetensors").exists():
        os.replace(old, final)
        return True
    return False


def clean_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Remove the ``.checkpoint.tmp*`` folders an interrupted ``save_checkpoint`` left in ``run_dir``.

    Only one process writes a run's checkpoints, so every temporary folder present before a write starts is
    stale. Returns the removed folders.
    """
    run_dir = Path(run_dir)
    removed = []
    if run_dir.is_dir():
        for p in run_dir.glob(f"{TMP_PREFIX}*"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def versions() -> dict[str, str]:
    """Versions of unipet, torch and MONAI (recorded in every checkpoint)."""
    import torch
    from importlib.metadata import PackageNotFoundError, version

    out = {"torch": torch.__version__}
    for pkg in ("unipet", "monai"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def data_fingerprint(cache) -> str:
    """SHA-256 (16 hex digits) of a cache's case list, preprocessing and dataset fingerprint."""
    payload = json.dumps({"cases": sorted(cache.case_ids), "preprocess": cache.meta.get("preprocess"),
                          "fingerprint": cache.meta.get("fingerprint")}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DDP / ``torch.compile`` wrappers."""
    import torch
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies of the state dict with shared storage made distinct (safetensors refuses aliases)."""
    import torch
    state, seen = {}, set()
    for k, v in unwrap(model).state_dict().items():
        t = v.detach().to("cpu")
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)) if t.numel() else None
        t = t.clone() if key in seen else t
        if key is not None:
            seen.add(key)
        state[k] = t.contiguous()
    return state


# ------------------------------------------------------------------------------------------ save / load
def save_checkpoint(run_dir: str | Path, model: torch.nn.Module, meta: CheckpointMeta | Mapping[str, Any],
                    training_state: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None) -> Path:
    """Write ``RUN_DIR/checkpoint/`` atomically (see the module docstring). Returns the checkpoint folder.

    Args:
        model: the (possibly wrapped) model; its ``config`` must hold the registry config.
        meta: the metadata (a dict is parsed by ``CheckpointMeta.from_dict``); ``versions``, the format and the
            weights' SHA-256 are set here.
        training_state: ``(tensors, json)`` for resuming, as ``unipet.train.state.pack_training_state`` builds
            it; written as ``train_state.safetensors`` and ``train_state.json``.
    """
    import torch
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(run_dir)
    weights = model_state(model)
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ConfigError(f"the model holds non-finite weights ({', '.join(bad[:3])}); training diverged — the "
                          "previous checkpoint is kept; resume with a lower learning rate")
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=run_dir))
    try:
        _apply_umask(tmp, directory=True)
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "unipet"})
        meta = replace(CheckpointMeta.coerce(meta), checkpoint_id=None,  # a loaded source's id is not ours
                       version=FORMAT_VERSION, versions=versions(),
                       weights_sha256=file_sha256(tmp / "model.safetensors"))
        (tmp / "meta.json").write_text(json.dumps(meta.to_dict(), indent=2, default=_json_default))
        if training_state is not None:
            tensors, state = training_state
            save_file(tensors, str(tmp / "train_state.safetensors"))
            (tmp / "train_state.json").write_text(json.dumps(state, default=_json_default))
        for f in tmp.iterdir():
            _apply_umask(f)
        _fsync_dir(tmp)
        final, old = run_dir / CHECKPOINT, run_dir / OLD
        recover_interrupted_swap(run_dir)  # never delete the only complete checkpoint
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(run_dir)
        if old.exists():
            shutil.rmtree(old)
        return final
    except Exception as exc:  # safetensors reports a full disk as SafetensorError("... os error 28")
        if is_disk_full(exc):
            need = sum(int(v.numel() * v.element_size()) for v in weights.values())
            free = shutil.disk_usage(run_dir).free
            raise DiskFullError(f"disk full while writing the checkpoint in {run_dir}: it needs about "
                                f"{2 * need / 1e6:.0f} MB (weights + optimizer state), {free / 1e6:.0f} MB are free; "
                                "free space, then resume with --resume (the previous checkpoint is intact)") from None
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def is_disk_full(exc: BaseException) -> bool:
    """True for an error that means the disk or quota is full (``OSError`` ENOSPC/EDQUOT, or a library error
    that wraps one, as safetensors' ``SafetensorError`` does)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return any(k in text for k in ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122"))


def _apply_umask(path: Path, directory: bool = False) -> None:
    """Give ``path`` the permissions of a newly created file/folder under the process umask (``mkstemp`` and
    ``mkdtemp`` create 0600/0700)."""
    from unipet.fileio import umask_mode

    os.chmod(path, umask_mode(directory))


def _fsync_dir(path: Path) -> None:
    for f in ([*path.iterdir(), path] if path.is_dir() else [path]):
        try:
            fd = os.open(f, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def _json_default(obj: Any) -> Any:
    import torch
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    if isinstance(obj, (Path, torch.dtype, torch.device)):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} in a checkpoint")


#: name of the checkpoint shipped with unipet (``resources/checkpoints/``)
DEFAULT_CHECKPOINT = "dpdnet-small"


def default_checkpoint() -> Path:
    """The checkpoint folder shipped with unipet (``resources/checkpoints/dpdnet-small``).

    Raises:
        InputFileError: the installed package carries no default checkpoint.
    """
    folder = Path(str(resources.files("unipet") / "resources" / "checkpoints" / DEFAULT_CHECKPOINT))
    if not (folder / "model.safetensors").exists():
        raise InputFileError(f"no default checkpoint in {folder}; pass --checkpoint RUN_DIR (a `unipet train` run) "
                             "or reinstall unipet")
    return folder


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder for a run folder, a checkpoint folder, or a file inside one.

    Raises:
        InputFileError: nothing resembling a checkpoint is there.
    """
    path = Path(path)
    if path.is_file():
        path = path.parent
    for candidate in (path, path / CHECKPOINT, path / OLD, path.parent / OLD if path.name == CHECKPOINT else None):
        if candidate is not None and (candidate / "meta.json").exists() and (candidate / "model.safetensors").exists():
            return candidate
    raise InputFileError(f"{path} holds no unipet checkpoint (meta.json + model.safetensors); give a run folder "
                         "written by `unipet train` or its checkpoint/ folder")


def read_meta(path: str | Path) -> CheckpointMeta:
    """``meta.json`` of a checkpoint (see ``find_checkpoint`` for ``path``)."""
    folder = find_checkpoint(path)
    try:
        raw = json.loads((folder / "meta.json").read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{folder / 'meta.json'} is not valid JSON ({exc}); the checkpoint is damaged") from None
    return CheckpointMeta.from_dict(raw, str(folder / "meta.json"))


def build_model(meta: CheckpointMeta) -> torch.nn.Module:
    """Rebuild an (untrained) model from checkpoint metadata through the registry (with ``meta.model_kwargs``:
    options the recorded config predates take the value they had when it was written)."""
    import torch
    from unipet.models import create
    from unipet.tasks import TaskSet

    cfg = meta.model
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise ConfigError("checkpoint metadata has no model config ('model.name'); it was not written by unipet")
    try:
        return create(cfg["name"], in_channels=int(cfg["in_channels"]), num_classes=int(cfg["num_classes"]),
                      tasks=TaskSet.from_dict(cfg["tasks"]), patch_size=cfg["patch_size"], **meta.model_kwargs)
    except UnipetError as exc:
        raise ConfigError(f"the checkpoint's metadata describes no buildable model ({exc}); meta.json was edited "
                          "or written by another unipet version") from None
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise ConfigError(f"the checkpoint's model config cannot be built ({type(exc).__name__}: {exc}); meta.json "
                          "was edited or written by another unipet version") from None


def verify_weights(folder: str | Path, meta: CheckpointMeta | None = None) -> str:
    """Check ``model.safetensors`` against the SHA-256 recorded in ``meta.json``; returns the file's SHA-256.

    A checkpoint without a recorded checksum (written before unipet recorded one) passes.

    Raises:
        InputFileError: the file's SHA-256 differs from the recorded one (the file was damaged or replaced).
    """
    folder = find_checkpoint(folder)
    meta = read_meta(folder) if meta is None else meta
    actual = file_sha256(folder / "model.safetensors")
    recorded = meta.weights_sha256
    if recorded and recorded != actual:
        raise InputFileError(f"{folder / 'model.safetensors'} is damaged: its SHA-256 {actual[:16]}... differs from "
                             f"the {str(recorded)[:16]}... recorded in meta.json; restore the checkpoint from a copy")
    return actual


def read_weights(path: str | Path, check_finite: bool = True) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; a damaged file or header, or (``check_finite``) a non-finite floating-point
    tensor, is one ``InputFileError``."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputFileError(f"{path} cannot be read as safetensors ({type(exc).__name__}: {exc}); the file is "
                             "damaged — restore it from a copy") from None
    bad = [k for k, v in state.items() if check_finite and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise InputFileError(f"{path} holds non-finite weights ({', '.join(bad[:3])}); the file is damaged or the "
                             "run diverged — use another checkpoint")
    return state


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, CheckpointMeta]:
    """``(model, meta)``: the model rebuilt from ``meta.json`` alone, weights loaded, in eval mode on ``device``.

    The weights are verified first (``verify_weights``, ``read_weights``); the returned ``meta`` gains
    ``checkpoint_id`` (16 hex digits of the weights' SHA-256), which predictions record beside their outputs.
    """
    import torch
    folder = find_checkpoint(path)
    meta = read_meta(folder)
    sha = verify_weights(folder, meta)
    state = read_weights(folder / "model.safetensors")
    model = build_model(meta)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).strip().splitlines()
        raise ConfigError(f"checkpoint {folder} does not fit the model its meta.json describes ({first[-1].strip() if first else exc}); "
                          "meta.json was edited or belongs to other weights") from None
    if missing or unexpected:
        raise ConfigError(f"checkpoint {folder} does not fit the model it describes (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}); it was written by another unipet version or edited")
    meta = replace(meta, checkpoint_id=sha[:16])
    return model.to(device).eval(), meta


def load_train_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, state)`` of a checkpoint's training state (for ``--resume``)."""
    import torch
    folder = find_checkpoint(path)
    if not (folder / "train_state.json").exists():
        raise InputFileError(f"checkpoint {folder} has no training state; it cannot be resumed (start a new run)")
    verify_weights(folder)
    read_weights(folder / "model.safetensors")
    try:
        state = json.loads((folder / "train_state.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{folder / 'train_state.json'} is damaged ({exc}); the run cannot be resumed from it") from None
    return read_weights(folder / "train_state.safetensors", check_finite=False), state
