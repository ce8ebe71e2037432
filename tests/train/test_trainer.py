"""Training loop: the loss falls, resume after a kill / SIGTERM is bit-identical, recipes, the CLI."""
from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch

from _synthetic import tiny_train_cache
from unipet.cli import main
from unipet.errors import ConfigError, OutputExistsError
from unipet.train import load_recipe, train
from unipet.checkpoint import load_checkpoint, read_meta

PATCH = (8, 16, 16)
KW = {"base_width": 4, "min_feature": 2}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tiny_train_cache(tmp_path_factory, n=6, n_val=2)


def _run(cache, run_dir, **kw):
    args = dict(iterations=6, patch_size=PATCH, batch_size=2, workers=0, model_kw=KW, device="cpu",
                progress=False, tensorboard=False, checkpoint_every=2)
    args.update(kw)
    return train(cache, "dpdnet", run_dir, **args)


def _weights(run_dir):
    model, meta = load_checkpoint(run_dir)
    return model.state_dict(), meta


def test_recipes_schedules_and_files(tmp_path):
    nn = load_recipe("nnunet")
    assert (nn.optimizer, nn.lr, nn.momentum, nn.weight_decay, nn.grad_clip) == ("sgd", 1e-2, 0.99, 3e-5, 12.0)
    assert nn.lr_at(0) == pytest.approx(1e-2)
    assert nn.lr_at(nn.iterations // 2) == pytest.approx(1e-2 * 0.5 ** 0.9)
    dp = load_recipe("dpdnet")
    assert (dp.optimizer, dp.lr, dp.weight_decay, dp.deep_supervision, dp.task_loss_weight) == ("sgd", 1e-4, 1e-3,
                                                                                                 False, 0.0)
    tr = load_recipe("transformer", iterations=100)
    tr = tr.with_overrides(warmup_iterations=10)
    assert tr.lr_at(0) == pytest.approx(1e-5) and tr.lr_at(9) == pytest.approx(1e-4)
    assert tr.lr_at(55) == pytest.approx(0.5e-4) and tr.lr_at(100) == pytest.approx(0.0, abs=1e-12)
    path = tmp_path / "mine.yaml"
    path.write_text("base: dpdnet\niterations: 7\nsampling: {lesion: 0.5, random: 0.5}\n")
    mine = load_recipe(path)
    assert (mine.name, mine.optimizer, mine.iterations, mine.sampling["lesion"]) == ("mine", "sgd", 7, 0.5)
    assert load_recipe(mine) == mine
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"iterations": 3, "learning_rate": 1}))
    with pytest.raises(ConfigError):
        load_recipe(bad)
    with pytest.raises(ConfigError):
        load_recipe("nnunet", amp="fp8")


def test_a_few_steps_reduce_the_loss_and_validation_runs(cache, tmp_path):
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"augmentation": {"enabled": False}, "validate_every": 30, "validate_cases": 2,
                                  "sampling": {"lesion": 0.5, "random": 0.5}}))
    result = _run(cache, tmp_path / "run", recipe=recipe, iterations=30, checkpoint_every=30)
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < first - 0.1, (first, last)
    assert result.validation and all(0.0 <= v <= 1.0 for v in result.validation.values())
    meta = read_meta(tmp_path / "run")
    assert meta.iteration == 30 and meta.complete and meta.recipe["augmentation"]["enabled"] is False
    assert meta.preprocess["channels"] == ["CT", "PET"] and meta.sampler["mix"]["lesion"] == 0.5
    assert len(meta.data["fingerprint"]) == 16 and meta.model_kwargs == KW
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["iteration"] == 30


def test_resume_after_kill_and_after_sigterm_is_identical_to_a_straight_run(cache, tmp_path):
    straight = _run(cache, tmp_path / "straight")
    reference, _ = _weights(tmp_path / "straight")

    def die_at_5(it, logs):  # a crash after the checkpoint at iteration 4: work of iteration 5 is lost
        if it == 5:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        _run(cache, tmp_path / "killed", callbacks=[die_at_5])
    assert read_meta(tmp_path / "killed").iteration == 4
    resumed = _run(cache, tmp_path / "killed", resume=True)
    assert resumed.iteration == 6 and resumed.losses == pytest.approx(straight.losses[4:], rel=0, abs=0)

    def term_at_3(it, logs):
        if it == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    stopped = _run(cache, tmp_path / "term", callbacks=[term_at_3])
    assert stopped.stopped and stopped.iteration == 3 and read_meta(tmp_path / "term").iteration == 3
    _run(cache, tmp_path / "term", resume=True)
    for run in ("killed", "term"):
        weights, meta = _weights(tmp_path / run)
        assert meta.complete and meta.iteration == 6
        for k, v in reference.items():
            assert torch.equal(v, weights[k]), (run, k)


