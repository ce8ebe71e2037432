"""MAST-Pro's anatomical encoder pre-trained as an organ autoencoder, and loaded into MAST-Pro."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _anatomy_data import write_cohort

from unipet.cli import main
from unipet.data.cache import build_cache
from unipet.errors import ConfigError, OutputExistsError
from unipet.models import create
from unipet.pretrain.organs import AnatomyPretrainConfig, load_anatomy_encoder, pretrain_anatomy_encoder

TINY_MASTPRO = dict(feature_size=12, depths=[1, 1, 1, 1], window_size=4, attention_heads=4, anatomy_widths=[4, 8, 8],
                    text_encoder="hash", expert_rank=2, generic_experts=4, task_experts=2, top_k_general=2,
                    top_k_task=2, proposal_hidden=16, organ_classes=18)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    manifest = write_cohort(tmp_path_factory.mktemp("cohort"), n=3, without_organs=(2,))
    return build_cache(manifest, tmp_path_factory.mktemp("cache") / "c")


@pytest.fixture(scope="module")
def run(cache, tmp_path_factory):
    config = AnatomyPretrainConfig(organ_classes=18, feature_size=12, widths=[4, 8, 8], patch_size=[32, 32, 32],
                                   iterations=60, batch_size=2, lr=1e-2, checkpoint_every=30)
    folder = tmp_path_factory.mktemp("run") / "ae"
    return folder, pretrain_anatomy_encoder(cache, folder, config, device="cpu")


def test_the_autoencoder_learns_to_reconstruct_organ_maps(run):
    _, result = run
    losses = result["losses"]
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5])
    assert result["accuracy_end"] > result["accuracy_start"] and result["accuracy_end"] > 0.8


def test_mastpro_starts_from_the_pretrained_encoder(run, cache, tmp_path):
    from unipet.train.trainer import initialise_from

    folder, result = run
    torch.manual_seed(1)
    model = create("mastpro", patch_size=(32, 32, 64), **TINY_MASTPRO)
    report = load_anatomy_encoder(model, folder)
    trained = result["model"].state_dict()
    for name, value in model.state_dict().items():
        if name.startswith("anatomy."):
            assert torch.equal(value, trained[name]), name
    assert len(report.loaded) == sum(n.startswith("anatomy.") for n in model.state_dict())
    fresh = create("mastpro", patch_size=(32, 32, 64), **TINY_MASTPRO)
    record = initialise_from(fresh, folder)  # what `unipet train --init RUN` does
    assert record["loaded"] == len(report.loaded)
    other = create("mastpro", patch_size=(32, 32, 64), **{**TINY_MASTPRO, "organ_classes": 38})
    with pytest.raises(ConfigError, match="organ_classes"):
        load_anatomy_encoder(other, folder)
    with pytest.raises(ConfigError, match="no anatomical encoder"):
        load_anatomy_encoder(create("mastpro", patch_size=(32, 32, 64), **{**TINY_MASTPRO, "use_anatomy": False}),
                             folder)
    with pytest.raises(OutputExistsError):
        pretrain_anatomy_encoder(cache, folder, AnatomyPretrainConfig(patch_size=[32, 32, 32], iterations=1))


def test_cli_and_bad_settings(cache, tmp_path, capsys):
    args = ["pretrain-anatomy", str(cache.root), "--out", str(tmp_path / "r"), "--organ-classes", "18",
            "--feature-size", "12", "--widths", "4", "8", "8", "--patch", "32", "32", "32", "--iterations", "3",
            "--device", "cpu"]
    assert main(args) == 0 and "accuracy" in capsys.readouterr().out
    assert (tmp_path / "r" / "checkpoint" / "model.safetensors").exists()
    assert main([*args[:3], str(tmp_path / "s"), *args[4:12], "--patch", "16", "32", "32"]) == 2
