"""MAST-Pro: organ fractions, prompt cross-attention, routing through the model, PEFT scope, training with
--peft, embeddings reloaded without the text encoder, the `unipet experts` report."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _synthetic import write_autopet

from unipet.cli import main
from unipet.data.cache import build_cache
from unipet.errors import ConfigError, MissingInputError
from unipet.io.layouts import import_autopet
from unipet.io.nifti import load_volume, save_volume
from unipet.models import create
from unipet.analysis.mastpro import parameter_report, start_usage, usage_report
from unipet.models.blocks import organ_fractions
from unipet.models.mastpro import PromptAttention
from unipet.models.text import encode_texts
from unipet.checkpoint import load_checkpoint, read_meta

PATCH = (32, 32, 64)
KW = dict(feature_size=12, depths=[1, 1, 1, 1], window_size=4, attention_heads=4, anatomy_widths=[4, 8, 8],
          text_encoder="hash", expert_rank=2, generic_experts=4, task_experts=2, top_k_general=2, top_k_task=2,
          proposal_hidden=16)


def _model(**kw):
    torch.manual_seed(0)
    return create("mastpro", patch_size=PATCH, **{**KW, **kw})


def _inputs(batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 2, *PATCH, generator=g)
    organs = torch.zeros(batch, *PATCH, dtype=torch.long)
    organs[:, 4:28, 4:28, 8:56] = 2
    organs[:, 8:16, 8:20, 10:30] = 13
    return x, organs


def test_organ_fractions_equal_one_hot_average_pooling():
    organs = torch.randint(0, 6, (2, 8, 12, 16))
    ref = F.avg_pool3d(F.one_hot(organs, 6).permute(0, 4, 1, 2, 3).float(), 4)
    torch.testing.assert_close(organ_fractions(organs, 6, 4), ref)
    with pytest.raises(ConfigError, match="organ_classes=9"):
        organ_fractions(torch.full((1, 4, 4, 4), 8), 6, 4)


def test_prompt_attention_shapes_and_masked_anatomy_equals_text_only():
    torch.manual_seed(0)
    att = PromptAttention(16, heads=4).eval()
    image = torch.randn(2, 16, 2, 3, 2)
    text = torch.randn(2, 3, 16)
    anatomy = torch.randn(2, 12, 16)
    valid = torch.ones(2, 15, dtype=torch.bool)
    valid[0, 3:] = False  # sample 0 has no organ map
    with torch.no_grad():
        fused, f_attn = att(image, torch.cat((text, anatomy), 1), valid)
        _, f_text = att(image, text, torch.ones(2, 3, dtype=torch.bool))
    assert fused.shape == f_attn.shape == f_text.shape == image.shape
    torch.testing.assert_close(fused, image + f_attn)
    torch.testing.assert_close(f_attn[0], f_text[0], rtol=1e-5, atol=1e-6)  # masked anatomy = text-only prompts
    assert not torch.allclose(f_attn[1], f_text[1], atol=1e-4)  # present anatomy changes F_attn


def test_forward_routes_prompts_and_outputs():
    model = _model().eval()
    x, organs = _inputs()
    seen = []
    model.attention.register_forward_hook(lambda m, inp, out: seen.append((inp[1].shape, out[1].shape)))
    start_usage(model)
    with torch.no_grad():
        y = model(x, task=2, organs=organs)
    report = usage_report(model, model.task_set.names)
    assert y.shape == (1, 1, *PATCH) and model.last_task_logits.shape == (1, 4)
    # prompts: 4 knowledge sentences + one anatomical token per 1/32 cell (1 x 1 x 2); F_attn at the bottleneck
    assert seen[0] == (torch.Size([1, 4 + 2, 192]), torch.Size([1, 192, 1, 1, 2]))
    assert list(report["routes"]) == [model.task_set.names[2]]
    route = report["routes"][model.task_set.names[2]]
    assert route["other_share"] == pytest.approx(0.0, abs=1e-9)
    assert route["generic_share"] + route["own_share"] == pytest.approx(1.0)
    assert all(sum(layer["routes"][model.task_set.names[2]]["share"]) == pytest.approx(1.0, abs=1e-4) for layer in report["layers"])
    # no task: the general router (generic experts only), and the classifier's argmax picks the head
    start_usage(model)
    with torch.no_grad():
        free = model(x, organs=organs)
        every = model.forward_all(x, organs=organs)
    report = usage_report(model, model.task_set.names)
    assert list(report["routes"]) == ["general"] and report["routes"]["general"]["own_share"] == 0.0
    assert every.shape == (1, 4, *PATCH)
    torch.testing.assert_close(free[:, 0], every[:, int(model.last_task_logits.argmax())])
    with pytest.raises(MissingInputError, match="organs"):
        model(x, task=0)


def test_text_only_model_needs_no_organs_and_aux_loss_in_training():
    model = _model(use_anatomy=False)
    assert model.requires == () and "organs" not in model.accepts and not hasattr(model, "anatomy")
    x, _ = _inputs()
    model.train()
    y = model(x, task=1)
    aux = model.auxiliary_losses()
    assert y.shape == (1, 1, *PATCH) and set(aux) == {"balance"} and 0 < float(aux["balance"].detach()) < 0.1
    model.eval()
    with torch.no_grad():
        model(x, task=1)
    assert model.auxiliary_losses() == {}
    plain = _model(use_anatomy=False, use_text=False, use_moe=False)
    assert not hasattr(plain, "attention") and len(plain.moe) == 0 and "type_queries" in dict(plain.named_parameters())
    with pytest.raises(MissingInputError):
        plain(x, task=0, text=torch.zeros(4, 384))


def test_peft_scope_is_exactly_experts_routers_and_heads():
    model = _model()
    peft = model.scope_parameters("peft")
    params = dict(model.named_parameters())
    t, g, s, r, f = 4, 4, 2, 2, 12
    dims = [f, 2 * f, 4 * f, 8 * f]  # one Swin block per stage
    experts = sum(2 * c * r * (g + t * s) for c in dims)
    routers = sum(c * g + t * c * (g + s) for c in dims)
    head_params = 153  # 8-8-8-1 dynamic head
    proposal = (16 * f + 384) * 16 + 16 + 16 * (head_params + 1) + head_params + 1
    precls = 2 * f + f * 8 + 8
    assert sum(params[n].numel() for n in peft) == experts + routers + proposal + precls
    assert all(n.startswith(("moe.", "proposal.", "precls.")) for n in peft)
    frozen = set(params) - peft
    assert any(n.startswith("net.swinViT") for n in frozen) and any(n.startswith("anatomy.") for n in frozen)
    assert any(n.startswith("attention.") for n in frozen) and "text_proj.weight" in frozen
    assert model.scope_parameters("all") == set(params)
    with pytest.raises(ConfigError):
        model.scope_parameters("decoder")


def test_paper_configuration_parameter_counts():
    torch.manual_seed(0)
    model = create("mastpro", patch_size=(96, 96, 96), text_encoder="hash")
    report = parameter_report(model)
    swin = sum(p.numel() for p in create("swinunetr", patch_size=(96, 96, 96)).parameters())
    assert report["groups"]["backbone"] == swin - (48 * 2 + 2)  # Swin UNETR-48 without its 1x1x1 output conv
    assert report["total"] == 73_871_572 and report["trainable_peft"] == 1_521_794
    assert report["reduction_pct"] == pytest.approx(97.94, abs=0.01)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = write_autopet(tmp_path_factory.mktemp("ap"), n=4)
    for folder in sorted(p for p in root.glob("*/*") if p.is_dir()):
        pet, affine = load_volume(folder / "SUV.nii.gz")
        organs = np.zeros(pet.shape, np.uint8)
        organs[1:-1, 2:-2, 3:-3] = 2
        organs[2:6, 4:10, 5:12] = 13
        save_volume(organs, affine, folder / "ORGANS.nii.gz")
    return build_cache(import_autopet(root), tmp_path_factory.mktemp("cache") / "c")


@pytest.fixture(scope="module")
def peft_run(cache, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "peft"
    kw = [f"--model-kw={k}={json.dumps(v)}" for k, v in KW.items()]
    rc = main(["train", str(cache.root), "--model", "mastpro", "--out", str(run), "--recipe", "mastpro", "--peft",
               "--iterations", "1", "--patch", *map(str, PATCH), "--batch", "1", "--device", "cpu", "--no-progress",
               "-j", "0", *kw])
    assert rc == 0
    return run


def test_peft_training_freezes_the_rest_and_embeddings_reload_without_encoder(peft_run, monkeypatch):
    meta = read_meta(peft_run)
    assert meta.recipe["trainable"] == "peft" and meta.recipe["name"] == "mastpro"
    log = [json.loads(line) for line in (peft_run / "log.jsonl").read_text().splitlines()]
    assert "balance" in log[-1] and log[-1]["iteration"] == 1

    def missing(*args, **kwargs):
        raise MissingInputError("the 'minilm' text encoder needs the all-MiniLM-L6-v2 package")

    monkeypatch.setattr("unipet.models.mastpro.encode_texts", missing)
    trained, _ = load_checkpoint(peft_run)  # rebuilt without any text encoder
    unset = _model()
    with pytest.raises(MissingInputError, match="never set"):
        unset(*_inputs()[:1], task=0, organs=_inputs()[1])
    monkeypatch.undo()
    from unipet.models.universal import query_texts

    expected = encode_texts(query_texts(trained.task_set, 2, "prompt"), "hash")
    torch.testing.assert_close(trained.text_embedding, expected)
    assert bool(trained.text_embedding_set)
    initial = dict(_model().named_parameters())  # the trainer seeds 0 before building, as _model does
    peft = trained.scope_parameters("peft")
    changed = {n for n, p in trained.named_parameters() if not torch.equal(p, initial[n])}
    assert changed and changed <= peft
    assert any(".experts.up" in n for n in changed)


def test_experts_cli_reports_usage_per_task(peft_run, cache, tmp_path):
    out = tmp_path / "usage.json"
    assert main(["experts", str(peft_run), str(cache.root), "--cases", "2", "--out", str(out), "--device", "cpu"]) == 0
    report = json.loads(out.read_text())
    tasks = {cache.info(c)["task"] for c in sorted(cache.split(None))[:2]}
    assert set(report["routes"]) == tasks and report["cases"] == 2
    for name in tasks:
        assert report["routes"][name]["generic_share"] + report["routes"][name]["own_share"] == pytest.approx(1.0)
        assert report["routes"][name]["other_share"] == pytest.approx(0.0, abs=1e-9)
    assert main(["experts", str(peft_run), str(cache.root), "--out", str(out), "--device", "cpu"]) == 2  # no overwrite


def test_prompt_attention_reads_the_samples_own_text_and_task_less_samples_take_the_general_route():
    model = _model().eval()
    x, organs = _inputs(batch=2, seed=3)
    text = model.text_embedding.clone()
    other = text.clone()
    other[[0, 1, 3]] = torch.randn(3, text.shape[1])  # every sentence but task 2's
    own = text.clone()
    own[2] = torch.randn(text.shape[1])
    with torch.no_grad():
        y = model(x, task=2, organs=organs, text=text)
        torch.testing.assert_close(model(x, task=2, organs=organs, text=other), y)  # other types' texts are not read
        assert (model(x, task=2, organs=organs, text=own) - y).abs().max() > 1e-5  # its own sentence is
        free = model(x, organs=organs, text=text)
        assert (model(x, organs=organs, text=other) - free).abs().max() > 1e-5  # the general route reads them all
        # per-sample task-less samples (NO_TASK = -1) in a batch with task-labelled ones
        mixed = model(x, task=torch.tensor([2, -1]), organs=organs)
        alone_known = model(x[:1], task=2, organs=organs[:1])
        alone_free = model(x[1:], organs=organs[1:])
    torch.testing.assert_close(mixed[:1], alone_known, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mixed[1:], alone_free, rtol=1e-4, atol=1e-5)
    mask = model.own_text_mask(torch.tensor([1, -1]), 4)
    assert mask.tolist() == [[False, True, False, False], [True, True, True, True]]


@pytest.fixture(scope="module")
def taskless_cache(tmp_path_factory):
    """Four tiny studies whose metadata names no tumour type (mixed-tumour data), with organ maps."""
    root = write_autopet(tmp_path_factory.mktemp("ap-taskless"), n=4, tasks=("",))
    for folder in sorted(p for p in root.glob("*/*") if p.is_dir()):
        pet, affine = load_volume(folder / "SUV.nii.gz")
        organs = np.zeros(pet.shape, np.uint8)
        organs[1:-1, 2:-2, 3:-3] = 2
        save_volume(organs, affine, folder / "ORGANS.nii.gz")
    manifest = import_autopet(root)
    assert all(c.task is None for c in manifest)
    return build_cache(manifest, tmp_path_factory.mktemp("cache-taskless") / "c")


def _train_general_router(cache, out, recipe):
    kw = [f"--model-kw={k}={json.dumps(v)}" for k, v in {**KW, "general_route_prob": 0.0}.items()]
    rc = main(["train", str(cache.root), "--model", "mastpro", "--out", str(out), "--recipe", str(recipe),
               "--iterations", "2", "--patch", *map(str, PATCH), "--batch", "1", "--device", "cpu", "--no-progress",
               "-j", "0", *kw])
    assert rc == 0
    trained, _ = load_checkpoint(out)
    initial = dict(_model(tasks=trained.task_set, general_route_prob=0.0).named_parameters())
    routers = [n for n, _ in trained.named_parameters() if n.endswith("general_router")]
    assert routers
    params = dict(trained.named_parameters())
    return [n for n in routers if not torch.equal(params[n], initial[n])]


def test_the_mastpro_recipe_trains_the_general_router_on_task_less_cases(taskless_cache, tmp_path):
    # the paper's recipe: task-less (mixed-tumour) cases reach the model as NO_TASK and train the general router
    assert _train_general_router(taskless_cache, tmp_path / "general", "mastpro")
    # the other choice gives them a random task: the general router then never sees a sample
    (tmp_path / "random.json").write_text(json.dumps({"base": "mastpro", "taskless": "random"}))
    assert _train_general_router(taskless_cache, tmp_path / "random", tmp_path / "random.json") == []


def test_a_general_route_recipe_is_refused_for_a_model_without_one(taskless_cache, tmp_path, capsys):
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"base": "nnunet", "taskless": "general"}))
    rc = main(["train", str(taskless_cache.root), "--model", "nnunet", "--out", str(tmp_path / "run"), "--recipe",
               str(recipe), "--iterations", "1", "--patch", "16", "16", "16", "--device", "cpu", "--no-progress"])
    assert rc == 2 and "general route" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint").exists()
