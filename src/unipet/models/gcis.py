"""gCIS (Ouyang et al., Communications Engineering 2024): a text-prompted CT segmentation model whose decoder
levels are *automatic pathway modules* — a router on the prompt's text embedding picks one of M sub-pathways.

Architecture (``x [B, C, D, H, W]``, sizes divisible by 32):

- Encoder: MONAI's Swin transformer (``SwinTransformer``: 2x2x2 patch embedding to ``F = feature_size`` = 48
  channels, four stages of two Swin blocks with 3, 6, 12, 24 heads and window 7, a patch merging after each: five
  1/2 downsamplings, features ``F, 2F, 4F, 8F, 16F`` at 1/2 ... 1/32), its hidden states layer-normalised.
  Residual blocks (``unipet.models.blocks.ResBlock``) on the input (``C -> F``, full resolution) and on the first
  four hidden states give the skip features (Swin UNETR's ``encoder1..4``); these belong to the encoder.
- Decoder: five levels from 1/16 up to full resolution, each an ``unipet.models.routing.PathwayModule``: a router
  (``Linear(E, 256) -> ReLU -> Linear(256, M)`` on the prompt's text embedding) and ``M = 6`` sub-pathways of
  identical structure (``DecoderPath``): a 2x2x2 transposed convolution of the previous level to ``w_l`` channels,
  concatenation with the skip feature (``s_l`` channels) and a residual block ``ResBlock(w_l + s_l -> w_l)``. Only
  the chosen sub-pathway runs (the batch is grouped by path). A shared 1x1x1 head per level gives logits (softmax,
  ``K`` classes; every level's head in training with deep supervision, full resolution first).
- Prompts: the task set's short texts ("lung cancer", "aorta"; ``text_field="description"``) through the frozen
  offline text encoder (``unipet.models.text``), computed once at construction and kept as the buffer
  ``text_embedding [T, E]`` so that checkpoints carry them. ``text=FloatTensor[T, E]`` overrides them.
- Routing: straight-through hard Gumbel-softmax with temperature ``tau`` in training, arg-max at inference; a
  frozen router (second training stage, few-shot adaptation) routes by arg-max in training too.

Pruning: built with ``route=[k_1..k_5]`` and ``task=NAME`` the model is the single-path model of one task (each
module keeps only sub-pathway ``k_l``, no routers, no text embeddings); ``unipet.models.prune`` produces it from
a trained full model with identical outputs for that task.

Parameter counts (``unipet.models.prune.parameter_report``; 1 input channel (CT), 2 classes, MiniLM 384-d text,
``decoder_widths = (24, 24, 48, 96, 192)``): 60.48 M for the full model and 25.59 M for one task's single-path
model (Swin encoder 8.06 M, encoder with the skip blocks 18.71 M, one sub-pathway of every level 6.88 M, the
five routers 0.50 M, heads 778), against 60.50 M and 26.75 M in the published article (Communications
Engineering, 2024; the counts quoted here are that version's). What these numbers do and do not show:

- The article publishes neither its decoder widths nor the width of its text embedding. The widths above are
  unipet's choice, picked *so that* with MiniLM's 384-d text the full count equals 60.50 M: that match is
  constructed, not evidence that the architecture is the paper's. With the release's 512-d CLIP text
  (ViT-B-32) the five routers grow by 0.16 M (60.64 M).
- The authors' release routes **7** positions with ``ap_num = 6`` paths each: the Swin UNETR bottleneck block
  (``decoder10``), the five decoder blocks and the output convolution. unipet routes its 5 decoder levels and
  shares the output heads. Swin UNETR-48's own blocks at the release's 7 positions would make 320 M (full) and
  62 M (pruned), so the release's sub-pathways are narrower than Swin UNETR's and their widths are not
  published; the 7-position layout is therefore not reproduced, and the pruned model stays 4.3 % under the
  published 26.75 M (57.7 % of the parameters removed by pruning vs. 55.8 %).

Router gradient: only the chosen sub-pathway runs, so the straight-through Gumbel gradient keeps only that
path's term (``unipet.models.routing``); a test shows that routing still learns to put unrelated tasks on
different sub-pathways.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from unipet.errors import ConfigError, MissingInputError
from unipet.models.base import UnipetModel, as_tuple3, task_tensor
from unipet.models.blocks import ResBlock, check_divisible
from unipet.models.registry import register
from unipet.models.routing import PathwayModule
from unipet.models.text import MINILM_DIM, encode_texts, register_text_embedding, text_or_stored

#: the paper's parameter counts: full model and one task's pruned single-path model (millions)
PAPER_PARAMS = {"full": 60.50, "pruned": 26.75}
#: five 1/2 downsamplings (patch embedding + four patch mergings)
STRIDES = ((2, 2, 2),) * 5
LEVELS = 5


class DecoderPath(nn.Module):
    """One sub-pathway of a decoder level: ``(h [B, c_in, d, h, w], skip [B, s, 2d, 2h, 2w]) -> [B, w, 2d, 2h, 2w]``:
    2x2x2 transposed convolution ``c_in -> w``, concatenation with ``skip``, ``ResBlock(w + s -> w)``."""

    def __init__(self, in_channels: int, skip_channels: int, width: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose3d(in_channels, width, kernel_size=2, stride=2)
        self.block = ResBlock(width + skip_channels, width)

    def forward(self, h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat((self.up(h), skip), dim=1))


class GCIS(UnipetModel):
    """gCIS: ``model(x [B, C, D, H, W], task LongTensor[B]) -> logits [B, K, D, H, W]`` (see the module docstring).

    Args:
        in_channels, num_classes: input channels and output classes (softmax).
        num_tasks: T, the number of prompts (tasks).
        text_embedding: ``[T, E]`` prompt embeddings, or None for a zero placeholder that a checkpoint's state dict
            fills (``text_dim`` gives E then). Unused by a pruned model.
        feature_size: F, the Swin embedding width (48).
        depths, num_heads, window_size: Swin stages (2, 2, 2, 2), heads (3, 6, 12, 24), window (7).
        decoder_widths: ``w_l`` of the five decoder levels, full resolution first.
        num_paths: M, sub-pathways per module (6).
        router_hidden: hidden width of each router.
        tau: Gumbel-softmax temperature in training.
        route: for a pruned model, the kept path of each module (deepest level first); None = full model.
        task_index: for a pruned model, the index of its task in the task set (other tasks are refused).
    """

    output_activation = "softmax"

    def __init__(self, in_channels: int, num_classes: int, num_tasks: int, text_embedding: torch.Tensor | None = None,
                 text_dim: int = MINILM_DIM, feature_size: int = 48, depths: Sequence[int] = (2, 2, 2, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7,
                 decoder_widths: Sequence[int] = (24, 24, 48, 96, 192), num_paths: int = 6, router_hidden: int = 256,
                 tau: float = 1.0, route: Sequence[int] | None = None, task_index: int | None = None) -> None:
        from monai.networks.nets.swin_unetr import SwinTransformer

        super().__init__()
        f = int(feature_size)
        widths = [int(w) for w in decoder_widths]
        if len(widths) != LEVELS or min(widths) < 1:
            raise ConfigError(f"gcis needs {LEVELS} positive decoder widths (full resolution first), got {widths}")
        if len(depths) != 4 or len(num_heads) != 4:
            raise ConfigError("gcis's Swin encoder has four stages; give four depths and four head counts")
        if num_paths < 1:
            raise ConfigError(f"num_paths must be >= 1, got {num_paths}")
        self.pruned = route is not None
        if self.pruned:
            route = [int(k) for k in route]
            if len(route) != LEVELS or any(not 0 <= k < num_paths for k in route):
                raise ConfigError(f"route must give one path in [0, {num_paths}) per decoder level ({LEVELS}), got {route}")
            if task_index is None:
                raise ConfigError("a pruned gcis model needs the task it was pruned for (task_index)")
        self.requires = () if self.pruned else ("task",)
        self.accepts = ("task",) if self.pruned else ("task", "text")
        self.num_classes, self.num_tasks, self.num_paths = int(num_classes), int(num_tasks), int(num_paths)
        self.route = route
        self.task_index = None if task_index is None else int(task_index)
        self.widths = widths
        # ---- encoder: Swin transformer + residual skip blocks
        self.swin = SwinTransformer(in_chans=in_channels, embed_dim=f, window_size=as_tuple3(window_size),
                                    patch_size=(2, 2, 2), depths=tuple(depths), num_heads=tuple(num_heads),
                                    spatial_dims=3)
        skip_channels = [f, f, 2 * f, 4 * f, 8 * f]  # full, 1/2, 1/4, 1/8, 1/16
        self.stem = ResBlock(in_channels, f)
        self.skips = nn.ModuleList(ResBlock(c, c) for c in skip_channels[1:])
        # ---- decoder (deepest level first): shared upsampling, routed residual sub-pathways, heads
        dim = int(text_dim) if text_embedding is None else int(text_embedding.shape[1])
        prev = 16 * f
        modules, heads = [], []
        for level in range(LEVELS - 1, -1, -1):
            w = widths[level]
            count = 1 if self.pruned else num_paths
            paths = [DecoderPath(prev, skip_channels[level], w) for _ in range(count)]
            kept = route[LEVELS - 1 - level] if self.pruned else None
            modules.append(PathwayModule(paths, dim, router_hidden, tau, kept=kept))
            heads.append(nn.Conv3d(w, num_classes, 1))
            prev = w
        self.pathways, self.heads = nn.ModuleList(modules), nn.ModuleList(heads)
        self.text_dim = None if self.pruned else dim
        if not self.pruned:
            if text_embedding is not None and text_embedding.shape[0] != num_tasks:
                raise ConfigError(f"got {text_embedding.shape[0]} text embeddings for {num_tasks} tasks; give one per task")
            register_text_embedding(self, num_tasks, dim, text_embedding)

    # ------------------------------------------------------------------ prompts
    def task_text(self, text=None) -> torch.Tensor:
        """The prompt embeddings ``[T, E]`` (``text`` overrides the stored ones)."""
        if self.pruned:
            raise ConfigError("a pruned gcis model has no prompt embeddings; its route is fixed")
        return text_or_stored(self, text, any_rows=True)

    # ------------------------------------------------------------------ forward
    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Skip features ``[full, 1/2, 1/4, 1/8, 1/16]`` and the bottleneck ``[B, 16F, D/32, H/32, W/32]``."""
        hidden = self.swin(x, normalize=True)
        skips = [self.stem(x)] + [block(h) for block, h in zip(self.skips, hidden[:4])]
        return skips, hidden[4]

    def forward(self, x: torch.Tensor, task=None, text=None, organs=None):
        self.check_inputs(x, task, text, organs)
        check_divisible(x.shape[2:], STRIDES, "gcis")
        task_t = task_tensor(task, x.shape[0], x.device)
        emb = None
        if self.pruned:
            if task_t is not None and task_t.device.type != "meta" and bool((task_t != self.task_index).any()):
                raise ConfigError(f"this gcis model was pruned for task index {self.task_index} only; segment other "
                                  "tasks with the full model it was exported from")
        else:
            table = self.task_text(text)
            if task_t.device.type != "meta" and bool(((task_t < 0) | (task_t >= table.shape[0])).any()):
                raise MissingInputError(f"task indices must be in [0, {table.shape[0]}), got {task_t.tolist()}")
            emb = table[task_t]
        skips, h = self.encode(x)
        wanted = LEVELS if (self.deep_supervision and self.training) else 1
        logits: list[torch.Tensor] = []
        for i, (module, head) in enumerate(zip(self.pathways, self.heads)):
            level = LEVELS - 1 - i
            h = module(h, skips[level], text=emb)
            if level < wanted:
                logits.insert(0, head(h))
        return logits if wanted > 1 else logits[0]

    # ------------------------------------------------------------------ routing
    def routes(self, text=None) -> torch.Tensor:
        """Arg-max path of every task at every decoder level: ``LongTensor[T, 5]`` (deepest level first)."""
        from unipet.models.routing import route_table

        return route_table(list(self.pathways), self.task_text(text))

    # ------------------------------------------------------------------ trainable scopes
    def trainable_scopes(self) -> tuple[str, ...]:
        """``all``; ``encoder`` (Swin + skip blocks); ``decoder`` (everything else: upsampling, pathway modules,
        heads — the few-shot scope); ``paths`` (every sub-pathway: the second stage, routes fixed); and
        ``path:L:K`` (sub-pathway K of decoder level L, deepest level 0: one second-stage step). The routers
        train only under ``all`` and ``decoder``; a frozen router routes by arg-max."""
        per_path = [f"path:{lv}:{k}" for lv, m in enumerate(self.pathways) for k in range(m.num_paths)]
        return ("all", "encoder", "decoder", "paths", *per_path)

    def scope_parameters(self, scope: str) -> set[str]:
        names = [name for name, _ in self.named_parameters()]
        encoder = ("swin.", "stem.", "skips.")
        if scope == "encoder":
            return {n for n in names if n.startswith(encoder)}
        if scope == "decoder":
            return {n for n in names if not n.startswith(encoder)}
        if scope == "paths":
            return {n for n in names if n.startswith("pathways.") and ".paths." in n}
        if scope.startswith("path:"):
            parts = scope.split(":")
            try:
                level, k = int(parts[1]), int(parts[2])
                if len(parts) != 3 or not (0 <= level < LEVELS and 0 <= k < self.pathways[level].num_paths):
                    raise ValueError
            except (ValueError, IndexError):
                raise ConfigError(f"scope {scope!r} names no sub-pathway; use path:LEVEL:PATH with LEVEL in "
                                  f"[0, {LEVELS}) (deepest first) and PATH in [0, {self.num_paths})") from None
            prefix = f"pathways.{level}.paths.{k}."
            return {n for n in names if n.startswith(prefix)}
        return super().scope_parameters(scope)


