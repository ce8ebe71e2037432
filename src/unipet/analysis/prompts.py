"""The learned cancer-specific prompts of a task-prompted STU-Net (DpDNet, UniSeg), embedded in 2-D (DpDNet Fig. 2).

DpDNet's FUSE turns the learnable universal prompt and a patch's bottleneck into one prompt per cancer type
(``[N, d, h, w]``); the sample's own-task prompt is the cancer-specific prompt the decoder receives. The paper's
Fig. 2 shows these prompts for test samples with t-SNE, coloured by cancer type: separated clusters mean the
prompts carry cancer-specific information. Here: lesion-centred patches are drawn per task from a cache (the
training sampler's lesion patches, without augmentation), each patch's own-task prompt is flattened to a
``d*h*w`` vector, and the vectors are embedded with t-SNE (scikit-learn) or PCA.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from unipet.errors import ConfigError

METHODS = ("tsne", "pca")


def prompt_vectors(model: torch.nn.Module, cache, case_ids: Sequence[str] | None = None, per_task: int = 32,
                   seed: int = 0, batch_size: int = 2, device: str | torch.device = "cpu") -> tuple[pd.DataFrame,
                                                                                                   np.ndarray]:
    """Own-task prompts of lesion-centred patches.

    Args:
        model: a model with a ``universal_prompt`` (``dpdnet``, ``uniseg``), in any mode (run in eval mode).
        cache: a ``unipet.data.cache.Cache`` preprocessed like the model's training data.
        case_ids: cases to draw from (default: every case of the cache with a task).
        per_task: patches per task (a task without a lesion in the cases gets random patches of its cases).
        seed: sampling seed.
        batch_size: patches per forward pass.
        device: where the model runs.

    Returns:
        ``(table, vectors)``: one row per patch (``case_id``, ``task``, ``kind``) and ``vectors [n, d*h*w]``
        float32, the prompt of the patch's own task.
    """
    from unipet.data.sampling import PatchSampler
    from unipet.models.uniseg import select_task_prompt

    if getattr(model, "universal_prompt", None) is None:
        raise ConfigError(f"{type(model).__name__} has no learned task prompts (universal prompt + FUSE); give a "
                          "dpdnet or uniseg checkpoint with its prompts on")
    if per_task < 1:
        raise ConfigError("per_task must be at least 1")
    task_set = cache.task_set
    ids = list(case_ids) if case_ids is not None else [c for c in cache.case_ids if cache.info(c).get("task")]
    if not ids:
        raise ConfigError(f"the cache {cache.root} has no case with a task; give a cache of task-labelled studies")
    patch = tuple(int(p) for p in (getattr(model, "config", None) or {}).get("patch_size", (112, 160, 128)))
    sampler = PatchSampler(cache, case_ids=ids, patch_size=patch, mix={"lesion": 1.0}, seed=seed, jitter=0.0)
    model_tasks = list(getattr(model, "task_set", task_set).names)
    present = sorted({t for t in sampler.case_task.values() if t is not None})
    if not present:
        raise ConfigError("none of the chosen cases has a task; give task-labelled cases")
    rng = np.random.default_rng(seed)
    patches = [sampler.draw(rng, "lesion", task=t) for t in present for _ in range(per_task)]
    rows, vectors = [], []
    dev = torch.device(device)
    was_training = model.training
    model.eval().to(dev)
    try:
        with torch.no_grad():
            for i in range(0, len(patches), batch_size):
                chunk = patches[i:i + batch_size]
                names = [task_set[p.task].name for p in chunk]
                missing = [n for n in names if n not in model_tasks]
                if missing:
                    raise ConfigError(f"the model has no task {missing[0]!r} (its tasks: {', '.join(model_tasks)}); "
                                      "give the cache the model was trained on")
                x = torch.from_numpy(np.stack([p.image for p in chunk])).to(dev)
                task = torch.tensor([model_tasks.index(n) for n in names], device=dev)
                _, bottleneck = model.encode(x)
                own = select_task_prompt(model.universal_prompt(bottleneck), task)
                vectors.append(own.flatten(1).float().cpu().numpy())
                rows += [{"case_id": p.case_id, "task": n, "kind": p.kind} for p, n in zip(chunk, names)]
    finally:
        model.train(was_training)
    return pd.DataFrame(rows), np.concatenate(vectors).astype(np.float32)


def embed_2d(vectors: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """``vectors [n, f]`` -> ``[n, 2]``: t-SNE (perplexity ``min(30, (n-1)/3)``, PCA initialisation) or PCA."""
    if method not in METHODS:
        raise ConfigError(f"unknown embedding {method!r}; use one of {', '.join(METHODS)}")
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) < 3:
        raise ConfigError(f"an embedding needs at least 3 prompt vectors, got {len(x)}; draw more patches per task")
    if method == "pca":
        from sklearn.decomposition import PCA

        out = PCA(n_components=2, random_state=seed).fit_transform(x) if x.shape[1] >= 2 else np.c_[x, 0 * x]
        return out.astype(np.float32)
    from sklearn.manifold import TSNE

    perplexity = float(max(1.0, min(30.0, (len(x) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x).astype(
        np.float32)


def separation(table: pd.DataFrame, coords: np.ndarray) -> float:
    """Silhouette score of the 2-D points by task (-1..1; higher = better separated cancer types)."""
    from sklearn.metrics import silhouette_score

    labels = table["task"].to_numpy()
    if len(set(labels)) < 2 or len(labels) <= len(set(labels)):
        return float("nan")
    return float(silhouette_score(coords, labels))


def prompts_figure(table: pd.DataFrame, coords: np.ndarray, title: str = ""):
    """Scatter of the 2-D prompt embedding, one colour per task (a matplotlib Figure)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot(1, 1, 1)
    colours = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
    for i, task in enumerate(sorted(table["task"].unique())):
        sel = (table["task"] == task).to_numpy()
        ax.scatter(coords[sel, 0], coords[sel, 1], s=16, alpha=0.8, color=colours[i % len(colours)],
                   label=f"{task} (n={int(sel.sum())})")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", fontsize=8, frameon=False)
    ax.set_title(title or "cancer-specific prompts", fontsize=10)
    fig.tight_layout()
    return fig
