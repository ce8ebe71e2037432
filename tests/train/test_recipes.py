"""Shipped recipes follow their sources (paper / release / unipet's choice) and the schedules are exact."""
from __future__ import annotations

import pytest
import torch

from unipet.data.augment import AugmentConfig
from unipet.errors import ConfigError
from unipet.train.recipes import RECIPES, load_recipe


def test_nnunet_recipe_is_unchanged():
    nn = load_recipe("nnunet")
    assert (nn.optimizer, nn.lr, nn.momentum, nn.weight_decay, nn.grad_clip, nn.iterations, nn.batch_size,
            nn.deep_supervision, nn.task_loss_weight, nn.schedule) == ("sgd", 1e-2, 0.99, 3e-5, 12.0, 250_000, 2,
                                                                        True, 0.1, "poly")
    assert nn.patch_size == (112, 160, 128) and AugmentConfig.from_dict(nn.augmentation) == AugmentConfig()


def test_dpdnet_recipes():
    paper, release = load_recipe("dpdnet"), load_recipe("dpdnet-release")
    for r in (paper, release):
        assert (r.optimizer, r.lr, r.weight_decay, r.momentum, r.schedule, r.iterations, r.batch_size) == (
            "sgd", 1e-4, 1e-3, 0.99, "poly", 250_000, 2)
        assert r.patch_size == (112, 160, 128) and not r.deep_supervision and r.task_loss_weight == 0.0
    free = load_recipe("dpdnet-prompt-free")
    assert free.task_loss_weight == 0.1 and free.optimizer == "sgd" and not free.deep_supervision
    assert load_recipe("dpdnet-adamw").optimizer == "adamw"


def test_lesion_balance_is_a_validated_recipe_field_off_by_default():
    assert load_recipe("nnunet").lesion_balance == "lesion"
    assert load_recipe("nnunet").with_overrides(lesion_balance="task").lesion_balance == "task"
    with pytest.raises(ConfigError, match="lesion_balance"):
        load_recipe("nnunet").with_overrides(lesion_balance="case")


def test_mastpro_recipes_have_the_papers_optimiser_batch_and_augmentations():
    for name in ("mastpro", "mastpro-peft"):
        r = load_recipe(name)
        assert (r.optimizer, r.lr, r.batch_size, r.patch_size) == ("adamw", 5e-5, 4, (96, 96, 96))
        aug = AugmentConfig.from_dict(r.augmentation)
        assert aug.p_rot90 > 0 and aug.p_shift > 0 and aug.rot90_plane == (1, 2)
    assert load_recipe("mastpro-peft").trainable == "peft"


def test_gcis_recipe_cosine_warm_restarts_equal_torch_and_multi_spacing():
    r = load_recipe("gcis")
    assert (r.lr, r.schedule, r.restart_period) == (2e-4, "cosine-restarts", 50_000)
    assert r.multi_spacing == {"spacings": [[0.6] * 3, [1.0] * 3, [1.5] * 3], "random_p": 0.1}
    short = r.with_overrides(restart_period=7, restart_mult=2, iterations=60)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=short.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=7, T_mult=2)
    for it in range(60):
        assert short.lr_at(it) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15), it
        opt.step()
        sched.step()
    assert short.lr_at(7) == pytest.approx(2e-4)  # a restart
    with pytest.raises(ConfigError, match="restart_period"):
        load_recipe("nnunet", schedule="cosine-restarts")


def test_every_shipped_recipe_validates_and_round_trips():
    for name, recipe in RECIPES.items():
        assert load_recipe(name) == recipe
        assert load_recipe(recipe.to_dict()["name"]).to_dict() == recipe.to_dict()
