"""Prompt-driven models on STU-Net: DpDNet, UniSeg, DoDNet, CLIP-Universal, and prompt-free use."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from unipet.errors import MissingInputError, UnknownTaskError
from unipet.models import create
from unipet.models.base import count_parameters
from unipet.models.dodnet import dynamic_conv, dynamic_head_params
from unipet.train.losses import partial_label_dice_bce, task_classification_loss

PATCH = (16, 32, 32)
FULL_PATCH = (112, 160, 128)
MODELS = {
    "uniseg": {},
    "dpdnet": {"task_classifier": True},
    "dpdnet-paper": {"pa_head": "paper", "task_classifier": True},
    "dodnet": {},
    "clip-universal": {"text_encoder": "hash"},
}


def build(key: str, **kw):
    name = "dpdnet" if key.startswith("dpdnet") else key
    torch.manual_seed(0)
    return create(name, in_channels=2, num_classes=2, tasks=4, patch_size=PATCH, base_width=2, **{**MODELS[key], **kw})


def out_channels(model) -> int:
    return 1 if model.output_activation == "sigmoid" else 2


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(3, 2, *PATCH, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("key", MODELS)
def test_forward_backward_and_deep_supervision(key, x):
    model = build(key)
    model.train()
    model.set_deep_supervision(True)
    outs = model(x, task=torch.tensor([0, 2, 1]))
    k = out_channels(model)
    assert [tuple(o.shape) for o in outs] == [
        (3, k, 16, 32, 32), (3, k, 8, 16, 16), (3, k, 4, 8, 8), (3, k, 4, 4, 4), (3, k, 4, 4, 4)]
    loss = sum(o.square().mean() for o in outs) + task_classification_loss(model.last_task_logits,
                                                                           torch.tensor([0, 2, 1]))
    loss.backward()
    assert model.conv_blocks_context[0][0].conv1.weight.grad.abs().sum() > 0
    assert model.task_classifier.fc.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        y = model(x, task=1)
    assert isinstance(y, torch.Tensor) and y.shape == (3, k, *PATCH) and torch.isfinite(y).all()


@pytest.mark.parametrize("key", MODELS)
def test_task_is_per_sample(key, x):
    model = build(key).eval()
    with torch.no_grad():
        a = model(x, task=torch.tensor([0, 1, 2]))
        b = model(x, task=torch.tensor([0, 3, 2]))
        alone = model(x[1:2], task=torch.tensor([1]))
    torch.testing.assert_close(a[0], b[0])  # changing sample 1's task leaves sample 0 alone
    torch.testing.assert_close(a[2], b[2])
    assert (a[1] - b[1]).abs().max() > 1e-6  # ... and changes sample 1
    torch.testing.assert_close(a[1:2], alone, rtol=1e-4, atol=1e-5)  # grouping keeps the sample order


def test_dpdnet_gradients_reach_only_the_selected_task(x):
    model = build("dpdnet")
    model.train()
    model(x, task=torch.tensor([2, 2, 2])).mean().backward()
    for t in range(4):
        head_grads = [p.grad for p in model.pa_heads[t].parameters()]
        gate_grad = model.common_prompt.gates[t].weight.grad
        if t == 2:
            assert all(g is not None for g in head_grads) and sum(g.abs().sum() for g in head_grads) > 0
            assert gate_grad is not None and gate_grad.abs().sum() > 0
        else:
            assert all(g is None for g in head_grads) and gate_grad is None


def test_uniseg_and_dodnet_select_only_their_task_parameters(x):
    uniseg = build("uniseg")
    uniseg(x, task=torch.tensor([1, 1, 1])).mean().backward()
    last_fuse = uniseg.universal_prompt.fuse[-1].conv.weight.grad  # [N, mid, 3, 3, 3]
    assert last_fuse[1].abs().sum() > 0
    assert last_fuse[[0, 2, 3]].abs().sum() == 0
    dodnet = build("dodnet")
    dodnet(x, task=torch.tensor([3, 3, 3])).mean().backward()
    onehot_cols = dodnet.controller.weight.grad[:, dodnet.widths[-1]:]
    assert onehot_cols[:, 3].abs().sum() > 0 and onehot_cols[:, :3].abs().sum() == 0


@pytest.mark.parametrize("key,target,rel", [
    ("uniseg", 15.12e6, 0.003), ("dpdnet-default", 15.19e6, 0.001), ("dodnet", 15.14e6, 0.03),
    ("clip-universal", 15.34e6, 0.03), ("clip-universal-512", 15.34e6, 0.015)])
def test_parameter_counts_at_full_config(key, target, rel):
    name = "dpdnet" if key.startswith("dpdnet") else key.removesuffix("-512")
    kwargs = {"text_encoder": None, "text_dim": 512} if key.endswith("-512") else MODELS.get(key, {})  # CLIP width
    with torch.device("meta"):
        model = create(name, in_channels=2, num_classes=2, tasks=4, patch_size=FULL_PATCH, **kwargs)
    assert count_parameters(model) == pytest.approx(target, rel=rel)


def test_dpdnet_default_is_the_reported_model_and_paper_head_is_an_option():
    with torch.device("meta"):
        released = create("dpdnet", tasks=4, patch_size=FULL_PATCH).eval()  # the defaults: the reported model
        paper = create("dpdnet", tasks=4, patch_size=FULL_PATCH, pa_head="paper")
    assert released.task_classifier is None and released.requires == ("task",)  # the task is an input
    assert count_parameters(released) == 15_188_885  # Table 1: 15.19 M
    assert not any(isinstance(m, type(paper.pa_heads[0])) for m in released.modules())
    with torch.device("meta"):
        with FlopCounterMode(display=False) as counter:
            released(torch.empty(1, 2, *FULL_PATCH), task=torch.zeros(1, dtype=torch.long))
    assert released.universal_prompt.prompt.shape == (1, 4, 7, 5, 4)  # N x D/16 x H/32 x W/32
    assert counter.get_total_flops() / 2 == pytest.approx(138.79e9, rel=0.03)
    assert count_parameters(paper) > count_parameters(released)


def test_prompt_size_follows_other_patch_sizes():
    model = create("dpdnet", tasks=3, patch_size=(48, 64, 96), base_width=2).eval()
    # 48 -> 6 after 3 halvings (3 < 4 stops it); 64 -> 4 and 96 -> 6 after 4
    assert model.strides == [(2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 1, 1)]
    assert model.universal_prompt.prompt.shape == (1, 3, 6, 4, 6)
    with torch.no_grad():
        assert model(torch.randn(1, 2, 48, 64, 96), task=2).shape == (1, 2, 48, 64, 96)
        # an input of another size than the training patch: the prompt is resized to the bottleneck
        assert model(torch.randn(1, 2, 16, 32, 48), task=0).shape == (1, 2, 16, 32, 48)


def test_dpdnet_ablation_switches(x):
    bottleneck = 2 * 16
    plain = build("dpdnet", specific_prompt=False, common_prompt=False, pa_heads=False)
    assert plain.universal_prompt is None and not hasattr(plain, "pa_heads")
    assert plain.upsample_layers[0].conv.in_channels == bottleneck
    assert build("dpdnet", common_prompt=False).upsample_layers[0].conv.in_channels == bottleneck + 1
    assert build("dpdnet").upsample_layers[0].conv.in_channels == bottleneck + 2
    with torch.no_grad():
        assert plain.eval()(x, task=[0, 1, 2]).shape == (3, 2, *PATCH)


@pytest.mark.parametrize("key", ["uniseg", "dpdnet", "dodnet", "clip-universal"])
def test_missing_or_bad_task(key, x):
    strict = build(key, task_classifier=False).eval()
    assert strict.requires == ("task",)
    with pytest.raises(MissingInputError, match="task"):
        strict(x)
    with pytest.raises(UnknownTaskError):
        strict(x, task=torch.tensor([0, 4, 1]))
    with pytest.raises(MissingInputError, match="3 samples"):
        strict(x, task=torch.tensor([0, 1]))
    with pytest.raises(MissingInputError):
        strict.infer_task(x)


@pytest.mark.parametrize("key", ["uniseg", "dpdnet", "dodnet", "clip-universal"])
def test_prompt_free_uses_classifier_argmax(key, x):
    model = build(key).eval()
    with torch.no_grad():
        free = model(x)
        chosen = model.last_task_logits.argmax(1)
        given = model(x, task=chosen)
        idx, prob = model.infer_task(x)
    torch.testing.assert_close(free, given)
    assert torch.equal(idx, chosen)
    expected = model.last_task_logits.softmax(1).max(1).values
    torch.testing.assert_close(prob, expected)


def test_dynamic_conv_matches_per_sample_convolutions():
    torch.manual_seed(0)
    channels = (8, 8, 8, 2)
    feat = torch.randn(2, 8, 3, 4, 5)
    params = torch.randn(2, 3, dynamic_head_params(channels))
    out = dynamic_conv(feat, params, channels)
    assert out.shape == (2, 3, 2, 3, 4, 5) and dynamic_head_params((8, 8, 8, 1)) == 153
    # reference: sample 1, head 2, layer by layer with ordinary convolutions
    p, y, off = params[1, 2], feat[1:2], 0
    for i, (cin, cout) in enumerate(zip(channels[:-1], channels[1:])):
        w = p[off:off + cin * cout].reshape(cout, cin, 1, 1, 1)
        off += cin * cout
        y = F.conv3d(y, w, p[off:off + cout])
        off += cout
        y = F.relu(y) if i < 2 else y
    torch.testing.assert_close(out[1, 2], y[0])


def test_clip_universal_forward_all_and_task_channels(x):
    model = build("clip-universal").eval()
    with torch.no_grad():
        everything = model.forward_all(x)
        own = model(x, task=torch.tensor([3, 0, 2]))
        same_text = model(x, task=torch.tensor([3, 0, 2]), text=model.text_embedding.clone())
    assert everything.shape == (3, 4, *PATCH)
    torch.testing.assert_close(own[:, 0], everything[torch.arange(3), torch.tensor([3, 0, 2])])
    torch.testing.assert_close(same_text, own)
    with pytest.raises(MissingInputError, match="shape"):
        model(x, task=0, text=torch.zeros(2, 384))


def test_partial_label_dice_bce_matches_hand_computation():
    logits = torch.tensor([[[0.0, 2.0], [1.0, -1.0]],
                           [[-2.0, 0.5], [3.0, 3.0]]]).reshape(2, 2, 2, 1, 1)  # [B=2, Q=2, 2 voxels]
    target = torch.tensor([[[0, 1], [1, 0]], [[0, 1], [1, 1]]], dtype=torch.float32).reshape(2, 2, 2, 1, 1)
    annotated = torch.tensor([[True, False], [True, True]])
    loss = partial_label_dice_bce(logits, target, annotated, smooth=0.0)

    def sig(v):
        return 1 / (1 + torch.exp(-torch.tensor(v)))

    pairs = [((0.0, 2.0), (0, 1)), ((-2.0, 0.5), (0, 1)), ((3.0, 3.0), (1, 1))]
    dices, bces = [], []
    for lg, tg in pairs:
        p = [sig(v) for v in lg]
        inter = sum(pi * ti for pi, ti in zip(p, tg))
        dices.append(1 - 2 * inter / (sum(p) + sum(tg)))
        bces += [-(ti * torch.log(pi) + (1 - ti) * torch.log(1 - pi)) for pi, ti in zip(p, tg)]
    expected = torch.stack(dices).mean() + torch.stack(bces).mean()
    torch.testing.assert_close(loss, expected)
    # the unannotated pair (sample 0, class 1) does not matter at all
    worse = logits.clone()
    worse[0, 1] = -50.0
    torch.testing.assert_close(partial_label_dice_bce(worse, target, annotated, smooth=0.0), loss)
    nothing = partial_label_dice_bce(logits.requires_grad_(), target, torch.zeros(2, 2, dtype=torch.bool))
    assert nothing.item() == 0.0 and nothing.requires_grad


@pytest.mark.parametrize("kwargs", [{"pa_head": "paper", "task_classifier": True},
                                    {"pa_head": "released", "task_classifier": False}])
def test_checkpoints_recording_explicit_head_kwargs_load_with_their_architecture(kwargs, tmp_path):
    """A checkpoint whose meta records ``pa_head``/``task_classifier`` rebuilds that architecture, whatever the
    builder's defaults are (the shipped checkpoint and the runs trained before the defaults changed)."""
    from unipet.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = create("dpdnet", in_channels=2, num_classes=2, tasks=4, patch_size=PATCH, base_width=2, **kwargs).eval()
    meta = {"model": model.config, "preprocess": {"channels": ["CT", "PET"], "normalisation": {}},
            "patch_size": list(PATCH)}
    save_checkpoint(tmp_path / "run", model, meta)
    loaded, meta = load_checkpoint(tmp_path / "run")
    assert meta.model_kwargs == {"base_width": 2, **kwargs}
    assert (loaded.task_classifier is None) == (not kwargs["task_classifier"])
    assert type(loaded.pa_heads[0]) is type(model.pa_heads[0])
    x = torch.randn(2, 2, *PATCH, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x, task=torch.tensor([0, 3])), model(x, task=torch.tensor([0, 3])))


def test_channels_last_3d_gives_the_eager_output():
    """The recipe's ``channels_last`` (the fastest CPU setting measured, benchmarks/RESULTS.md) changes memory
    layout only: DpDNet's logits equal the contiguous model's."""
    import torch

    from unipet.models import create

    torch.manual_seed(0)
    model = create("dpdnet", in_channels=2, num_classes=2, tasks=["lung_cancer", "lymphoma"], patch_size=(16, 32, 32),
                   base_width=4, min_feature=2).eval()
    x = torch.randn(2, 2, 16, 32, 32)
    task = torch.tensor([0, 1])
    with torch.no_grad():
        eager = model(x, task=task)
        model.to(memory_format=torch.channels_last_3d)
        fast = model(x.contiguous(memory_format=torch.channels_last_3d), task=task)
    torch.testing.assert_close(fast, eager, atol=1e-5, rtol=1e-4)
