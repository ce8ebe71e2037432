"""Whole-study prediction: preprocessing from the checkpoint, Gaussian sliding window, mirroring TTA,
resampling back to the study grid, and the connected-component lesion table.

The sliding window is MONAI's ``sliding_window_inference`` with Gaussian importance weighting
(σ = patch/8, ``sigma_scale=0.125``), configurable overlap and batched tiles. Before it runs, the volume is
padded to at least one patch with each channel's normalised minimum (MONAI would pad every channel with one
constant), so no tile sees values the network never saw in training. Tiles run on the model's device under
bf16 autocast on CUDA; stitching runs on the same device unless the output would not fit in half of the free
GPU memory, then on the CPU. Mirroring TTA averages the probabilities of full passes over every subset of the
chosen axes (``2^k`` passes); with a time budget, passes stop once the next one would exceed it.

CPU speed (measured in ``benchmarks/RESULTS.md``, "unipet vs nnU-Net v2 (CPU)"; each a named option, on by default,
and tested to leave the mask unchanged in ``tests/infer/test_predictor_speed.py``):

- ``crop_to_content``: the sliding window covers only the tiles (of the whole volume's tile grid) that reach a voxel
  where some channel lies above its padding value (the body; air after normalisation *is* the padding value);
  outside them the output is background. The tiles kept are the very tiles of the uncropped run, so only voxels of
  air that a dropped (all-air) tile also covered lose that tile's background vote.
- ``skip_empty``: a tile in which no voxel lies above the padding value is not run through the network; its
  output is background (probability 1 for class 0 under softmax, 0 under sigmoid).
- ``channels_last``: on the CPU, weights and tiles in ``torch.channels_last_3d`` (oneDNN's preferred layout).
- inference mode (no autograd bookkeeping) throughout.
- ``cpu_bf16`` (off by default): bfloat16 autocast on the CPU, for CPUs with native bf16 arithmetic (AVX512-BF16 or
  AMX; ``cpu_has_bf16``); changes the probabilities by about 1e-2, so it is a choice, not a default.

Backends (``Predictor.from_checkpoint(..., backend=)``, ``unipet.infer.backends``): the network behind the sliding
window is the PyTorch module, or an exported ONNX / OpenVINO graph run by ONNX Runtime or OpenVINO on the CPU; the
padding, tile grid, skipping, stitching, TTA and restoration above are this same code for every backend.

Prompts: a task name (or index) is the same for every tile. ``task="auto"`` uses the model's task classifier
(``infer_task``) on every non-empty tile of a patch grid; each tile votes with its top-1 probability and the
type with the largest mean vote is used for the whole study (reported with that mean as its probability).
``task="any"`` is the generic tumour path (unipet's choice, not in any of the papers): every task's prompt is run
and a voxel's lesion probability is the largest over the tasks (``any_probabilities``), so a tumour that any
prompt-aware head recognises is kept, whatever its type; it costs one full pass per task and is meant for a
cancer type the model has no prompt for (measured in ``benchmarks/RESULTS.md``, "leave-one-type-out").
"""
from __future__ import annotations

import copy
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from unipet.checkpoint import CheckpointMeta
from unipet.data.preprocess import PreprocessConfig, preprocess_study, restore_to_study_grid
from unipet.data.sampling import channel_pad_values
from unipet.errors import ConfigError, MissingInputError
from unipet.study import Study

AUTO = "auto"
#: the generic tumour path: the voxel-wise largest lesion probability over every task's prompt
ANY = "any"
#: below this probability an inferred task (``task="auto"``) is reported as unsure, with a one-line warning that
#: suggests naming the task. unipet's choice: with the default model's four tasks, chance is 0.25; 0.5 means
#: the classifier gives the chosen type at least as much weight as all others together.
AUTO_CONFIDENCE = 0.5
#: a voxel is content when some channel exceeds its padding value by more than this (normalised units)
CONTENT_EPS = 1e-3


