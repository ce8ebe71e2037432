"""Patch sampling from the cache: lesion-instance-balanced foreground, random and lesion-free patches.

Kinds of patch (the mix is configurable and recorded, e.g. ``{"lesion": 0.5, "random": 0.3, "negative": 0.2}``):

- ``lesion``: pick one lesion **uniformly over all lesions** of the training cases (so a 0.1 mL node is seen
  as often as a 500 mL bulk), then a random foreground voxel inside its bounding box; the patch contains that
  voxel at a random position within the central half of the patch. With ``lesion_balance="task"`` the lesion's
  task is drawn first, uniformly over the tasks whose training cases hold lesions (task-less cases form one more
  group), then a lesion of that task uniformly: every prompt-aware head sees the same share of lesion patches
  however many lesions its cancer type has (unipet's choice, against the head collapse of the quality issue:
  ``benchmarks/RESULTS.md``, "Why two heads collapsed").
- ``random``: a uniformly random patch of a uniformly random training case.
- ``negative``: a random patch of a random lesion-free case (a case whose lesion index is empty).
- ``hot``: a *hard negative*: a random training case, then one of its physiological hot spots uniformly — a
  connected component of PET >= ``hot_suv`` (SUV, default 2.5) outside every lesion (brain, heart,
  kidneys, ureters, bladder, bowel loops, glands, brown fat) — then a random voxel of it, placed like a lesion
  voxel. Detection, not delineation, is what separates a lesion-finding network from an SUV threshold, and a
  random patch rarely holds the small hot spots that look most like lesions (unipet's choice; not in nnU-Net).
  The hot spots of a case are found once per process from the cached PET channel (memoised).

Tasks: a sample carries its case's task index; a case without a task (mixed-tumour data, lesion-free controls)
carries a random task per draw (``taskless="random"``) or ``NO_TASK = -1`` (``taskless="general"``, for a model
with a general route).
With ``as_task={"task": NAME, "share": p, "labels": "keep" | "background"}`` a draw of a case of any other task (or
of none) is presented under NAME's prompt with probability ``p``: NAME's prompt-aware head then also learns every
other type's studies, whole bodies and their physiological uptake included. ``labels="keep"`` (default) gives it
their lesions as its own (a head that marks FDG tumours in general); ``"background"`` gives it an empty mask (the
other types' lesions are not NAME's type: a head that answers only for its own type, as a type-specific prompt
should). unipet's choice, for a type learnt from partial-field-of-view crops only
(``benchmarks/recipes/default_v5_head.json``).

A kind with nothing to draw from (no lesions, or no lesion-free cases) is dropped and the mix renormalised;
``PatchSampler.mix`` holds the effective mix that is recorded with the run.

Multi-spacing training (gCIS; option ``multi_spacing={"spacings": [[z, y, x], ...], "random_p": 0.1}``): each
patch is drawn at a spacing from the list — with probability ``random_p`` a uniformly random one, otherwise the
one closest (Euclidean distance in mm) to the case's native spacing (the study's grid before preprocessing). The
patch then covers ``patch_size * spacing`` mm around the same centre and is resampled from the cache's grid to
``patch_size`` voxels (trilinear for the image, nearest for labels and organs). Off by default.

Determinism and resume: the sampler is *counter-based*. Batch ``i`` of rank ``r`` is drawn from
``numpy.random.default_rng([seed, r, i])``, so the stream is the same whatever the number of DataLoader
workers, and resuming needs only ``(seed, rank, next_batch)`` (``state_dict``). Patches are read from the
memory-mapped arrays (only the patch region is touched); outside the volume the image is padded with the
channel's normalised minimum and the label with 0.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from unipet.data.cache import Cache, CachedCase
from unipet.data.normalize import apply_normalisation
from unipet.data.preprocess import PreprocessConfig
from unipet.errors import ConfigError
from unipet.tasks import NO_TASK

KINDS = ("lesion", "random", "negative", "hot")
#: SUV from which a voxel outside the lesions counts as a physiological hot spot (``hot`` patches)
HOT_SUV = 2.5
#: hot spots smaller than this many voxels are noise, not anatomy
HOT_MIN_VOXELS = 3
#: memory-mapped cases kept open per process
OPEN_CASES = 64
#: what a task-less case carries (``PatchSampler``'s ``taskless``)
TASKLESS = ("random", "general")
#: how ``lesion`` patches pick their lesion: uniformly over all lesions, or over tasks first
LESION_BALANCE = ("lesion", "task")
DEFAULT_MIX = {"lesion": 0.5, "random": 0.3, "negative": 0.2}


def channel_pad_values(config: PreprocessConfig) -> np.ndarray:
    """Normalised minimum of every channel ``[C]`` (float32): the value of air / zero uptake after normalisation.

    Every scheme clips or floors its input, so the normalised value of a very low intensity is the smallest
    value the channel can hold; patches and sliding windows are padded with it.
    """
    cfg = config
    return np.array([apply_normalisation(np.array([-1e6], np.float32), cfg.normalisation[ch])[0]
                     for ch in cfg.channels], dtype=np.float32)


def read_patch(array: np.ndarray, start: Sequence[int], size: Sequence[int], fill: float | np.ndarray) -> np.ndarray:
    """Read ``array[..., start:start+size]`` (last three axes), padding outside the array with ``fill``.

    Args:
        array: ``(..., z, y, x)`` array or memmap; only the overlapping region is read.
        start: ``(z, y, x)`` first voxel (may be negative or beyond the array).
        size: ``(D, H, W)`` patch size.
        fill: scalar, or one value per leading channel (``[C]`` for a ``(C, z, y, x)`` array).

    Returns:
        ``(..., D, H, W)`` array of ``array``'s dtype.
    """
    lead = array.shape[:-3]
    out = np.empty((*lead, *size), dtype=array.dtype)
    if np.ndim(fill):
        out[...] = np.asarray(fill, dtype=array.dtype).reshape(*lead, 1, 1, 1)
    else:
        out[...] = fill
    src, dst = [], []
    for s, n, dim in zip(start, size, array.shape[-3:]):
        lo, hi = max(int(s), 0), min(int(s) + int(n), int(dim))
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(s), hi - int(s)))
    out[(Ellipsis, *dst)] = array[(Ellipsis, *src)]
    return out


@dataclass
class Patch:
    """One training sample: image ``(C, D, H, W)`` float32, label ``(D, H, W)`` uint8, organs or None, task index."""

    image: np.ndarray
    label: np.ndarray
    organs: np.ndarray | None
    task: int
    kind: str
    case_id: str
    lesion: tuple[str, int] | None = None  # (case_id, lesion id) of a lesion patch


def parse_multi_spacing(spec: dict[str, Any] | None) -> tuple[np.ndarray, float] | None:
    """``{"spacings": [[z, y, x] mm, ...], "random_p": p}`` -> ``(spacings [S, 3] float64, p)``; None stays None.

    Raises:
        ConfigError: no spacings, a spacing that is not three positive numbers, p outside [0, 1], unknown keys.
    """
    if spec is None:
        return None
    if not isinstance(spec, dict) or set(spec) - {"spacings", "random_p"}:
        raise ConfigError(f"multi_spacing must be {{'spacings': [[z, y, x], ...], 'random_p': 0.1}}, got {spec!r}")
    try:
        spacings = np.asarray(spec.get("spacings"), dtype=np.float64)
    except (TypeError, ValueError):
        spacings = np.empty(0)
    if spacings.ndim != 2 or spacings.shape[0] < 1 or spacings.shape[1] != 3 or (spacings <= 0).any():
        raise ConfigError(f"multi_spacing spacings must be a list of [z, y, x] spacings in mm (> 0), got "
                          f"{spec.get('spacings')!r}")
    p = float(spec.get("random_p", 0.1))
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"multi_spacing random_p must be in [0, 1], got {p}")
    return spacings, p


def choose_spacing(native: Sequence[float], spacings: np.ndarray, random_p: float,
                   rng: np.random.Generator) -> np.ndarray:
    """A training spacing ``[3]`` (mm): with probability ``random_p`` a random row of ``spacings [S, 3]``, else the
    row closest (Euclidean, mm) to ``native`` (z, y, x)."""
    if rng.random() < random_p:
        return spacings[int(rng.integers(len(spacings)))]
    return spacings[int(np.argmin(np.linalg.norm(spacings - np.asarray(native, np.float64), axis=1)))]


def read_resampled(array: np.ndarray, start: Sequence[int], size: Sequence[int], scale: Sequence[float],
                   fill: float | np.ndarray, nearest: bool) -> np.ndarray:
    """A patch of ``size`` voxels covering ``size * scale`` voxels of ``array`` around the same centre as
    ``read_patch(array, start, size)``, resampled (trilinear, or nearest for label maps) to ``size``.

    Args:
        array: ``(..., z, y, x)`` array or memmap.
        start: ``(z, y, x)`` first voxel of the unscaled patch.
        size: ``(D, H, W)`` output size.
        scale: per-axis ratio of the target spacing to the array's spacing (> 1 zooms out).
        fill: padding outside the array (as ``read_patch``).
        nearest: nearest-neighbour interpolation (label maps) instead of trilinear.

    Returns:
        ``(..., D, H, W)`` array of ``array``'s dtype.
    """
    region = [max(1, int(round(n * s))) for n, s in zip(size, scale)]
    if region == [int(n) for n in size]:
        return read_patch(array, start, size, fill)
    first = [int(a) + int(n) // 2 - r // 2 for a, n, r in zip(start, size, region)]
    src = read_patch(array, first, region, fill)
    lead = src.shape[:-3]
    t = torch.from_numpy(np.ascontiguousarray(src, dtype=np.float32)).reshape(1, -1, *region)
    mode = "nearest-exact" if nearest else "trilinear"
    out = torch.nn.functional.interpolate(t, size=tuple(int(n) for n in size), mode=mode,
                                          **({} if nearest else {"align_corners": False}))
    return out.reshape(*lead, *size).numpy().astype(array.dtype)


class PatchSampler:
    """Draws patches from a cache (see the module docstring).

    Args:
        cache: the preprocessing cache.
        case_ids: training cases (default: split ``"train"``, or every case when no case has a split).
        patch_size: ``(D, H, W)`` voxels.
        mix: ``{"lesion": p, "random": p, "negative": p}`` (normalised; missing kinds are 0).
        seed: base seed; ``rank`` separates distributed processes.
        batch_mode: ``"mixed"`` (each sample its own task) or ``"single-task"`` (UniSeg's scheme: one task per
            batch, drawn uniformly over the tasks with training cases).
        with_organs: also return organ-map patches (cases without one give zeros).
        jitter: fraction of the patch within which a lesion voxel is placed around the centre (0 = centred).
        multi_spacing: ``{"spacings": [[z, y, x], ...], "random_p": 0.1}`` to draw patches at several spacings
            (see the module docstring), or None.
        hot_suv: SUV threshold of the ``hot`` kind's physiological hot spots.
        taskless: what a case without a task (mixed-tumour data, lesion-free controls) carries: ``"random"`` (a
            random task per draw, unipet's choice for models that need a task: a prompted model must learn to
            output nothing on a lesion-free study whatever the prompt) or ``"general"`` (``NO_TASK = -1``, for
            models with a general route: MAST-Pro's general router trains on such data, as its paper states).
        task_weights: with ``lesion_balance="task"``, ``{task name: weight}`` (1 for tasks not named): a task's share
            of lesion patches is its weight over the sum (e.g. a new type fine-tuned beside the pre-trained ones;
            unipet's choice).
        lesion_balance: ``"lesion"`` (a lesion patch's lesion uniformly over all lesions) or ``"task"`` (uniformly
            over the tasks that have lesions first, then over that task's lesions; see the module docstring).
        as_task: ``{"task": name, "share": p, "labels": "keep" | "background"}``: present a share ``p`` (0 < p <= 1,
            default 1) of the draws of other tasks' cases under this task's prompt, with their lesions or with an
            empty mask (see the module docstring); None = each case under its own task.
    """

    def __init__(self, cache: Cache, case_ids: Sequence[str] | None = None, patch_size: Sequence[int] = (112, 160, 128),
                 mix: dict[str, float] | None = None, seed: int = 0, rank: int = 0, batch_mode: str = "mixed",
                 with_organs: bool = False, jitter: float = 0.5, multi_spacing: dict[str, Any] | None = None,
                 hot_suv: float = HOT_SUV, taskless: str = "random",
                 lesion_balance: str = "lesion", task_weights: dict[str, float] | None = None,
                 as_task: dict[str, Any] | None = None) -> None:
        if batch_mode not in ("mixed", "single-task"):
            raise ConfigError(f"unknown batch_mode {batch_mode!r}; use 'mixed' or 'single-task'")
        if taskless not in TASKLESS:
            raise ConfigError(f"unknown taskless {taskless!r}; use one of {', '.join(TASKLESS)}")
        if lesion_balance not in LESION_BALANCE:
            raise ConfigError(f"unknown lesion_balance {lesion_balance!r}; use one of {', '.join(LESION_BALANCE)}")
        self.taskless, self.lesion_balance = taskless, lesion_balance
        self.cache, self.seed, self.rank, self.batch_mode = cache, int(seed), int(rank), batch_mode
        self.patch_size = tuple(int(p) for p in patch_size)
        self.with_organs, self.jitter = with_organs, float(jitter)
        if case_ids is None:
            case_ids = cache.split("train") or list(cache.case_ids)
        if not case_ids:
            raise ConfigError(f"cache {cache.root} has no training cases; assign splits or pass case ids")
        self.case_ids = list(case_ids)
        unknown = sorted(set(self.case_ids) - set(cache.case_ids))
        if unknown:
            raise ConfigError(f"cases {unknown[:5]} are not in cache {cache.root}; give case ids of the cache")
        self.infos = {c: cache.info(c) for c in self.case_ids}
        self.multi_spacing = multi_spacing
        self._spacings = parse_multi_spacing(multi_spacing)
        self.pad_values = channel_pad_values(cache.config)
        self.hot_suv = float(hot_suv)
        self._hot: dict[str, list[np.ndarray]] = {}
        task_set = cache.task_set
        # Cases without a task get a random task per draw or NO_TASK (``taskless``, see the class docstring).
        self.case_task = {c: (task_set.index(i["task"]) if i.get("task") else None) for c, i in self.infos.items()}
        self.num_tasks = len(task_set)
        self.lesions = [(c, les) for c in self.case_ids for les in self.infos[c].get("lesions", [])]
        # the tasks whose cases hold lesions (None: task-less cases), in a fixed order (for lesion_balance="task")
        self.lesion_tasks = sorted({self.case_task[c] for c, _ in self.lesions}, key=lambda t: (t is None, t or 0))
        self.task_weights = dict(task_weights or {})
        self.lesion_task_p = self._task_probabilities(task_set) if self.task_weights else None
        self.as_task = dict(as_task) if as_task else None
        self._as_task = self._parse_as_task(task_set) if self.as_task else None
        self.negatives = [c for c in self.case_ids if not self.infos[c].get("lesions")]
        if "PET" not in cache.config.channels:
            self.hot_level = None  # no PET channel: no hot spots to draw
        else:
            spec = cache.config.normalisation["PET"]
            self.hot_level = float(apply_normalisation(np.array([self.hot_suv], np.float32), spec)[0])
        self.mix = self._effective_mix(mix or DEFAULT_MIX)
        self._open: OrderedDict[str, CachedCase] = OrderedDict()
        self._pools: dict[tuple[str, int | None], list] = {}

    def _parse_as_task(self, task_set) -> tuple[int, float, bool]:
        """``(task index, share, clear labels)`` of ``as_task``, checked against the cache's task set."""
        name, share = self.as_task.get("task"), self.as_task.get("share", 1.0)
        labels = self.as_task.get("labels", "keep")
        if set(self.as_task) - {"task", "share", "labels"} or name not in task_set:
            raise ConfigError(f"as_task must be {{'task': NAME, 'share': p, 'labels': 'keep'|'background'}} with NAME "
                              f"a task of the cache ({', '.join(task_set.names)}); got {self.as_task}")
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
            raise ConfigError(f"as_task share must be a number in (0, 1], got {share!r}")
        if labels not in ("keep", "background"):
            raise ConfigError(f"as_task labels must be 'keep' or 'background', got {labels!r}")
        return task_set.index(name), float(share), labels == "background"

    def _task_probabilities(self, task_set) -> np.ndarray:
        """Per lesion task, the share of lesion patches under ``task_weights`` (weight 1 for unnamed tasks)."""
        if self.lesion_balance != "task":
            raise ConfigError("task_weights weight the tasks of lesion_balance 'task'; set lesion_balance to 'task'")
        weights = {}
        for name, w in self.task_weights.items():
            if name not in task_set:
                raise ConfigError(f"task_weights names {name!r}, which is not a task of the cache "
                                  f"({', '.join(task_set.names)})")
            if not (isinstance(w, (int, float)) and w > 0):
                raise ConfigError(f"task_weights[{name!r}] must be a positive number, got {w!r}")
            weights[task_set.index(name)] = float(w)
        p = np.array([weights.get(t, 1.0) for t in self.lesion_tasks], dtype=np.float64)
        return p / p.sum()

    def __getstate__(self) -> dict[str, Any]:
        # worker processes started by 'spawn' get the sampler pickled: send no open memmaps (they would be
        # pickled as whole arrays); each process opens its own
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()
        return state

    # ------------------------------------------------------------------ configuration
    def _effective_mix(self, mix: dict[str, float]) -> dict[str, float]:
        unknown = set(mix) - set(KINDS)
        if unknown:
            raise ConfigError(f"unknown sampling kinds {sorted(unknown)}; use {', '.join(KINDS)}")
        weights = {k: float(mix.get(k, 0.0)) for k in KINDS}
        if any(v < 0 for v in weights.values()):
            raise ConfigError(f"sampling mix {mix} has a negative share; give shares >= 0")
        if not self.lesions:
            weights["lesion"] = 0.0
        if not self.negatives:
            weights["negative"] = 0.0
        if self.hot_level is None:
            weights["hot"] = 0.0
        total = sum(weights.values())
        if total <= 0:
            raise ConfigError(f"sampling mix {mix} leaves nothing to draw (no lesions or no lesion-free cases); "
                              "give a 'random' share")
        # kinds the mix does not name and that have no share are left out of the record
        return {k: v / total for k, v in weights.items() if k in mix or v > 0}

    def describe(self) -> dict[str, Any]:
        """JSON-able record of the sampler's configuration (for the run's metadata)."""
        return {"mix": self.mix, "batch_mode": self.batch_mode, "patch_size": list(self.patch_size),
                "cases": len(self.case_ids), "lesions": len(self.lesions), "negative_cases": len(self.negatives),
                "jitter": self.jitter, "seed": self.seed, "multi_spacing": self.multi_spacing,
                "hot_suv": self.hot_suv, "lesion_balance": self.lesion_balance,
                **({"task_weights": self.task_weights} if self.task_weights else {}),
                **({"as_task": self.as_task} if self.as_task else {})}

    # ------------------------------------------------------------------ drawing
    def rng(self, batch_index: int) -> np.random.Generator:
        """The generator of batch ``batch_index`` (counter-based; see the module docstring)."""
        return np.random.default_rng([self.seed, self.rank, int(batch_index)])

    def _case(self, case_id: str) -> CachedCase:
        """The memory-mapped case, from a small LRU (each open memmap holds a file descriptor)."""
        if case_id in self._open:
            self._open.move_to_end(case_id)
        else:
            self._open[case_id] = self.cache.load(case_id, mmap=True)
            if len(self._open) > OPEN_CASES:
                self._open.popitem(last=False)
        return self._open[case_id]

    def _task_for(self, case_id: str, rng: np.random.Generator, forced: int | None) -> int:
        if forced is not None:
            return forced
        t = self.case_task[case_id]
        if self._as_task is not None and t != self._as_task[0] and rng.random() < self._as_task[1]:
            return self._as_task[0]
        if t is not None:
            return t
        return NO_TASK if self.taskless == "general" else int(rng.integers(self.num_tasks))

    def _random_start(self, shape: Sequence[int], rng: np.random.Generator) -> list[int]:
        # Uniform over positions keeping the patch inside; a volume smaller than the patch is centred (padded).
        return [int(rng.integers(0, n - p + 1)) if n >= p else -((p - n) // 2) for n, p in zip(shape, self.patch_size)]

    def _lesion_start(self, case: CachedCase, lesion: dict[str, Any], rng: np.random.Generator) -> list[int]:
        box = lesion["bbox"]
        if case.label is not None:
            region = np.asarray(case.label[tuple(slice(a, b) for a, b in box)])
            fg = np.flatnonzero(region)
        else:
            fg = np.empty(0, dtype=np.int64)
        if fg.size:
            offset = np.unravel_index(int(fg[rng.integers(fg.size)]), region.shape)
            voxel = [a + int(o) for (a, _), o in zip(box, offset)]
        else:  # index and label disagree (should not happen): use the recorded centroid
            voxel = [int(round(c)) for c in lesion["centroid"]]
        return self._start_around(voxel, rng)

    def _start_around(self, voxel: Sequence[int], rng: np.random.Generator) -> list[int]:
        """Patch start placing ``voxel`` at a random position within the central ``jitter`` share of the patch."""
        start = []
        for v, p in zip(voxel, self.patch_size):
            half = int(p * self.jitter / 2)
            shift = int(rng.integers(-half, half + 1)) if half else 0
            start.append(int(v) - p // 2 + shift)
        return start

    def hot_spots(self, case_id: str) -> list[np.ndarray]:
        """Voxel indices ``[n, 3]`` (z, y, x) of each physiological hot spot of a case (memoised; see ``hot``)."""
        if case_id not in self._hot:
            import cc3d

            case = self._case(case_id)
            pet = np.asarray(case.image[list(self.cache.config.channels).index("PET")])
            hot = pet >= self.hot_level
            if case.label is not None:
                hot &= np.asarray(case.label) == 0
            labels = cc3d.connected_components(hot.astype(np.uint8), connectivity=26)
            voxels = np.argwhere(labels > 0)
            order = np.argsort(labels[tuple(voxels.T)], kind="stable")
            voxels = voxels[order]
            counts = np.bincount(labels[tuple(voxels.T)])[1:]
            spots = np.split(voxels, np.cumsum(counts)[:-1]) if voxels.size else []
            self._hot[case_id] = [s for s in spots if len(s) >= HOT_MIN_VOXELS]
        return self._hot[case_id]

    def _hot_start(self, case_id: str, rng: np.random.Generator) -> list[int] | None:
        """Start of a patch around a random voxel of a random hot spot of the case, or None if it has none."""
        spots = self.hot_spots(case_id)
        if not spots:
            return None
        spot = spots[int(rng.integers(len(spots)))]
        return self._start_around(spot[int(rng.integers(len(spot)))], rng)

    def _pool(self, kind: str, task: int | None) -> list:
        """Lesions (``kind="lesion"``: of ``task``, or all when None; ``"lesion-of"``: exactly of ``task``, None =
        the task-less cases) or case ids to draw from, restricted to ``task`` (memoised)."""
        key = (kind, task)
        if key not in self._pools:
            def ok(case_id: str) -> bool:
                return task is None or self.case_task[case_id] in (task, None)

            if kind == "lesion":
                pool: list = [x for x in self.lesions if task is None or self.case_task[x[0]] == task]
            elif kind == "lesion-of":  # the lesions of one task (None: of the task-less cases)
                pool = [x for x in self.lesions if self.case_task[x[0]] == task]
            else:
                pool = [c for c in (self.negatives if kind == "negative" else self.case_ids) if ok(c)]
                # a task without lesion-free cases falls back to any case of the task
                pool = pool or [c for c in self.case_ids if ok(c)] or list(self.case_ids)
            self._pools[key] = pool
        return self._pools[key]

    def draw(self, rng: np.random.Generator, kind: str | None = None, task: int | None = None) -> Patch:
        """Draw one patch (of ``kind``, or a kind drawn from the mix); ``task`` restricts it to one task."""
        kind = kind or str(rng.choice(KINDS, p=[self.mix.get(k, 0.0) for k in KINDS]))
        lesion_key = None
        if kind == "lesion" and task is None and self.lesion_balance == "task" and self.lesion_tasks:
            if self.lesion_task_p is None:
                group = self.lesion_tasks[int(rng.integers(len(self.lesion_tasks)))]
            else:
                group = self.lesion_tasks[int(rng.choice(len(self.lesion_tasks), p=self.lesion_task_p))]
            pool = self._pool("lesion-of", group)
        else:
            pool = self._pool(kind, task)
        if kind == "lesion":
            if not pool:  # this task has no lesion in the training cases
                return self.draw(rng, "random", task)
            case_id, lesion = pool[int(rng.integers(len(pool)))]
            case = self._case(case_id)
            start = self._lesion_start(case, lesion, rng)
            lesion_key = (case_id, int(lesion["id"]))
        elif kind == "hot":
            case_id = pool[int(rng.integers(len(pool)))]
            case = self._case(case_id)
            start = self._hot_start(case_id, rng) or self._random_start(case.image.shape[1:], rng)
        else:
            case_id = pool[int(rng.integers(len(pool)))]
            case = self._case(case_id)
            start = self._random_start(case.image.shape[1:], rng)
        scale = self._scale(case_id, rng)
        image = read_resampled(case.image, start, self.patch_size, scale, self.pad_values, nearest=False)
        label = (read_resampled(case.label, start, self.patch_size, scale, 0, nearest=True) if case.label is not None
                 else np.zeros(self.patch_size, np.uint8))
        organs = None
        if self.with_organs:
            organs = (read_resampled(case.organs, start, self.patch_size, scale, 0, nearest=True)
                      if case.organs is not None else np.zeros(self.patch_size, np.uint16))
        patch_task = self._task_for(case_id, rng, task)
        if self._as_task is not None and self._as_task[2] and patch_task != self.case_task[case_id] \
                and patch_task == self._as_task[0]:
            label = np.zeros_like(label)  # another type's study under this prompt: none of its lesions is this type
        return Patch(image, label, organs, patch_task, kind, case_id, lesion_key)

    def _scale(self, case_id: str, rng: np.random.Generator) -> tuple[float, float, float]:
        """Ratio of the patch's training spacing to the cache spacing per axis (1 without multi-spacing)."""
        if self._spacings is None:
            return (1.0, 1.0, 1.0)
        from unipet.study import spacing_from_affine

        info = self.infos[case_id]
        native = spacing_from_affine(np.asarray(info["study_affine"], dtype=np.float64))
        target = choose_spacing(native, *self._spacings, rng)
        return tuple(float(t) / float(c) for t, c in zip(target, info["spacing"]))  # type: ignore[return-value]

    def batch(self, index: int, batch_size: int) -> dict[str, Any]:
        """Batch ``index`` as arrays: ``image [B, C, D, H, W]`` float32, ``label [B, D, H, W]`` uint8,
        ``task [B]`` int64, optional ``organs [B, D, H, W]`` int64, and ``kind``/``case_id`` lists."""
        rng = self.rng(index)
        task = None
        if self.batch_mode == "single-task":
            tasks = sorted({t for t in self.case_task.values() if t is not None}) or list(range(self.num_tasks))
            task = int(tasks[int(rng.integers(len(tasks)))])
        patches = [self.draw(rng, task=task) for _ in range(batch_size)]
        out: dict[str, Any] = {
            "image": np.stack([p.image for p in patches]), "label": np.stack([p.label for p in patches]),
            "task": np.array([p.task for p in patches], dtype=np.int64),
            "kind": [p.kind for p in patches], "case_id": [p.case_id for p in patches],
        }
        if self.with_organs:
            out["organs"] = np.stack([p.organs for p in patches]).astype(np.int64)
        return out


class PatchDataset(IterableDataset):
    """Endless stream of batches ``start, start+1, ...`` from a ``PatchSampler`` for a ``DataLoader``.

    Use with ``DataLoader(ds, batch_size=None, num_workers=W)``: worker ``w`` makes the batches ``i`` with
    ``i % W == w``, and the DataLoader's in-order round-robin returns them as ``start, start+1, ...`` — the same
    stream for any W (each worker's randomness comes from the batch index, not from the worker).
    """

    def __init__(self, sampler: PatchSampler, batch_size: int, start: int = 0) -> None:
        super().__init__()
        self.sampler, self.batch_size, self.start = sampler, int(batch_size), int(start)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        index = self.start + worker
        while True:
            batch = self.sampler.batch(index, self.batch_size)
            yield {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in batch.items()}
            index += workers


def _ignore_sigterm(_worker_id: int) -> None:
    """Workers ignore SIGTERM: a cluster's SIGTERM to the whole job must not kill them before the training
    process has written its checkpoint (they end with it)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(sampler: PatchSampler, batch_size: int, start: int = 0, workers: int = 2,
                pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """DataLoader over ``PatchDataset`` (worker processes, prefetching; batches ``start, start+1, ...``)."""
    kw: dict[str, Any] = ({"prefetch_factor": 4, "persistent_workers": True, "worker_init_fn": _ignore_sigterm}
                          if workers > 0 else {})
    return torch.utils.data.DataLoader(PatchDataset(sampler, batch_size, start), batch_size=None,
                                       num_workers=workers, pin_memory=pin_memory, **kw)
