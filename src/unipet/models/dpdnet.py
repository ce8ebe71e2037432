"""DpDNet (Liang et al., MICCAI 2025): dual prompts and prompt-aware heads for universal PET/CT lesion segmentation.

On an STU-Net backbone (STU-Net-S in the paper):

1. **Prompts.** A learnable universal prompt ``[1, N, d, h, w]`` (``d, h, w`` = the bottleneck size, derived
   from the patch and strides: ``7 x 5 x 4`` for 112x160x128) is concatenated to the bottleneck ``[B, C, ...]``
   and fused by FUSE, three 3x3x3 conv-IN-LeakyReLU layers ``(C+N) -> (C+N)/4 -> (C+N)/4 -> N``, into N
   single-channel cancer-specific prompts (``uniseg.UniversalPrompt``).
2. **Specific prompt**: the sample's own prompt. **Common prompt**: a gated fusion of the other N-1 prompts:
   a 1x1x1 gating conv ``(N-1) -> (N-1)`` selected by the sample's task, softmax over the N-1 channels, and
   the weighted sum. The decoder starts from ``[bottleneck, specific, common]`` (``C + 2`` channels).
3. **Prompt-aware (PA) heads**: the last decoder stage (full resolution) is replaced by one head per cancer
   type; each head runs only on the samples of its task. Two head variants:

   - ``pa_head="released"`` (**default**; source: the released code, ``STUNet_prompt`` in the authors'
     ``STUNetTrainer.py``): per task STU-Net's own last decoder stage (a residual block with a projection
     shortcut; for deeper backbones the release appends multi-branch blocks, unipet plain residual blocks) + a
     1x1x1 classifier. This is the model whose size the paper reports in Table 1: 15.19 M parameters
     (15,188,885 without unipet's optional task classifier) and 137.8 G MACs counted by PyTorch's
     FlopCounterMode (convolutions only) vs. 138.79 G published, with STU-Net-S, 2 in-ch, 2 classes, 4 tasks,
     112x160x128. Authors' weights load into it with ``unipet.models.weights.load_dpdnet_release``.
   - ``pa_head="paper"`` (option; source: the paper's text and Fig. 1, which the release never instantiates):
     parallel 1x1x1 / 3x3x3 / 5x5x5 conv-IN-LeakyReLU branches on the concatenated ``[upsampled, skip]``
     features, a 1x1x1 fusion, squeeze-and-excitation channel attention, a residual 1x1x1 projection of the
     input, then a 1x1x1 classifier. 15.42 M parameters and 271.7 G MACs: the 5x5x5 branch at full resolution
     doubles the network's compute, so it cannot be the network measured in Table 1.

The task is an input (``task_classifier=False`` by default, as in the paper). ``task_classifier=True`` adds
unipet's prompt-free classifier (``unipet.models.prompt_free``; train it with the ``dpdnet-prompt-free``
recipe, whose cross-entropy term the paper does not have).

Deep supervision (a recipe choice; off in the paper's and the release's recipe) uses the shared heads of the
coarser decoder stages. Ablation switches of
the paper's Table 2: ``specific_prompt``, ``common_prompt``, ``pa_heads`` (with both prompts off no prompt is
built; with PA heads off the shared STU-Net last stage and head are used).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from monai.networks.blocks import ChannelSELayer
from torch import nn

from unipet.errors import ConfigError
from unipet.models.blocks import LEAKY_SLOPE, bottleneck_size, conv_norm_act, res_stage, run_grouped
from unipet.models.prompt_free import PromptedSTUNet
from unipet.models.registry import register
from unipet.models.stunet import resolve_backbone
from unipet.models.uniseg import UniversalPrompt, select_task_prompt


class CommonPrompt(nn.Module):
    """Gated fusion of the other tasks' prompts: ``prompts [B, N, d, h, w]``, ``task [B]`` -> ``[B, 1, d, h, w]``."""

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        if num_tasks < 2:
            raise ConfigError("the common prompt fuses the other tasks' prompts and needs at least 2 tasks; "
                              "use common_prompt=False for a single task")
        self.gates = nn.ModuleList([nn.Conv3d(num_tasks - 1, num_tasks - 1, 1) for _ in range(num_tasks)])
        # others[t] = the task indices other than t, in order
        others = torch.tensor([[j for j in range(num_tasks) if j != t] for t in range(num_tasks)], dtype=torch.long)
        self.register_buffer("others", others, persistent=False)

    def forward(self, prompts: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        index = self.others[task]  # [B, N-1]
        other = prompts.gather(1, index[:, :, None, None, None].expand(-1, -1, *prompts.shape[2:]))
        weights = run_grouped(task, other, self.gates).softmax(dim=1)
        return (weights * other).sum(dim=1, keepdim=True)

    @staticmethod
    def grown_gates(gates: dict[int, tuple[torch.Tensor, torch.Tensor]], donors: list[int | None]
                    ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """The gates of N old tasks (``{t: (weight [N-1, N-1, 1, 1, 1], bias [N-1])}``) grown to N + k tasks.

        A new task starts as an exact copy of its donor (``donors[j]`` for new task N + j; its specific prompt
        is the donor's, see ``unipet.models.task_growth``), so the softmax gate can be grown exactly: in an old
        task's gate the donor's share is split in half between the donor and its copy (the same logits less
        log 2; their prompts are equal, so the fused prompt is unchanged); the new task's own gate repeats the
        donor's gate over the old tasks; an entry that must not count (the donor inside its own copy's gate, a
        task without a donor) gets zero weights and a logit of -30 (weight < 1e-13). Input columns of new
        prompts are zero. Old tasks' outputs therefore stay the same, and a new task answers as its donor until
        training moves it apart (unipet's choice).
        """
        n_old, n_new = len(gates), len(gates) + len(donors)
        off = -30.0

        def others(t: int, n: int) -> list[int]:
            return [j for j in range(n) if j != t]

        def build(t: int, source: int | None) -> tuple[torch.Tensor, torch.Tensor]:
            """Gate of task ``t`` (of n_new) from the old gate of task ``source`` (the task ``t`` copies)."""
            w_old, b_old = gates[0 if source is None else source]
            entries = others(t, n_new)
            w = w_old.new_zeros((n_new - 1, n_new - 1, *w_old.shape[2:]))
            b = b_old.new_full((n_new - 1,), off)
            if source is None:
                return w, b
            old_pos = {j: i for i, j in enumerate(others(source, n_old))}
            # the old task whose prompt each entry carries (a new task: its donor's); counted where shared
            slot = [j if j < n_old else donors[j - n_old] for j in entries]
            active = [sj is not None and sj in old_pos for sj in slot]
            shares = {sj: sum(1 for sk, a in zip(slot, active) if a and sk == sj) for sj in set(slot)}
            for r, (sj, a) in enumerate(zip(slot, active)):
                if not a:
                    continue
                for c, (k, sk, ak) in enumerate(zip(entries, slot, active)):
                    if ak and k < n_old:  # only an old task's own prompt is read; a copy's column stays zero
                        w[r, c] = w_old[old_pos[sj], old_pos[sk]]
                b[r] = b_old[old_pos[sj]] - math.log(shares[sj])
            return w, b

        out = {t: build(t, t) for t in range(n_old)}
        for j, donor in enumerate(donors):
            out[n_old + j] = build(n_old + j, donor)
        return out


class PromptAwareHead(nn.Module):
    """The paper's PA head: ``[B, in, D, H, W] -> logits [B, K, D, H, W]`` (see module docstring)."""

    def __init__(self, in_channels: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList([conv_norm_act(in_channels, width, k) for k in (1, 3, 5)])
        self.fuse = conv_norm_act(3 * width, width, 1)
        self.attention = ChannelSELayer(spatial_dims=3, in_channels=width, r=2)
        self.shortcut = nn.Conv3d(in_channels, width, 1)
        self.act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
        self.classifier = nn.Conv3d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attention(self.fuse(torch.cat([b(x) for b in self.branches], dim=1)))
        return self.classifier(self.act(y + self.shortcut(x)))


class DpDNet(PromptedSTUNet):
    """DpDNet: ``model(x [B, C_in, D, H, W], task LongTensor[B]) -> logits [B, K, D, H, W]``.

    Args:
        patch_size: training patch ``(D, H, W)``; sets the prompt size.
        specific_prompt, common_prompt, pa_heads: Table 2 ablation switches.
        pa_head: ``"released"`` (default, the reported model) or ``"paper"`` (see module docstring).
        task_classifier: add unipet's prompt-free task classifier (default False: the task is an input).
        num_tasks and STU-Net arguments: see ``PromptedSTUNet``.
    """

    def __init__(self, in_channels: int, num_classes: int, strides, num_tasks: int, patch_size: Sequence[int],
                 specific_prompt: bool = True, common_prompt: bool = True, pa_heads: bool = True,
                 pa_head: str = "released", task_classifier: bool = False, **stunet) -> None:
        if pa_head not in ("paper", "released"):
            raise ConfigError(f"unknown pa_head {pa_head!r}; use 'paper' or 'released'")
        extra = int(specific_prompt) + int(common_prompt)
        super().__init__(in_channels, num_classes, strides, num_tasks, task_classifier, bottleneck_extra=extra,
                         **stunet)
        self.specific_prompt, self.use_pa_heads = specific_prompt, pa_heads
        self.universal_prompt = (UniversalPrompt(self.widths[-1], num_tasks, bottleneck_size(patch_size, self.strides))
                                 if extra else None)
        self.common_prompt = CommonPrompt(num_tasks) if common_prompt else None
        if pa_heads:
            w0 = self.widths[0]
            depth0 = len(self.conv_blocks_localization[-1])
            del self.conv_blocks_localization[-1], self.seg_outputs[-1]
            self.pa_heads = nn.ModuleList([
                PromptAwareHead(2 * w0, w0, num_classes) if pa_head == "paper"
                else nn.Sequential(res_stage(2 * w0, w0, depth0), nn.Conv3d(w0, num_classes, 1))
                for _ in range(num_tasks)])

    def forward(self, x: torch.Tensor, task=None, text=None, organs=None):
        self.check_inputs(x, task, text, organs)
        skips, bottleneck = self.encode(x)
        task = self.resolve_task(task, bottleneck)
        parts = [bottleneck]
        if self.universal_prompt is not None:
            prompts = self.universal_prompt(bottleneck)
            if self.specific_prompt:
                parts.append(select_task_prompt(prompts, task))
            if self.common_prompt is not None:
                parts.append(self.common_prompt(prompts, task))
        feats = self.decode(torch.cat(parts, dim=1), skips)
        if not self.use_pa_heads:
            return self.heads_output(feats)
        last = len(self.upsample_layers) - 1
        final = run_grouped(task, self.up_and_concat(last, feats[-1], skips), self.pa_heads)
        if not self.wants_all_outputs():
            return final
        return [final] + [head(f) for head, f in zip(reversed(self.seg_outputs), reversed(feats))]

    def trainable_scopes(self) -> tuple[str, ...]:
        return ("all", "new-head")

    def scope_parameters(self, scope: str) -> set[str]:
        """``"new-head"``: only the prompt-aware head of the *last* task (the type a grown model just added,
        ``unipet.models.task_growth``); the encoder, decoder, prompts, every other head and the task classifier stay
        frozen, so every mask of the other types — and ``task="auto"``'s choice among them — stays exactly as it
        was (unipet's choice: a new type learnt without touching the old ones). The classifier is left out on
        evidence: trained alongside the head on real sarcoma crops (with the frozen trunk), it learnt a prior, not
        a discrimination, and called every whole-body phantom a sarcoma (benchmarks/RESULTS.md, default v4).
        ``"all"``: every parameter."""
        if scope == "new-head":
            if not self.use_pa_heads:
                raise ConfigError("scope 'new-head' trains the last task's prompt-aware head; this DpDNet was built "
                                  "with pa_heads=False")
            last = f"pa_heads.{self.num_tasks - 1}."
            return {name for name, _ in self.named_parameters() if name.startswith(last)}
        return super().scope_parameters(scope)

    def grow_task_state(self, old_state: dict[str, torch.Tensor], n_old: int, donors: list[int | None]
                        ) -> dict[str, torch.Tensor]:
        """The tensors ``unipet.models.task_growth.grow_tasks`` does not grow by its generic rules:

        - the common-prompt gates, grown exactly (``CommonPrompt.grown_gates``);
        - the prompt-free task classifier: a new type's row starts *off* (zero weights, a logit 30 below the
          lowest old one), so ``task="auto"`` keeps choosing among the old types exactly as before until the
          classifier is trained on the new one (unipet's choice: a donor's copy would tie with the donor).
        """
        out = {}
        if "task_classifier.fc.weight" in old_state:
            w, b = old_state["task_classifier.fc.weight"], old_state["task_classifier.fc.bias"]
            k = len(donors)
            out["task_classifier.fc.weight"] = torch.cat([w, w.new_zeros((k, w.shape[1]))])
            out["task_classifier.fc.bias"] = torch.cat([b, b.new_full((k,), float(b.min()) - 30.0)])
        if self.common_prompt is None:
            return out
        gates = {t: (old_state[f"common_prompt.gates.{t}.weight"], old_state[f"common_prompt.gates.{t}.bias"])
                 for t in range(n_old)}
        for t, (w, b) in CommonPrompt.grown_gates(gates, donors).items():
            out[f"common_prompt.gates.{t}.weight"], out[f"common_prompt.gates.{t}.bias"] = w, b
        return out

    def output_layers(self) -> list[nn.Conv3d]:
        """The shared deep-supervision classifiers and each prompt-aware head's classifier."""
        heads = [h.classifier if isinstance(h, PromptAwareHead) else h[-1] for h in getattr(self, "pa_heads", [])]
        return super().output_layers() + heads



@register("dpdnet", prompts=("task",), family="dpdnet",
          description="DpDNet: specific + common prompts and per-cancer prompt-aware heads on STU-Net")
def build(in_channels: int, num_classes: int, tasks, patch_size, backbone: str = "s", base_width: int | None = None,
          depth=None, strides=None, spacing=None, min_feature: int = 4, specific_prompt: bool = True,
          common_prompt: bool = True, pa_heads: bool = True, pa_head: str = "released",
          task_classifier: bool = False) -> DpDNet:
    """DpDNet on STU-Net-``backbone``; the defaults give the published 15.19 M / 138.79 G model (STU-Net-S).

    ``pa_head="paper"`` builds the head the paper's text describes; ``task_classifier=True`` adds unipet's
    prompt-free classifier. Checkpoints record these kwargs explicitly (``model.config``).
    """
    conf = resolve_backbone(patch_size, backbone, base_width, depth, strides, spacing, min_feature)
    return DpDNet(in_channels, num_classes, num_tasks=len(tasks), patch_size=patch_size,
                  specific_prompt=specific_prompt, common_prompt=common_prompt, pa_heads=pa_heads, pa_head=pa_head,
                  task_classifier=task_classifier, **conf)
