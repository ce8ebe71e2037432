"""Growing a prompted model's task set: old tasks unchanged, a new task answers as its donor, bad growth refused."""
from __future__ import annotations

import pytest
import torch

from unipet.errors import ConfigError
from unipet.models import create
from unipet.models.task_growth import grow_tasks
from unipet.tasks import TaskSet

PATCH = (32, 32, 32)
KW = {"base_width": 4, "min_feature": 2, "task_classifier": True, "pa_head": "paper"}


def _tasks(names):
    full = TaskSet.load("default_sarcoma")
    return TaskSet.from_dict({"name": "t", "tasks": [full[n].to_dict() for n in names]})


def _model(names, seed):
    torch.manual_seed(seed)
    model = create("dpdnet", in_channels=2, num_classes=2, tasks=_tasks(names), patch_size=PATCH, **KW)
    with torch.no_grad():  # non-trivial norms and biases, so that a wrong copy shows
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


OLD = ["lung_cancer", "lymphoma", "melanoma"]
NEW = OLD + ["soft_tissue_sarcoma", "breast_cancer"]


@pytest.mark.parametrize("donors", [{"soft_tissue_sarcoma": "lymphoma", "breast_cancer": "lung_cancer"},
                                    {"soft_tissue_sarcoma": "melanoma", "breast_cancer": "melanoma"}])
def test_growth_is_exact_with_donors(donors):
    old = _model(OLD, 0)
    new = _model(NEW, 1)
    report = grow_tasks(new, old.state_dict(), OLD, NEW, donors)
    assert report.grown and report.from_donor and not report.initialised
    x = torch.randn(len(NEW), 2, *PATCH)
    with torch.no_grad():
        for t, name in enumerate(OLD):
            task = torch.full((1,), t)
            torch.testing.assert_close(new(x[:1], task=task), old(x[:1], task=task), atol=1e-5, rtol=1e-4)
        for j, name in enumerate(NEW[len(OLD):]):
            donor = OLD.index(donors[name])
            torch.testing.assert_close(new(x[:1], task=torch.full((1,), len(OLD) + j)),
                                       old(x[:1], task=torch.full((1,), donor)), atol=1e-5, rtol=1e-4)
        # auto chooses among the old tasks as before: the new rows start off, the old logits are unchanged
        new(x[:1], task=torch.zeros(1, dtype=torch.long))
        old(x[:1], task=torch.zeros(1, dtype=torch.long))
        logits, before = new.last_task_logits[0], old.last_task_logits[0]
        torch.testing.assert_close(logits[:len(OLD)], before, atol=1e-5, rtol=1e-4)
        assert float(logits[len(OLD):].max()) < float(before.min()) - 20


def test_growth_without_donor_keeps_old_tasks():
    old = _model(OLD, 0)
    new = _model(OLD + ["soft_tissue_sarcoma"], 1)
    report = grow_tasks(new, old.state_dict(), OLD, OLD + ["soft_tissue_sarcoma"])
    assert any(n.startswith("pa_heads.3.") for n in report.initialised)
    x = torch.randn(1, 2, *PATCH)
    with torch.no_grad():
        torch.testing.assert_close(new(x, task=torch.ones(1, dtype=torch.long)),
                                   old(x, task=torch.ones(1, dtype=torch.long)), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("new_names, donors, match", [
    (["lymphoma", "lung_cancer", "melanoma", "soft_tissue_sarcoma"], {}, "same order"),
    (OLD, {}, "add at least one"),
    (OLD + ["soft_tissue_sarcoma"], {"soft_tissue_sarcoma": "prostate"}, "unknown tasks"),
    (OLD + ["soft_tissue_sarcoma"], {"lymphoma": "lung_cancer"}, "unknown tasks"),
])
def test_bad_growth_is_refused(new_names, donors, match):
    old = _model(OLD, 0)
    new = _model(new_names, 1)
    with pytest.raises(ConfigError, match=match):
        grow_tasks(new, old.state_dict(), OLD, new_names, donors)


def test_new_head_scope_trains_the_new_type_without_touching_the_old_ones():
    """DpDNet's 'new-head' scope: only the last task's head and the task classifier train; old masks unchanged."""
    old = _model(OLD, 0)
    new = _model(OLD + ["soft_tissue_sarcoma"], 1)
    grow_tasks(new, old.state_dict(), OLD, OLD + ["soft_tissue_sarcoma"], {"soft_tissue_sarcoma": "lymphoma"})
    names = new.scope_parameters("new-head")
    assert names == {n for n, _ in new.named_parameters() if n.startswith("pa_heads.3.")}
    x = torch.randn(2, 2, *PATCH)
    with torch.no_grad():
        before = [new(x[:1], task=torch.full((1,), t)) for t in range(len(OLD) + 1)]
    for name, p in new.named_parameters():
        p.requires_grad_(name in names)
    opt = torch.optim.SGD([p for p in new.parameters() if p.requires_grad], lr=0.5)
    new.train()
    out = new(x, task=torch.full((2,), len(OLD)))
    out.square().mean().backward()
    opt.step()
    new.eval()
    with torch.no_grad():
        for t in range(len(OLD)):
            torch.testing.assert_close(new(x[:1], task=torch.full((1,), t)), before[t])
        assert not torch.allclose(new(x[:1], task=torch.full((1,), len(OLD))), before[len(OLD)])
    with pytest.raises(ConfigError, match="trainable scopes"):
        new.scope_parameters("peft")


def test_growth_to_another_patch_resizes_the_universal_prompt_as_the_old_model_does_at_run_time():
    from unipet.models.stunet import resolve_backbone

    torch.manual_seed(0)
    old_patch = (48, 64, 64)
    old = create("dpdnet", in_channels=2, num_classes=2, tasks=_tasks(OLD), patch_size=old_patch, **KW).eval()
    strides = resolve_backbone(old_patch, "s", KW["base_width"], min_feature=KW["min_feature"])["strides"]
    new = create("dpdnet", in_channels=2, num_classes=2, tasks=_tasks(OLD + ["soft_tissue_sarcoma"]),
                 patch_size=PATCH, strides=strides, **KW).eval()  # the same network at 32^3: a smaller prompt
    assert new.universal_prompt.prompt.shape[2:] != old.universal_prompt.prompt.shape[2:]
    grow_tasks(new, old.state_dict(), OLD, OLD + ["soft_tissue_sarcoma"], {"soft_tissue_sarcoma": "lymphoma"})
    x = torch.randn(1, 2, *PATCH)
    with torch.no_grad():
        torch.testing.assert_close(new(x, task=torch.full((1,), 3)), old(x, task=torch.full((1,), 1)),
                                   atol=1e-5, rtol=1e-4)