@dataclass
class Prediction:
    """A study's prediction.

    Attributes:
        mask: ``(z, y, x)`` uint8 label map on the study grid (0 background, 1 lesion; more classes for
            multi-class models).
        task: the task used (name), or None for models without prompts.
        task_probability: classifier probability when the task was inferred (``task="auto"``), else None.
        lesions: connected components (``unipet.components.Component``) of ``mask > 0``.
        seconds: wall time of the prediction; tta_passes: sliding-window passes averaged.
        task_source: how the task was chosen: ``"given"`` (named by the caller), ``"study"`` (the study's own
            task), ``"auto"`` (inferred by the model's classifier), ``"any"`` (every task, voxel-wise maximum:
            ``task`` is then ``"any"``), None (the model takes no task).
        task_probabilities: ``{task: probability}`` of every task when inferred, else None.
    """

    mask: np.ndarray
    task: str | None
    task_probability: float | None
    lesions: list = field(default_factory=list)
    seconds: float = 0.0
    tta_passes: int = 1
    task_source: str | None = None
    task_probabilities: dict[str, float] | None = None

    @property
    def task_uncertain(self) -> bool:
        """True when the task was inferred with a probability below ``AUTO_CONFIDENCE``."""
        return task_is_uncertain(self.task_source, self.task_probability)


def task_is_uncertain(source: str | None, probability: float | None) -> bool:
    """True for a task inferred (``source == "auto"``) with a probability below ``AUTO_CONFIDENCE``."""
    return source == AUTO and probability is not None and probability < AUTO_CONFIDENCE


def task_choice_line(task: str | None, source: str | None, probability: float | None) -> str:
    """How the task was chosen, for a console line: ``"task melanoma (auto, p=0.81)"``, ``"task lymphoma (given)"``."""
    if task is None:
        return "no task (the model takes none)"
    p = f", p={probability:.2f}" if probability is not None else ""
    return f"task {task} ({source or 'given'}{p})"


def uncertain_task_warning(task: str, probability: float, probabilities: dict[str, float] | None) -> str:
    """The one-line warning for an inferred task below ``AUTO_CONFIDENCE``, naming the runners-up."""
    ranked = sorted((probabilities or {}).items(), key=lambda kv: -kv[1])[:3]
    listing = ", ".join(f"{k} {v:.2f}" for k, v in ranked)
    return (f"task auto is unsure: chose {task} with p={probability:.2f} < {AUTO_CONFIDENCE:.2f} ({listing}); if "
            "you know the cancer type, name it with --task (Python: task=)")


def cpu_has_bf16() -> bool:
    """True when this CPU does bfloat16 arithmetic natively (AVX512-BF16 or AMX), where ``cpu_bf16`` pays."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(p()) for p in probes if p is not None)


def check_device(device: str | torch.device) -> str | torch.device:
    """``device`` if torch can name it as cpu / cuda[:N] / mps, else ``ConfigError`` naming the choices."""
    if isinstance(device, torch.device) or device in (None, "auto"):
        return device
    try:
        dev = torch.device(str(device))
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda (or cuda:N) or auto")
    return device


def parse_axes(text: str) -> list[int]:
    """``"0,2"`` -> ``[0, 2]`` (mirror axes: 0 = z, 1 = y, 2 = x); anything else is a ``ConfigError``."""
    axes = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if part not in ("0", "1", "2"):
            raise ConfigError(f"TTA axes must be a comma-separated list of 0 (z), 1 (y), 2 (x), got {text!r}")
        axes.append(int(part))
    return axes


def mirror_sets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of the spatial ``axes`` (0 = z, 1 = y, 2 = x), the empty one (no flip) first."""
    axes = sorted(set(int(a) for a in axes))
    if any(a not in (0, 1, 2) for a in axes):
        raise ConfigError(f"mirror axes must be among 0 (z), 1 (y), 2 (x), got {axes}")
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


