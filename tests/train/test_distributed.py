"""Two gloo processes on CPU train with DDP: different patches per rank, identical weights, rank 0 checkpoints."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from _synthetic import write_autopet

PATCH = (8, 16, 16)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cache_root: str, run_dir: str, out_dir: str) -> None:
    from safetensors.torch import save_file

    from unipet.train import train

    torch.set_num_threads(1)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    result = train(cache_root, "dpdnet", run_dir, iterations=3, patch_size=PATCH, batch_size=2, workers=0,
                   model_kw={"base_width": 4, "min_feature": 2}, device="cpu", progress=False, tensorboard=False,
                   checkpoint_every=3)
    save_file({k: v.contiguous() for k, v in result.model.state_dict().items()}, f"{out_dir}/rank{rank}.safetensors")
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result.losses))


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory) -> str:
    from unipet.data.cache import build_cache
    from unipet.io.layouts import import_autopet

    manifest = import_autopet(write_autopet(tmp_path_factory.mktemp("ap"), n=4))
    for c in manifest:
        c.split = "train"
    return str(build_cache(manifest, tmp_path_factory.mktemp("cache") / "c").root)


@pytest.mark.slow
def test_two_gloo_ranks_keep_identical_weights(cache_root, tmp_path):
    from safetensors.torch import load_file

    from unipet.models import create
    from unipet.tasks import TaskSet
    from unipet.checkpoint import load_checkpoint

    out = tmp_path / "out"
    out.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), cache_root, str(tmp_path / "run"), str(out)), nprocs=2, join=True)
    w0, w1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    losses = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert losses[0] != losses[1], "each rank must draw its own patches"
    model, meta = load_checkpoint(tmp_path / "run")
    assert meta.iteration == 3
    for k, v in model.state_dict().items():
        assert torch.equal(v, w0[k]), k
    torch.manual_seed(0)  # the recipe's seed: the weights every rank started from
    init = create("dpdnet", in_channels=2, num_classes=2, tasks=TaskSet.from_dict(meta.model["tasks"]), patch_size=PATCH,
                  base_width=4, min_feature=2).state_dict()
    assert any(not torch.equal(init[k], w0[k]) for k in init), "training must have changed the weights"
