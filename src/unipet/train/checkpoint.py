"""Self-describing, pickle-free checkpoints.

Layout of ``RUN_DIR/checkpoint/``::

    model.safetensors         weights and persistent buffers (text embeddings, ...)
    meta.json                 model config (registry name + kwargs + task set), channels and their
                              normalisation, spacing, patch, recipe, versions, data fingerprint, iteration
    train_state.safetensors   optimizer tensors (flattened: ``optimizer.<param>.<name>``), RNG states
    train_state.json          the rest of the training state (optimizer hyper-parameters, iteration,
                              sampler state, numpy RNG, grad-scaler state)

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
from pathlib import Path
from typing import Any

import errno
import numpy as np
import torch

from unipet.errors import ConfigError, DiskFullError, InputFileError, UnipetError

CHECKPOINT = "checkpoint"
OLD = ".checkpoint.old"
TMP_PREFIX = ".checkpoint.tmp"
FORMAT_VERSION = 1
#: metadata key of the weights file's SHA-256 (hex)
CHECKSUM_KEY = "weights_sha256"


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
    recorded = read_meta(folder).get(CHECKSUM_KEY)
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
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies of the state dict with shared storage made distinct (safetensors refuses aliases)."""
    state, seen = {}, set()
    for k, v in unwrap(model).state_dict().items():
        t = v.detach().to("cpu")
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)) if t.numel() else None
        t = t.clone() if key in seen else t
        if key is not None:
            seen.add(key)
        state[k] = t.contiguous()
    return state


# ------------------------------------------------------------------------------------------ optimizer state
def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (``optimizer.<param>.<name>``) and a JSON-able rest."""
    tensors, rest = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, entries in state["state"].items():
        rest["state"][str(pid)] = {}
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{pid}.{name}"] = value.detach().to("cpu").contiguous()
                rest["state"][str(pid)][name] = {"tensor": True}
            else:
                rest["state"][str(pid)][name] = value
    return tensors, rest


def unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    """Inverse of ``flatten_optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    for pid, entries in rest["state"].items():
        state[int(pid)] = {name: (tensors[f"optimizer.{pid}.{name}"] if isinstance(v, dict) and v.get("tensor") else v)
                           for name, v in entries.items()}
    groups = [dict(g) for g in rest["param_groups"]]
    for g in groups:  # JSON turned tuples into lists
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Global torch (CPU and CUDA) and numpy RNG states as ``(tensors, json)``."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return tensors, {"numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)]}


def set_rng_state(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> None:
    """Restore what ``rng_state`` saved."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.split(".")[-1]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, gauss = rest["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))


# ------------------------------------------------------------------------------------------ save / load
def save_checkpoint(run_dir: str | Path, model: torch.nn.Module, meta: dict[str, Any],
                    optimizer: torch.optim.Optimizer | None = None, train_state: dict[str, Any] | None = None,
                    extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``RUN_DIR/checkpoint/`` atomically (see the module docstring). Returns the checkpoint folder.

    Args:
        model: the (possibly wrapped) model; its ``config`` must hold the registry config.
        meta: JSON-able metadata (``build_meta``); ``versions`` and ``format`` are added.
        optimizer, train_state: training state for resuming (JSON-able dict: iteration, sampler, ...).
        extra_tensors: further tensors of the training state (e.g. an augmentation generator's state).
    """
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
        meta = {**{k: v for k, v in meta.items() if k != "checkpoint_id"},  # a loaded source's id is not ours
                "format": FORMAT_VERSION, "versions": versions(), CHECKSUM_KEY: file_sha256(tmp / "model.safetensors")}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=_json_default))
        if optimizer is not None or train_state is not None:
            tensors, rest = rng_state()
            state: dict[str, Any] = {"rng": rest, **(train_state or {})}
            if optimizer is not None:
                opt_tensors, opt_rest = flatten_optimizer(optimizer.state_dict())
                tensors.update(opt_tensors)
                state["optimizer"] = opt_rest
            tensors.update({f"extra.{k}": v.detach().to("cpu").contiguous() for k, v in (extra_tensors or {}).items()})
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
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    if isinstance(obj, (Path, torch.dtype, torch.device)):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} in a checkpoint")


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


def read_meta(path: str | Path) -> dict[str, Any]:
    """``meta.json`` of a checkpoint (see ``find_checkpoint`` for ``path``)."""
    folder = find_checkpoint(path)
    try:
        return json.loads((folder / "meta.json").read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{folder / 'meta.json'} is not valid JSON ({exc}); the checkpoint is damaged") from None


def build_model(meta: dict[str, Any]) -> torch.nn.Module:
    """Rebuild an (untrained) model from checkpoint metadata through the registry."""
    from unipet.models import create
    from unipet.tasks import TaskSet

    cfg = meta.get("model")
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise ConfigError("checkpoint metadata has no model config ('model.name'); it was not written by unipet")
    try:
        return create(cfg["name"], in_channels=int(cfg["in_channels"]), num_classes=int(cfg["num_classes"]),
                      tasks=TaskSet.from_dict(cfg["tasks"]), patch_size=cfg["patch_size"], **(cfg.get("kwargs") or {}))
    except UnipetError as exc:
        raise ConfigError(f"the checkpoint's metadata describes no buildable model ({exc}); meta.json was edited "
                          "or written by another unipet version") from None
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise ConfigError(f"the checkpoint's model config cannot be built ({type(exc).__name__}: {exc}); meta.json "
                          "was edited or written by another unipet version") from None


def verify_weights(folder: str | Path, meta: dict[str, Any] | None = None) -> str:
    """Check ``model.safetensors`` against the SHA-256 recorded in ``meta.json``; returns the file's SHA-256.

    A checkpoint without a recorded checksum (written before unipet recorded one) passes.

    Raises:
        InputFileError: the file's SHA-256 differs from the recorded one (the file was damaged or replaced).
    """
    folder = find_checkpoint(folder)
    meta = read_meta(folder) if meta is None else meta
    actual = file_sha256(folder / "model.safetensors")
    recorded = meta.get(CHECKSUM_KEY)
    if recorded and recorded != actual:
        raise InputFileError(f"{folder / 'model.safetensors'} is damaged: its SHA-256 {actual[:16]}... differs from "
                             f"the {str(recorded)[:16]}... recorded in meta.json; restore the checkpoint from a copy")
    return actual


def read_weights(path: str | Path, check_finite: bool = True) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; a damaged file or header, or (``check_finite``) a non-finite floating-point
    tensor, is one ``InputFileError``."""
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


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """``(model, meta)``: the model rebuilt from ``meta.json`` alone, weights loaded, in eval mode on ``device``.

    The weights are verified first (``verify_weights``, ``read_weights``); the returned ``meta`` gains
    ``checkpoint_id`` (16 hex digits of the weights' SHA-256), which predictions record beside their outputs.
    """
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
    meta = {**meta, "checkpoint_id": sha[:16]}
    return model.to(device).eval(), meta


def load_train_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, state)`` of a checkpoint's training state (for ``--resume``)."""
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


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Load the optimizer state saved by ``save_checkpoint`` (tensors moved to the parameters' device)."""
    optimizer.load_state_dict(unflatten_optimizer(tensors, state["optimizer"]))


def grad_scaler(amp_dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler:
    """The loss scaler of a run: active only for float16 autocast on CUDA (bfloat16 and float32 need none)."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16 and device.type == "cuda")


def restore_training(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                     tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> int:
    """Load the optimizer and loss-scaler state of a training checkpoint; returns the iteration to continue from."""
    restore_optimizer(optimizer, tensors, state)
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return int(state["iteration"])