def check_patch(patch_size: Sequence[int]) -> None:
    """Raise ConfigError unless every patch size is a positive multiple of 32 (five halvings)."""
    patch = as_tuple3(patch_size)
    if any(p <= 0 or p % 32 for p in patch):
        valid = " ".join(str(max(32, -(-p // 32) * 32)) for p in patch)
        raise ConfigError(f"gcis needs a patch whose sizes are multiples of 32, got {patch}; use e.g. --patch {valid}")


@register("gcis", prompts=("task", "text"), family="gcis",
          description="gCIS: Swin encoder, decoder of text-routed automatic pathway modules (M sub-pathways, one runs)")
def build(in_channels: int, num_classes: int, tasks, patch_size, feature_size: int = 48,
          depths: Sequence[int] = (2, 2, 2, 2), num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7,
          decoder_widths: Sequence[int] = (24, 24, 48, 96, 192), num_paths: int = 6, router_hidden: int = 256,
          tau: float = 1.0, text_encoder: str | None = "minilm", text_field: str = "description",
          text_dim: int = MINILM_DIM, route: Sequence[int] | None = None, task: str | None = None) -> GCIS:
    """gCIS (see the module docstring); ``route`` + ``task`` build the pruned single-path model of one task.

    ``text_encoder``: ``"minilm"``, ``"hash"`` or None (zero placeholder of ``text_dim``, filled by loading a
    checkpoint's state dict). ``text_field``: ``"description"`` (short text, gCIS-style) or ``"prompt"``.
    """
    check_patch(patch_size)
    if (route is None) != (task is None):
        raise ConfigError("a pruned gcis model needs both route and task; give both or neither")
    task_index = None if task is None else tasks.index(task)
    embedding = None
    if route is None and text_encoder is not None:
        if text_field not in ("description", "prompt"):
            raise ConfigError(f"unknown task text field {text_field!r}; use 'description' or 'prompt'")
        texts = tasks.descriptions() if text_field == "description" else tasks.prompts()
        embedding = encode_texts(texts, text_encoder, text_dim)
    return GCIS(in_channels, num_classes, num_tasks=len(tasks), text_embedding=embedding, text_dim=text_dim,
                feature_size=feature_size, depths=depths, num_heads=num_heads, window_size=window_size,
                decoder_widths=decoder_widths, num_paths=num_paths, router_hidden=router_hidden, tau=tau,
                route=route, task_index=task_index)

