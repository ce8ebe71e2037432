"""``unipet prompts``: the own-task prompts of lesion patches, their 2-D embedding and plot (DpDNet Fig. 2)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from _synthetic import write_autopet
from unipet.analysis.prompts import embed_2d, prompt_vectors, separation
from unipet.cli import main
from unipet.data.cache import Cache, build_cache
from unipet.errors import ConfigError
from unipet.io.layouts import import_autopet
from unipet.models import create
from unipet.checkpoint import save_checkpoint

PATCH = (8, 16, 16)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = write_autopet(tmp_path_factory.mktemp("ap"), n=6)
    return Cache(build_cache(import_autopet(root), tmp_path_factory.mktemp("cache") / "c").root)


@pytest.fixture(scope="module")
def run(cache, tmp_path_factory):
    torch.manual_seed(0)
    model = create("dpdnet", in_channels=2, num_classes=2, tasks=cache.task_set, patch_size=PATCH, base_width=4,
                   min_feature=2)
    meta = {"model": model.config, "preprocess": cache.config.to_dict(), "patch_size": list(PATCH)}
    folder = tmp_path_factory.mktemp("run") / "run"
    save_checkpoint(folder, model, meta)
    return folder, model


def test_prompt_vectors_are_the_own_task_fuse_outputs(cache, run):
    _, model = run
    table, vectors = prompt_vectors(model, cache, per_task=3, seed=1)
    tasks = sorted(table["task"].unique())
    assert tasks == ["lung_cancer", "lymphoma"] and len(table) == 6 and (table["kind"] == "lesion").all()
    assert vectors.shape == (6, int(np.prod(model.universal_prompt.prompt.shape[2:])))
    # the first patch again, by hand: encoder -> universal prompt + FUSE -> channel of its own task
    from unipet.data.sampling import PatchSampler

    ids = [c for c in cache.case_ids if cache.info(c).get("task")]
    sampler = PatchSampler(cache, case_ids=ids, patch_size=PATCH, mix={"lesion": 1.0}, seed=1, jitter=0.0)
    first = sorted({t for t in sampler.case_task.values() if t is not None})[0]
    patch = sampler.draw(np.random.default_rng(1), "lesion", task=first)
    with torch.no_grad():
        _, bottleneck = model.eval().encode(torch.from_numpy(patch.image[None]))
        own = model.universal_prompt(bottleneck)[0, model.task_set.index(cache.task_set[first].name)]
    np.testing.assert_allclose(vectors[0], own.flatten().numpy(), rtol=1e-5, atol=1e-6)


def test_embeddings_and_separation():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 0.1, (10, 6)), rng.normal(3, 0.1, (10, 6))
    table = pd.DataFrame({"task": ["a"] * 10 + ["b"] * 10})
    for method in ("pca", "tsne"):
        coords = embed_2d(np.vstack([a, b]), method)
        assert coords.shape == (20, 2) and separation(table, coords) > 0.8  # two clusters stay apart
    mixed = embed_2d(np.vstack([a, a + rng.normal(0, 0.1, a.shape)]), "pca")
    assert separation(table, mixed) < 0.3  # the same distribution under two names does not separate
    with pytest.raises(ConfigError, match="umap"):
        embed_2d(a, "umap")


def test_cli_writes_plot_and_csv_and_refuses_models_without_prompts(cache, run, tmp_path):
    folder, _ = run
    png, csv = tmp_path / "fig2.png", tmp_path / "fig2.csv"
    args = ["prompts", str(folder), str(cache.root), "--plot", str(png), "--csv", str(csv), "--per-task", "4",
            "--method", "pca"]
    assert main(args) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = pd.read_csv(csv)
    assert list(out.columns) == ["case_id", "task", "kind", "x", "y"] and len(out) == 8
    assert main(args) == 2  # refuses to overwrite
    plain = create("stunet-s", in_channels=2, num_classes=2, patch_size=PATCH, base_width=4, min_feature=2)
    save_checkpoint(tmp_path / "plain", plain, {"model": plain.config, "preprocess": cache.config.to_dict(),
                                                "patch_size": list(PATCH)})
    assert main(["prompts", str(tmp_path / "plain"), str(cache.root), "--plot", str(tmp_path / "p.png")]) == 2