class Predictor:
    """Sliding-window predictor for a trained model.

    Args:
        model: a ``UnipetModel`` (eval mode is set), or an exported network
            (``unipet.infer.backends.runtime.ExportedNetwork``: ONNX Runtime / OpenVINO on the CPU; the same sliding
            window, TTA and restoration run around it).
        meta: checkpoint metadata (``preprocess``, ``model``; see ``unipet.checkpoint``).
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` (CUDA when available) or a torch device.
        overlap: fraction of a tile overlapping its neighbour (0–<1).
        tta: mirroring test-time augmentation over ``tta_axes``.
        tta_axes: axes to mirror (0 = z, 1 = y, 2 = x); None = the axes the checkpoint was trained to be mirrored
            along (its recipe's ``augmentation.flip_axes``; all three when it does not say): mirroring along an
            axis the network never saw flipped (e.g. head-to-feet) averages in predictions it was not trained for.
        tta_budget_s: stop adding mirrored passes once the next would exceed this many seconds.
        tile_batch: tiles per forward pass.
        amp: autocast dtype name on CUDA (``"bf16"``, ``"fp16"``, ``"none"``); CPU runs in float32.
        stitch_device: ``"auto"``, ``"cpu"`` or ``"cuda"``: where tiles are accumulated.
        crop_to_content, skip_empty: see the module docstring (both on by default).
        channels_last: ``torch.channels_last_3d`` weights and tiles; None = on for the CPU, off elsewhere.
        cpu_bf16: bfloat16 autocast of the network on the CPU (see the module docstring).
    """

    def __init__(self, model: torch.nn.Module, meta: CheckpointMeta | dict[str, Any], device: str | torch.device = "auto",
                 overlap: float = 0.5, tta: bool = False, tta_axes: Sequence[int] | None = None,
                 tta_budget_s: float | None = None, tile_batch: int = 2, amp: str = "bf16",
                 stitch_device: str = "auto", crop_to_content: bool = True, skip_empty: bool = True,
                 channels_last: bool | None = None, cpu_bf16: bool = False) -> None:
        from unipet.device import resolve_device

        if not 0 <= overlap < 1:
            raise ConfigError(f"overlap must be in [0, 1), got {overlap}; 0.5 is nnU-Net's default")
        if isinstance(tile_batch, bool) or not isinstance(tile_batch, (int, np.integer)) or tile_batch < 1:
            raise ConfigError(f"tile batch must be a whole number >= 1, got {tile_batch!r}; 2 is the default")
        if amp not in ("bf16", "fp16", "none"):
            raise ConfigError(f"amp must be bf16, fp16 or none, got {amp!r}")
        if stitch_device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"stitch device must be auto, cpu or cuda, got {stitch_device!r}")
        if tta_budget_s is not None and not tta_budget_s >= 0:
            raise ConfigError(f"the TTA time budget must be >= 0 seconds, got {tta_budget_s}")
        exported = not isinstance(model, torch.nn.Module)
        if exported and device not in ("auto", "cpu") and torch.device(str(check_device(device))).type != "cpu":
            raise ConfigError(f"exported networks (onnxruntime, openvino) run on the CPU, not {device}; use --device "
                              "cpu, or --backend torch for a GPU")
        self.device = torch.device("cpu") if exported else resolve_device(check_device(device) if device != "auto" else None)
        self.model = model if exported else model.to(self.device).eval()
        self.meta = meta = CheckpointMeta.coerce(meta)
        self.config = PreprocessConfig.from_dict(meta.preprocess)
        if self.config.target_spacing is None and meta.spacing:
            # a checkpoint trained on a native-grid cache still saw one spacing: predict at it (the mask returns
            # to the input's grid), so a study of another voxel size shows lesions at their trained scale
            self.config.target_spacing = tuple(float(s) for s in meta.spacing)
        self.task_set = meta.task_set
        self.patch = meta.patch
        self.pad = torch.as_tensor(channel_pad_values(self.config))
        self.overlap, self.tile_batch = float(overlap), int(tile_batch)
        if tta_axes is None:
            augmentation = meta.augmentation
            tta_axes = augmentation.get("flip_axes", (0, 1, 2)) if augmentation.get("enabled", True) else (0, 1, 2)
        self.tta_axes = tuple(int(a) for a in tta_axes)
        self.mirrors = mirror_sets(self.tta_axes) if tta else [()]
        self.tta_budget_s = tta_budget_s
        self.amp = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[amp] if self.device.type == "cuda" else None
        if cpu_bf16 and self.device.type == "cpu" and not exported:  # an exported network has its own precision
            self.amp = torch.bfloat16
        self.stitch_device = stitch_device
        self.crop_to_content, self.skip_empty = bool(crop_to_content), bool(skip_empty)
        self.channels_last = not exported and (self.device.type == "cpu" if channels_last is None else bool(channels_last))
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        #: tiles run through the network / skipped as empty in the last ``probabilities`` call
        self.last_tiles = {"run": 0, "skipped": 0}
        self.activation = getattr(model, "output_activation", "softmax")
        self.uses_organs = "organs" in (tuple(getattr(model, "requires", ())) + tuple(getattr(model, "accepts", ())))
        #: id of the checkpoint's weights (set by ``load_checkpoint``; None for a model given directly)
        self.checkpoint_id = meta.checkpoint_id

    @classmethod
    def from_checkpoint(cls, path: str | Path, backend: str = "torch", **kwargs: Any) -> "Predictor":
        """Load ``path`` and build a predictor (``kwargs`` as ``__init__``).

        ``backend``: ``"torch"`` (``path`` a run or checkpoint folder), or ``"onnxruntime"`` / ``"openvino"``
        (``path`` an export folder of ``unipet export``, or a checkpoint, whose network is then exported to fp32
        ONNX while loading; see ``unipet.infer.backends``). ``cpu_bf16`` with ``openvino`` compiles the graph
        in bfloat16.
        """
        from unipet.infer.backends import check_backend
        from unipet.infer.backends.bundle import is_export

        if check_backend(backend) == "torch":
            if is_export(path):
                raise ConfigError(f"{path} is an exported network; run it with --backend onnxruntime or openvino")
            from unipet.checkpoint import load_checkpoint

            model, meta = load_checkpoint(path)
            return cls(model, meta, **kwargs)
        from unipet.infer.backends.writer import open_network

        network, meta = open_network(path, backend, bf16=bool(kwargs.get("cpu_bf16", False)))
        return cls(network, meta, **kwargs)

    # ------------------------------------------------------------------ tasks
    def task_index(self, task: str | int | None) -> int | None:
        """Index of a task name / alias / index in the model's task set (None stays None)."""
        if task is None or isinstance(task, (int, np.integer)):
            return None if task is None else int(task)
        return self.task_set.index(task)

    def _check_task(self, task: int | None) -> None:
        if task is None and "task" in getattr(self.model, "requires", ()):
            raise MissingInputError(f"this model needs a task prompt; pass --task with one of "
                                    f"{', '.join(self.task_set.names)} or --task auto if the model has a classifier")

    def _padded(self, image: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """``[1, C, ...]`` tensor padded at the far end to at least the patch size with each channel's minimum."""
        x = torch.tensor(np.asarray(image, dtype=np.float32)) if isinstance(image, np.ndarray) else image.float()
        shape = tuple(int(s) for s in x.shape[1:])
        extra = [max(0, p - s) for p, s in zip(self.patch, shape)]
        if any(extra):
            out = self.pad.view(-1, 1, 1, 1).expand(x.shape[0], *[s + e for s, e in zip(shape, extra)]).clone()
            out[:, :shape[0], :shape[1], :shape[2]] = x
            x = out
        return x[None], shape

    @torch.inference_mode()
    def infer_task(self, image: np.ndarray | torch.Tensor) -> tuple[int, float] | None:
        """Prompt-free task for a preprocessed ``image (C, z, y, x)``: ``(index, probability)``, or None when the
        model has no task classifier (see the module docstring). Every task's mean vote is kept in
        ``last_task_votes`` (``{task: mean vote}``: a tile votes its top-1 probability for its top-1 task, so the
        values sum to at most 1)."""
        if not hasattr(self.model, "infer_task") or getattr(self.model, "task_classifier", True) is None:
            return None
        x, _ = self._padded(image)
        starts = [sorted({*range(0, max(1, s - p + 1), p), max(0, s - p)}) for s, p in zip(x.shape[2:], self.patch)]
        pad = self.pad.view(1, -1, 1, 1, 1)
        grid = [x[:, :, z:z + self.patch[0], y:y + self.patch[1], xx:xx + self.patch[2]]
                for z, y, xx in itertools.product(*starts)]
        # tiles with at least 5 % of voxels above the background vote (all tiles if none does)
        tiles = [t for t in grid if float((t > pad + 1e-3).any(dim=1).float().mean()) >= 0.05] or grid
        votes = torch.zeros(len(self.task_set))
        for i in range(0, len(tiles), self.tile_batch):
            batch = self._layout(torch.cat(tiles[i:i + self.tile_batch]).to(self.device))
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                idx, prob = self.model.infer_task(batch)
            votes.index_add_(0, idx.cpu(), prob.float().cpu())
        votes /= len(tiles)
        self.last_task_votes = {name: round(float(v), 4) for name, v in zip(self.task_set.names, votes)}
        best = int(votes.argmax())
        return best, float(votes[best])

    # ------------------------------------------------------------------ sliding window
    def _stitch_device(self, x: torch.Tensor, channels: int) -> torch.device:
        if self.stitch_device != "auto":
            return self.device if self.stitch_device == self.device.type else torch.device(self.stitch_device)
        if self.device.type != "cuda":
            return self.device
        free, _ = torch.cuda.mem_get_info(self.device)
        # input, the stitched output and the TTA sum, the weight map (float32)
        need = 4 * (x.shape[1] + 2 * channels + 1) * x[0, 0].numel()
        return self.device if need < 0.5 * free else torch.device("cpu")

    def _layout(self, tiles: torch.Tensor) -> torch.Tensor:
        """Tiles in the memory layout of the weights (channels-last 3-D on the CPU by default)."""
        return tiles.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else tiles

    def _background(self, n: int, channels: int, shape: Sequence[int], device: torch.device) -> torch.Tensor:
        """``[n, channels, *shape]`` probabilities of pure background (see ``skip_empty``)."""
        out = torch.zeros((n, channels, *shape), device=device)
        if self.activation == "softmax":
            out[:, 0] = 1.0
        return out

    def tile_starts(self, size: int, axis: int) -> list[int]:
        """First voxels of the sliding window's tiles along ``axis`` of a volume ``size`` voxels long (MONAI's
        ``sliding_window_inference`` grid: steps of ``int(patch * (1 - overlap))``, the last tile moved back to end
        at the volume's edge)."""
        p = self.patch[axis]
        step = p if size == p else max(1, int(p * (1 - self.overlap)))
        starts = [0]
        while starts[-1] + p < size:
            starts.append(starts[-1] + step)
        return [min(s, size - p) for s in starts]

    def content_box(self, x: torch.Tensor) -> tuple[slice, slice, slice]:
        """Slices ``(z, y, x)`` of ``x [1, C, z, y, x]`` (at least a patch in size) covering, along each axis, exactly
        the sliding window's tiles that reach a voxel above its channel's padding value; the whole volume when
        nothing is above it.

        The box starts and ends on tile edges, so the sliding window over the box uses the same tiles as over the
        whole volume, less those that hold only the padding value (air).
        """
        content = (x[0] > self.pad.to(x.device).view(-1, 1, 1, 1) + CONTENT_EPS).any(0)
        if not bool(content.any()):
            return tuple(slice(0, n) for n in x.shape[2:])  # type: ignore[return-value]
        box = []
        for axis, n in enumerate(x.shape[2:]):
            other = tuple(a for a in range(3) if a != axis)
            idx = torch.nonzero(content.any(dim=other)).flatten()
            lo, hi = int(idx[0]), int(idx[-1]) + 1
            kept = [s for s in self.tile_starts(n, axis) if s < hi and s + self.patch[axis] > lo]
            box.append(slice(kept[0], kept[-1] + self.patch[axis]))
        return tuple(box)  # type: ignore[return-value]

    @torch.inference_mode()
    def probabilities(self, image: np.ndarray | torch.Tensor, task: int | None = None,
                      organs: np.ndarray | None = None) -> torch.Tensor:
        """Class probabilities ``[K, z, y, x]`` float32 of a preprocessed ``image (C, z, y, x)``.

        Averages the mirrored passes (``tta``) within the time budget. Softmax or sigmoid per the model.
        """
        from monai.inferers import sliding_window_inference

        self._check_task(task)
        x, shape = self._padded(image)
        full_shape = tuple(x.shape[2:])
        box = self.content_box(x) if self.crop_to_content else tuple(slice(0, n) for n in full_shape)
        x = x[(slice(None), slice(None), *box)]
        n_image = x.shape[1]
        if self.uses_organs:
            if organs is None:
                if "organs" in getattr(self.model, "requires", ()):
                    raise MissingInputError("this model needs an organ map; give studies with organs")
                organs = np.zeros(shape, np.float32)
            org = torch.zeros((1, 1, *full_shape))
            org[0, 0, :shape[0], :shape[1], :shape[2]] = torch.as_tensor(np.asarray(organs, dtype=np.float32))
            x = torch.cat([x, org[(slice(None), slice(None), *box)]], dim=1)
        pad = self.pad.view(1, -1, 1, 1, 1)
        channels = self.meta.num_classes
        counts = self.last_tiles = {"run": 0, "skipped": 0}

        def window(tiles: torch.Tensor) -> torch.Tensor:
            keep = torch.ones(tiles.shape[0], dtype=torch.bool)
            if self.skip_empty:
                image_part = tiles[:, :n_image]
                keep = (image_part > pad.to(tiles.device) + CONTENT_EPS).flatten(1).any(1).cpu()
            counts["run"] += int(keep.sum())
            counts["skipped"] += int((~keep).sum())
            if not bool(keep.any()):
                return self._background(tiles.shape[0], channels, tiles.shape[2:], tiles.device)
            run = tiles if bool(keep.all()) else tiles[keep.to(tiles.device)]
            organ_tiles = None
            if self.uses_organs:
                run, organ_tiles = run[:, :-1], run[:, -1].round().long()
            t = None if task is None else torch.full((run.shape[0],), int(task), dtype=torch.long, device=run.device)
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                kw = {"organs": organ_tiles} if organ_tiles is not None else {}
                logits = self.model(self._layout(run), task=t, **kw)
            logits = logits[0] if isinstance(logits, (list, tuple)) else logits
            logits = logits.float()
            prob = logits.softmax(1) if self.activation == "softmax" else logits.sigmoid()
            if bool(keep.all()):
                return prob
            out = self._background(tiles.shape[0], prob.shape[1], tiles.shape[2:], tiles.device)
            out[keep.to(tiles.device)] = prob
            return out

        start = time.perf_counter()
        out_dev = self._stitch_device(x, channels)
        if out_dev.type == self.device.type:  # the whole volume fits: tiles are cut on the device, no per-tile copies
            x = x.to(self.device)
        total, passes = None, 0
        for axes in self.mirrors:
            t0 = time.perf_counter()
            dims = [2 + a for a in axes]
            inp = x.flip(dims) if dims else x
            prob = sliding_window_inference(inp, self.patch, self.tile_batch, window, overlap=self.overlap,
                                            mode="gaussian", sigma_scale=0.125, sw_device=self.device,
                                            device=out_dev)
            prob = prob.flip(dims) if dims else prob
            if total is None:
                total = prob
            else:
                total += prob
            passes += 1
            elapsed, last = time.perf_counter() - start, time.perf_counter() - t0
            if self.tta_budget_s is not None and elapsed + last > self.tta_budget_s:
                break
        self.last_passes = passes
        total /= passes
        if total.shape[2:] != full_shape:  # put the content box back into a background volume
            out = self._background(1, total.shape[1], full_shape, total.device)
            out[(slice(None), slice(None), *box)] = total
            total = out
        return total[0, :, :shape[0], :shape[1], :shape[2]].float()

    def labels_from_probabilities(self, prob: torch.Tensor) -> np.ndarray:
        """``(z, y, x)`` uint8 label map from ``[K, z, y, x]`` probabilities.

        Softmax: argmax. Sigmoid (the channels of the prompted task's foreground classes): one channel ->
        ``p > 0.5``; several -> the most probable channel where it exceeds 0.5 (labels 1..K-1).
        """
        if self.activation == "softmax":
            return prob.argmax(0).to(torch.uint8).cpu().numpy()
        if prob.shape[0] == 1:
            return (prob[0] > 0.5).to(torch.uint8).cpu().numpy()
        best, idx = prob.max(0)
        return ((idx + 1) * (best > 0.5)).to(torch.uint8).cpu().numpy()

    def any_probabilities(self, image: np.ndarray | torch.Tensor, organs: np.ndarray | None = None) -> torch.Tensor:
        """The generic path's probabilities ``[K, z, y, x]`` of a preprocessed ``image (C, z, y, x)``: each voxel's
        lesion probability is the largest over every task's prompt (softmax: ``[1 - p, p]``; sigmoid: ``[p]``).

        Raises:
            ConfigError: the model takes no task, or has more than one lesion class (a maximum over tasks of
                several classes has no single meaning).
        """
        takes = tuple(getattr(self.model, "requires", ())) + tuple(getattr(self.model, "accepts", ()))
        if not self.task_set or "task" not in takes:
            raise ConfigError("task any runs every task's prompt; this model takes no task prompt — leave --task "
                              "out")
        best, passes = None, 0
        for t in range(len(self.task_set)):
            prob = self.probabilities(image, t, organs)
            if not self._binary(prob):
                raise ConfigError(f"task any needs a lesion-vs-background model; this one has {prob.shape[0]} "
                                  "output channels — name a task instead")
            fg = prob[1] if self.activation == "softmax" else prob[0]
            best = fg if best is None else torch.maximum(best, fg)
            passes += getattr(self, "last_passes", 1)
        self.last_passes = passes
        return torch.stack([1 - best, best]) if self.activation == "softmax" else best[None]

    def _binary(self, prob: torch.Tensor) -> bool:
        """True for a lesion-vs-background output (2 softmax classes or 1 sigmoid channel)."""
        return prob.shape[0] == (2 if self.activation == "softmax" else 1)

    def segment(self, image: np.ndarray | torch.Tensor, task: int | None = None,
                organs: np.ndarray | None = None) -> np.ndarray:
        """``(z, y, x)`` uint8 label map of a preprocessed ``image (C, z, y, x)`` on its own grid."""
        return self.labels_from_probabilities(self.probabilities(image, task, organs))

    # ------------------------------------------------------------------ studies
    def predict_study(self, study: Study, task: str | int | None = None, connectivity: int = 18) -> Prediction:
        """Predict one study end to end (see the module docstring).

        Args:
            study: the study (any orientation; PET/CT as the checkpoint's channels need).
            task: a task name/alias/index, ``"auto"`` (prompt-free: the classifier's choice), ``"any"`` (the
                generic path: every task, voxel-wise maximum), or None (the study's own task if it has one, else
                ``"auto"`` when the model has a classifier).
            connectivity: of the lesion table's components.

        Returns:
            A ``Prediction`` whose mask is on the study's grid.
        """
        from unipet.components import components

        start = time.perf_counter()
        if study.pet is not None:  # the PET value rule of unipet.io.nifti.check_pet_values, as when reading files
            from unipet.io.nifti import check_pet_values

            pet, changed = check_pet_values(study.pet, f"study {study.study_id} PET")
            if changed:
                study = copy.copy(study)
                study.pet = pet
        pre = preprocess_study(study, self.config, with_label=False)
        probability = votes = None
        source = "given"
        if task is None:
            known = study.task is not None and study.task in self.task_set
            task, source = (study.task, "study") if known else (AUTO, AUTO)
        if task == AUTO:
            source = AUTO
            inferred = self.infer_task(pre.image)
            index = None if inferred is None else inferred[0]
            probability = None if inferred is None else inferred[1]
            votes = None if inferred is None else dict(self.last_task_votes)
        elif task == ANY:
            source, index = ANY, None
        else:
            index = self.task_index(task)
        prob = (self.any_probabilities(pre.image, pre.organs) if source == ANY else
                self.probabilities(pre.image, index, pre.organs))
        if self.config.target_spacing is not None and self._binary(prob):
            # back to the study grid by linear interpolation of the lesion probability, then p > 0.5 (for two
            # classes the same as the argmax, without the staircase of nearest-neighbour label resampling)
            fg = (prob[1] if self.activation == "softmax" else prob[0]).cpu().numpy()
            mask = restore_to_study_grid(fg, pre, order=1, fill=0.0, threshold=0.5)
        else:
            mask = restore_to_study_grid(self.labels_from_probabilities(prob), pre, order=0, fill=0)
        _, comps = components(mask > 0, study.spacing, study.affine, connectivity=connectivity)
        name = ANY if source == ANY else None if index is None else self.task_set.names[index]
        return Prediction(mask=mask, task=name, task_probability=probability, lesions=comps,
                          seconds=time.perf_counter() - start, tta_passes=getattr(self, "last_passes", 1),
                          task_source=source if name is not None else None, task_probabilities=votes)


#: columns of a predicted lesion table (volumes in mL, centroids in RAS millimetres)
LESION_COLUMNS = ("id", "voxels", "volume_ml", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm")


def lesion_rows(lesions: Sequence[Any]) -> list[tuple]:
    """One tuple per lesion in ``LESION_COLUMNS`` order (volume to 4 decimals, centroids to 2)."""
    return [(c.label, c.voxels, round(c.volume_ml, 4), *(round(v, 2) for v in c.centroid_mm)) for c in lesions]


def lesion_table_csv(lesions: Sequence[Any]) -> str:
    """CSV text of a lesion table: ``id, voxels, volume_ml, centroid_x_mm, centroid_y_mm, centroid_z_mm``."""
    rows = [",".join(LESION_COLUMNS)]
    for label, voxels, volume, x, y, z in lesion_rows(lesions):
        rows.append(f"{label},{voxels},{volume:.4f},{x:.2f},{y:.2f},{z:.2f}")
    return "\n".join(rows) + "\n"


#: prefix of the NIfTI ``descrip`` of a predicted mask, followed by the checkpoint id that made it
MODEL_TAG = "unipet checkpoint "


def write_prediction(prediction: Prediction, study: Study, out_dir: str | Path, overwrite: bool = False,
                     checkpoint_id: str | None = None) -> Path:
    """Write ``OUT_DIR/<study>_lesions.csv`` then ``OUT_DIR/<study>.nii.gz`` (atomic; the mask last, so its
    presence means the study is complete). Returns the mask path.

    ``checkpoint_id`` (``unipet.checkpoint.checkpoint_id``) is recorded in the mask's header (``descrip``:
    ``"unipet checkpoint <id>"``) so that a later run can tell which checkpoint made it. Both paths are checked to
    stay inside ``out_dir`` (``OutputError`` for a study id such as ``../x``).
    """
    from unipet.fileio import atomic_write_text, inside
    from unipet.io.nifti import save_volume

    out = Path(out_dir)
    table, mask = inside(out, f"{study.study_id}_lesions.csv"), inside(out, f"{study.study_id}.nii.gz")
    atomic_write_text(table, lesion_table_csv(prediction.lesions), overwrite=overwrite)
    return save_volume(prediction.mask.astype(np.uint8), study.affine, mask, overwrite=overwrite,
                       description=None if checkpoint_id is None else MODEL_TAG + checkpoint_id)


def prediction_checkpoint(mask_path: str | Path) -> str | None:
    """The checkpoint id recorded in a predicted mask by ``write_prediction`` (None when none is recorded)."""
    from unipet.io.nifti import read_description

    text = read_description(mask_path)
    return text[len(MODEL_TAG):].strip() or None if text.startswith(MODEL_TAG) else None
