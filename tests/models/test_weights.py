"""Loading the authors' DpDNet weights (release names, release task order) into unipet's DpDNet."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unipet.errors import ConfigError
from unipet.models import create
from unipet.models.blocks import ResBlock
from unipet.models.weights import DPDNET_RELEASE_TASKS, load_dpdnet_release

PATCH = (16, 32, 32)
RELEASE_KEYS = [key for key, _ in DPDNET_RELEASE_TASKS]  # lymp, mela, lung, brea: the release's order


def _model(**kw):
    return create("dpdnet", in_channels=2, num_classes=2, patch_size=PATCH, base_width=2, **kw).eval()


def release_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the names and shapes ``STUNet_prompt`` of the release builds (STU-Net widths 2x...)."""
    g = torch.Generator().manual_seed(seed)
    donor = _model()  # the shared backbone has the release's names already
    sd = {k: torch.randn(v.shape, generator=g) * 0.2 for k, v in donor.state_dict().items()
          if k.startswith(("conv_blocks_context.", "upsample_layers.", "conv_blocks_localization.", "seg_outputs."))}
    c, n, w0 = donor.widths[-1], 4, donor.widths[0]
    mid = (c + n) // 4

    def r(*shape):
        return torch.randn(shape, generator=g) * 0.3

    sd["intermedia_prompt"] = r(1, n, *donor.universal_prompt.prompt.shape[2:])
    for i, (cin, cout) in enumerate([(c + n, mid), (mid, mid), (mid, n)]):
        sd[f"fusion_layer.blocks.{i}.conv.weight"] = r(cout, cin, 3, 3, 3)
        sd[f"fusion_layer.blocks.{i}.conv.bias"] = r(cout)
        sd[f"fusion_layer.blocks.{i}.instnorm.weight"] = 1 + r(cout)
        sd[f"fusion_layer.blocks.{i}.instnorm.bias"] = r(cout)
    for t in range(n):
        sd[f"other_gating_list.{t}.weight"] = r(n - 1, n - 1, 1, 1, 1) * 5
        sd[f"other_gating_list.{t}.bias"] = r(n - 1)
    for key in RELEASE_KEYS:
        p = f"conv_blocks_localization_task_specific.{key}.0."
        sd.update({p + "conv1.weight": r(w0, 2 * w0, 3, 3, 3), p + "conv1.bias": r(w0), p + "norm1.weight": 1 + r(w0),
                   p + "norm1.bias": r(w0), p + "conv2.weight": r(w0, w0, 3, 3, 3), p + "conv2.bias": r(w0),
                   p + "norm2.weight": 1 + r(w0), p + "norm2.bias": r(w0), p + "conv3.weight": r(w0, 2 * w0, 1, 1, 1),
                   p + "conv3.bias": r(w0)})
        sd[f"seg_outputs_task_specific.{key}.weight"] = r(2, w0, 1, 1, 1)
        sd[f"seg_outputs_task_specific.{key}.bias"] = r(2)
    return sd


def release_forward(model, sd, x, key: str) -> torch.Tensor:
    """The release's ``STUNet_prompt.forward(x, prompt=[key])`` written from its code, on the release tensors
    (the backbone runs through ``model``'s modules, which hold the same tensors under the same names)."""
    r = RELEASE_KEYS.index(key)
    skips, x5 = model.encode(x)
    h = torch.cat([x5, sd["intermedia_prompt"].expand(x.shape[0], -1, -1, -1, -1)], dim=1)
    for i in range(3):
        p = f"fusion_layer.blocks.{i}."
        h = F.conv3d(h, sd[p + "conv.weight"], sd[p + "conv.bias"], padding=1)
        h = F.leaky_relu(F.instance_norm(h, weight=sd[p + "instnorm.weight"], bias=sd[p + "instnorm.bias"]), 0.01)
    task_prompt = h[:, r:r + 1]
    others = h[:, [j for j in range(4) if j != r]]
    gate = F.conv3d(others, sd[f"other_gating_list.{r}.weight"], sd[f"other_gating_list.{r}.bias"]).softmax(1)
    fused = (gate * others).sum(1, keepdim=True)
    feats = model.decode(torch.cat([x5, task_prompt, fused], dim=1), skips)
    last = model.up_and_concat(len(model.upsample_layers) - 1, feats[-1], skips)
    block = ResBlock(2 * model.widths[0], model.widths[0], projection=True).eval()
    prefix = f"conv_blocks_localization_task_specific.{key}.0."
    block.load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})
    return F.conv3d(block(last), sd[f"seg_outputs_task_specific.{key}.weight"],
                    sd[f"seg_outputs_task_specific.{key}.bias"])


@pytest.mark.parametrize("tasks", ["default", ["breast_cancer", "lung_cancer", "melanoma", "lymphoma"]])
def test_release_weights_compute_what_the_release_computes(tasks, tmp_path):
    sd = release_state_dict()
    model = _model(tasks=tasks)
    report = load_dpdnet_release(model, sd)
    assert not report.missing and len(report.loaded) == len(model.state_dict())
    x = torch.randn(2, 2, *PATCH, generator=torch.Generator().manual_seed(1))
    names = model.task_set.names
    with torch.no_grad():
        for key, name in DPDNET_RELEASE_TASKS:
            u = names.index(name)
            torch.testing.assert_close(model(x, task=u), release_forward(model, sd, x, key), rtol=1e-4, atol=1e-5)
        mixed = model(x, task=torch.tensor([names.index("melanoma"), names.index("breast_cancer")]))
        torch.testing.assert_close(mixed[1:], release_forward(model, sd, x[1:], "brea"), rtol=1e-4, atol=1e-5)
    # an nnU-Net checkpoint file (weights nested under network_weights) loads the same, without unpickling code
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": sd, "current_epoch": 999}, path)
    other = _model(tasks=tasks)
    load_dpdnet_release(other, path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k


def test_what_does_not_fit_is_refused():
    sd = release_state_dict()
    with pytest.raises(ConfigError, match="task_classifier=False"):
        load_dpdnet_release(_model(task_classifier=True), sd)
    with pytest.raises(ConfigError, match="pa_head='released'"):
        load_dpdnet_release(_model(pa_head="paper"), sd)
    with pytest.raises(ConfigError, match="4 tasks"):
        load_dpdnet_release(_model(tasks=["lymphoma", "melanoma", "lung_cancer"]), sd)
    with pytest.raises(ConfigError, match="no 'breast_cancer'"):
        load_dpdnet_release(_model(tasks=["lymphoma", "melanoma", "lung_cancer", "prostate"]), sd)
    with pytest.raises(ConfigError, match="not part of the DpDNet release"):  # the two-encoder pre-training variant
        load_dpdnet_release(_model(), {**sd, "conv_blocks_context_ct.0.0.conv1.weight": torch.zeros(2, 1, 3, 3, 3)})
    incomplete = {k: v for k, v in sd.items() if not k.startswith("seg_outputs_task_specific.brea")}
    with pytest.raises(ConfigError, match="missing 2"):
        load_dpdnet_release(_model(), incomplete)
    with pytest.raises(ConfigError, match="do not fit"):  # a model built for another patch: the prompt's size
        load_dpdnet_release(create("dpdnet", patch_size=(16, 32, 24), base_width=2), sd)
