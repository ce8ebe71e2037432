"""Checkpoints: pickle-free round trip, rebuild from meta alone, optimizer flattening, atomic swap."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from unipet.errors import ConfigError, InputFileError
from unipet.models import create
from unipet.checkpoint import find_checkpoint, load_checkpoint, load_train_state, read_meta, save_checkpoint
from unipet.train.state import flatten_optimizer, restore_optimizer, save_training_checkpoint, unflatten_optimizer

PATCH = (8, 16, 16)


def _model():
    torch.manual_seed(0)
    return create("dpdnet", in_channels=2, num_classes=2, tasks=["lymphoma", "melanoma", "lung_cancer"],
                  patch_size=PATCH, base_width=4, min_feature=2)


def _meta(model) -> dict:
    return {"model": model.config, "preprocess": {"channels": ["CT", "PET"], "normalisation": {}}, "patch_size": list(PATCH)}


def _step(model, opt) -> None:
    x = torch.randn(2, 2, *PATCH)
    loss = model(x, task=torch.tensor([0, 2])).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


@pytest.mark.parametrize("make", [lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.99, nesterov=True),
                                  lambda p: torch.optim.AdamW(p, lr=1e-3)])
def test_optimizer_state_flattens_and_restores_exactly(make):
    model = _model()
    opt = make(model.parameters())
    _step(model, opt)
    tensors, rest = flatten_optimizer(opt.state_dict())
    json.dumps(rest)  # the non-tensor part is JSON
    assert tensors and all(torch.is_tensor(t) for t in tensors.values())
    restored = unflatten_optimizer(tensors, json.loads(json.dumps(rest)))
    opt2 = make(model.parameters())
    opt2.load_state_dict(restored)
    for a, b in zip(opt.state_dict()["state"].values(), opt2.state_dict()["state"].values()):
        for k in a:
            assert torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k]))


def test_round_trip_rebuilds_the_model_from_meta_alone(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _step(model, opt)
    folder = save_training_checkpoint(tmp_path / "run", model, _meta(model), opt, {"iteration": 1})
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "model.safetensors", "train_state.json",
                                                        "train_state.safetensors"]
    loaded, meta = load_checkpoint(tmp_path / "run")
    assert meta.versions["torch"] == torch.__version__ and meta.model_name == "dpdnet"
    model.eval()
    x = torch.randn(1, 2, *PATCH)
    torch.testing.assert_close(loaded(x, task=torch.tensor([1])), model(x, task=torch.tensor([1])), rtol=0, atol=0)
    tensors, state = load_train_state(folder)
    assert state["iteration"] == 1 and "rng.torch" in tensors
    opt2 = torch.optim.SGD(loaded.parameters(), lr=0.1, momentum=0.9)
    restore_optimizer(opt2, tensors, state)
    buf = [s["momentum_buffer"] for s in opt2.state_dict()["state"].values()]
    ref = [s["momentum_buffer"] for s in opt.state_dict()["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(buf, ref))


def test_swap_keeps_one_complete_checkpoint(tmp_path):
    model = _model()
    run = tmp_path / "run"
    save_checkpoint(run, model, {**_meta(model), "iteration": 1})
    save_checkpoint(run, model, {**_meta(model), "iteration": 2})
    assert read_meta(run).iteration == 2 and not (run / ".checkpoint.old").exists()
    assert not [p for p in run.iterdir() if p.name.startswith(".checkpoint.tmp")]
    # a kill between the two renames leaves only the previous checkpoint: it is found
    shutil.move(run / "checkpoint", run / ".checkpoint.old")
    assert find_checkpoint(run) == run / ".checkpoint.old" and read_meta(run).iteration == 2


def test_bad_checkpoints_raise_clear_errors(tmp_path):
    with pytest.raises(InputFileError):
        load_checkpoint(tmp_path)
    model = _model()
    folder = save_checkpoint(tmp_path / "run", model, {"model": {"nothing": 1}})
    with pytest.raises(ConfigError):
        load_checkpoint(folder)
    with pytest.raises(InputFileError):
        load_train_state(folder)


def test_meta_is_typed_and_versioned(tmp_path):
    """meta.json is read into CheckpointMeta: a file without a format is version 1, unknown keys are kept as
    read, and a format newer than this unipet reads is one clear error."""
    import json as _json
    import shutil

    from unipet.checkpoint import FORMAT_VERSION, CheckpointMeta
    from unipet.checkpoint import default_checkpoint as checkpoint_path

    shipped = CheckpointMeta.from_dict(_json.loads((checkpoint_path() / "meta.json").read_text()))
    assert shipped.version == 1 and shipped.model_name == "dpdnet" and shipped.num_classes == 2
    assert "provenance" in shipped.extra and shipped.to_dict()["provenance"] == shipped.extra["provenance"]
    raw = {"model": {"name": "dpdnet"}, "iteration": 3, "someday": {"x": 1}}
    meta = CheckpointMeta.from_dict(raw)
    assert meta.version == 1 and meta.iteration == 3 and meta.extra == {"someday": {"x": 1}}
    assert CheckpointMeta.from_dict(meta.to_dict()) == meta
    folder = tmp_path / "new"
    shutil.copytree(checkpoint_path(), folder)
    newer = {**_json.loads((folder / "meta.json").read_text()), "format": FORMAT_VERSION + 1}
    (folder / "meta.json").write_text(_json.dumps(newer))
    with pytest.raises(ConfigError, match="newer unipet"):
        load_checkpoint(folder)
    with pytest.raises(ConfigError, match="format"):
        CheckpointMeta.from_dict({"model": {}, "format": "two"})
