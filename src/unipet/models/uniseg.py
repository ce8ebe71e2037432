"""UniSeg (Ye et al., MICCAI 2023) on an STU-Net backbone: a learnable universal prompt -> task prompts.

A learnable universal prompt ``[1, N, d, h, w]`` (``d, h, w`` = the bottleneck size, derived from the patch
size and the strides; for 112x160x128 and STU-Net strides that is ``7 x 5 x 4``) is concatenated with the
bottleneck features ``[B, C, d, h, w]`` and passed through FUSE, three 3x3x3 conv-InstanceNorm-LeakyReLU
layers ``(C+N) -> (C+N)/4 -> (C+N)/4 -> N``, giving one single-channel prompt per task. Each sample's own
prompt is concatenated to its bottleneck (``C + 1`` channels) before the decoder. STU-Net-S backbone: 15.12 M
parameters (2 input channels, 2 classes, 4 tasks).

Unlike the released UniSeg code, which applies the first sample's task to the whole batch, every sample here
uses its own task.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from unipet.models.blocks import bottleneck_size, conv_norm_act
from unipet.models.prompt_free import PromptedSTUNet
from unipet.models.registry import register
from unipet.models.stunet import resolve_backbone


class UniversalPrompt(nn.Module):
    """Universal prompt + FUSE: bottleneck ``[B, C, d, h, w]`` -> task prompts ``[B, N, d, h, w]``.

    Args:
        channels: C, bottleneck channels.
        num_tasks: N.
        size: ``(d, h, w)`` of the learnable prompt (the bottleneck size at the training patch). An input whose
            bottleneck has another size gets the prompt resized trilinearly.
    """

    def __init__(self, channels: int, num_tasks: int, size: Sequence[int]) -> None:
        super().__init__()
        self.prompt = nn.Parameter(torch.randn(1, num_tasks, *size))
        mid = (channels + num_tasks) // 4
        self.fuse = nn.Sequential(conv_norm_act(channels + num_tasks, mid), conv_norm_act(mid, mid),
                                  conv_norm_act(mid, num_tasks))

    def forward(self, bottleneck: torch.Tensor) -> torch.Tensor:
        prompt = self.prompt
        if prompt.shape[2:] != bottleneck.shape[2:]:
            prompt = F.interpolate(prompt, size=bottleneck.shape[2:], mode="trilinear", align_corners=False)
        prompt = prompt.expand(bottleneck.shape[0], -1, -1, -1, -1)
        return self.fuse(torch.cat((bottleneck, prompt), dim=1))


def select_task_prompt(prompts: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
    """Each sample's own prompt: ``prompts [B, N, d, h, w]``, ``task [B]`` -> ``[B, 1, d, h, w]``."""
    return prompts[torch.arange(prompts.shape[0], device=prompts.device), task].unsqueeze(1)


class UniSeg(PromptedSTUNet):
    """UniSeg on STU-Net: ``model(x [B, C_in, D, H, W], task LongTensor[B]) -> logits [B, K, D, H, W]``.

    Args:
        patch_size: training patch ``(D, H, W)``; sets the prompt size.
        num_tasks, task_classifier, and STU-Net arguments: see ``PromptedSTUNet``.
    """

    def __init__(self, in_channels: int, num_classes: int, strides, num_tasks: int, patch_size: Sequence[int],
                 task_classifier: bool = True, **stunet) -> None:
        super().__init__(in_channels, num_classes, strides, num_tasks, task_classifier, bottleneck_extra=1, **stunet)
        self.universal_prompt = UniversalPrompt(self.widths[-1], num_tasks, bottleneck_size(patch_size, self.strides))

    def forward(self, x: torch.Tensor, task=None, text=None, organs=None):
        self.check_inputs(x, task, text, organs)
        skips, bottleneck = self.encode(x)
        task = self.resolve_task(task, bottleneck)
        prompt = select_task_prompt(self.universal_prompt(bottleneck), task)
        return self.heads_output(self.decode(torch.cat((bottleneck, prompt), dim=1), skips))


@register("uniseg", prompts=("task",), family="uniseg",
          description="UniSeg: universal prompt + FUSE -> per-sample task prompt at the STU-Net bottleneck")
def build(in_channels: int, num_classes: int, tasks, patch_size, backbone: str = "s", base_width: int | None = None,
          depth=None, strides=None, spacing=None, min_feature: int = 4, task_classifier: bool = True) -> UniSeg:
    """UniSeg on STU-Net-``backbone`` (15.12 M parameters with STU-Net-S, 2 channels, 2 classes, 4 tasks)."""
    conf = resolve_backbone(patch_size, backbone, base_width, depth, strides, spacing, min_feature)
    return UniSeg(in_channels, num_classes, num_tasks=len(tasks), patch_size=patch_size,
                  task_classifier=task_classifier, **conf)