def test_existing_runs_are_protected(cache, tmp_path):
    _run(cache, tmp_path / "run", iterations=1)
    with pytest.raises(OutputExistsError):
        _run(cache, tmp_path / "run", iterations=1)
    with pytest.raises(ConfigError):
        train(cache, "uniseg", tmp_path / "run", resume=True, device="cpu", progress=False, model_kw=KW)
    with pytest.raises(ConfigError):
        _run(cache, tmp_path / "run", resume=True, iterations=2, patch_size=(8, 8, 8))
    extended = _run(cache, tmp_path / "run", resume=True, iterations=3)
    assert extended.iteration == 3 and len(extended.losses) == 2 and read_meta(tmp_path / "run").iteration == 3


def test_cli_trains_and_refuses_bad_model_kw(cache, tmp_path):
    args = ["train", str(cache.root), "--model", "dpdnet", "--out", str(tmp_path / "cli"), "--iterations", "2",
            "--patch", *map(str, PATCH), "--batch", "1", "--model-kw", "base_width=4", "--model-kw", "min_feature=2",
            "--model-kw", "pa_head=released", "--device", "cpu", "--workers", "0", "--no-progress"]
    assert main(args) == 0
    meta = read_meta(tmp_path / "cli")
    assert meta.iteration == 2 and meta.model_kwargs["pa_head"] == "released"
    assert main([*args[:5], str(tmp_path / "cli2"), "--model-kw", "base_width"]) == 2


@pytest.mark.parametrize("name", ["stunet-s", "uniseg", "dodnet"])
def test_other_model_families_train_and_predict(cache, tmp_path, name):
    from _synthetic import tiny_study
    from unipet.infer import Predictor

    result = train(cache, name, tmp_path / name, iterations=2, patch_size=PATCH, batch_size=2, workers=0,
                   model_kw=KW, device="cpu", progress=False, tensorboard=False)
    assert result.iteration == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    predictor = Predictor.from_checkpoint(tmp_path / name, device="cpu")
    assert predictor.activation == ("sigmoid" if name == "dodnet" else "softmax")
    pred = predictor.predict_study(tiny_study(1), task="lymphoma")
    assert pred.mask.shape == (12, 16, 20) and set(np.unique(pred.mask)) <= {0, 1}


def test_init_from_a_run_and_training_only_a_scope(cache, tmp_path, monkeypatch):
    from unipet.models.dpdnet import DpDNet

    _run(cache, tmp_path / "a", iterations=2)
    start, _ = _weights(tmp_path / "a")
    with pytest.raises(ConfigError, match="trainable scopes"):
        _run(cache, tmp_path / "bad", iterations=1, init_from=tmp_path / "a", trainable="peft")

    def head_only(self, scope):
        names = {n for n, _ in self.named_parameters()}
        return names if scope == "all" else {n for n in names if "head" in n}

    monkeypatch.setattr(DpDNet, "scope_parameters", head_only)
    _run(cache, tmp_path / "b", iterations=2, init_from=tmp_path / "a", trainable="heads")
    after, meta = _weights(tmp_path / "b")
    assert meta.recipe["trainable"] == "heads"
    assert meta.init_from["file"] == "model.safetensors" and meta.init_from["loaded"] == len(start)
    changed = {n for n in start if not torch.equal(start[n], after[n])}
    assert changed and all("head" in n for n in changed), sorted(changed)[:5]
    with pytest.raises(ConfigError, match="no tensor"):  # another architecture shares no tensor
        train(cache, "unetr", tmp_path / "c", iterations=1, patch_size=(16, 16, 16), batch_size=1, workers=0,
              device="cpu", progress=False, tensorboard=False, init_from=tmp_path / "a",
              model_kw={"feature_size": 4, "hidden_size": 48, "mlp_dim": 96, "num_heads": 2})
