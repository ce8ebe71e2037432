"""gCIS (Ouyang et al., Communications Engineering 2024): a text-prompted CT segmentation model whose bottleneck,
decoder levels and output convolution are *automatic pathway modules* — a router on the prompt's text embedding
picks one of M sub-pathways.

Architecture (``x [B, C, D, H, W]``, sizes divisible by 32; with the release layout at least one of them 64 or
more, since the bottleneck block normalises over the 1/32 grid):

- Encoder: MONAI's Swin transformer (``SwinTransformer``: 2x2x2 patch embedding to ``F = feature_size`` = 48
  channels, four stages of two Swin blocks with 3, 6, 12, 24 heads and window 7, a patch merging after each: five
  1/2 downsamplings, features ``F, 2F, 4F, 8F, 16F`` at 1/2 ... 1/32), its hidden states layer-normalised.
  Residual blocks (``unipet.models.blocks.ResBlock``) on the input (``C -> F``, full resolution) and on the first
  four hidden states give the skip features (Swin UNETR's ``encoder1..4``); these belong to the encoder.
- Routed modules (``layout="release"``, the default: the 7 positions the authors' release routes, ``ap_num = 6``
  paths each), each an ``unipet.models.routing.PathwayModule``: a router (``Linear(E, 256) -> ReLU ->
  Linear(256, M)`` on the prompt's text embedding) and ``M = 6`` sub-pathways of identical structure, of which
  only the chosen one runs (the batch is grouped by path). In forward order (``pathways``, ``module_labels``):

  1. bottleneck (Swin UNETR's ``encoder10`` position, the release's ``decoder10``): ``ResBlock(16F -> w_b)`` on
     the 1/32 feature;
  2. five decoder levels from 1/16 up to full resolution (``DecoderPath``): a 2x2x2 transposed convolution of the
     previous level to ``w_l`` channels, concatenation with the skip feature (``s_l`` channels) and
     ``ResBlock(w_l + s_l -> w_l)`` (the first level takes ``w_b`` channels);
  3. output: a 1x1x1 convolution ``w_0 -> K`` at full resolution.

  The deep-supervision heads of the coarser levels (1/2 ... 1/16, 1x1x1 ``w_l -> K``) are shared, not routed;
  every level's logits are returned in training with deep supervision (full resolution first), softmax over
  ``K`` classes.
- ``layout="levels5"`` (unipet's earlier layout, kept by name; recorded configs without a ``layout`` key build it,
  see ``unipet.models.registry.upgrade_kwargs``): no bottleneck module, the first decoder level takes the
  ``16F`` feature, and every level's head (full resolution included) is shared: 5 routed modules.
- Prompts: the task set's short texts ("lung cancer", "aorta"; ``text_field="description"``) through the frozen
  offline text encoder (``unipet.models.text``), computed once at construction and kept as the buffer
  ``text_embedding [T, E]`` so that checkpoints carry them. ``text=FloatTensor[T, E]`` overrides them.
- Routing: straight-through hard Gumbel-softmax with temperature ``tau`` in training, arg-max at inference; a
  frozen router (second training stage, few-shot adaptation) routes by arg-max in training too.

Pruning: built with ``route=[k_1..k_P]`` (one path per routed module, ``pathways`` order) and ``task=NAME`` the
model is the single-path model of one task (each module keeps only its sub-pathway ``k``, no routers, no text
embeddings); ``unipet.models.prune`` produces it from a trained full model with identical outputs for that task.

Parameter counts (``unipet.models.prune.parameter_report``, ``GCIS.paper_counts``; 1 input channel (CT), 2
classes, MiniLM 384-d text, ``decoder_widths = (24, 24, 48, 96, 192)``, ``bottleneck_width = 92``), against
60.50 M (full) and 26.75 M (one task pruned) in the published article (Communications Engineering, 2024; the
counts quoted here are that version's):

- release layout (default): **26.75 M** for one task's single-path model (26,754,912: Swin encoder 8.06 M,
  encoder with the skip blocks 18.71 M, one sub-pathway of every module 8.05 M — bottleneck 2.21 M, decoder
  4.23 / 1.17 / 0.29 / 0.07 / 0.07 M from 1/16 up, output convolution 50 — and the shared heads 728) and
  **67.70 M** for the full model (67,698,696; the seven routers 0.70 M). With the release's 512-d CLIP text
  (ViT-B-32) the routers grow by 0.23 M (67.93 M full; the pruned model has no router).
- ``levels5``: 25.59 M pruned (4.3 % under the article) and 60.48 M full.

What these numbers do and do not show:

- The article publishes neither its sub-pathway widths nor the width of its text embedding, and the release's
  widths are not published either. Swin UNETR-48's own blocks at the release's 7 positions would make 320 M
  (full) and 62 M (pruned), so the release's sub-pathways are narrower than Swin UNETR's. The widths above are
  **unipet's choice**: the decoder widths are the ones ``levels5`` used, and ``w_b = 92`` was fitted *so that*
  the pruned model equals the article's 26.75 M. That match is constructed, not evidence that the architecture
  is the paper's.
- With that pruned size, the full model is 67.70 M, 11.9 % over the article's 60.50 M. Matching both counts at
  once (full - pruned = 5 unused paths per module + 7 routers) would need one sub-pathway of every module to
  hold 6.6 M instead of 8.05 M and about 1.4 M more parameters shared by all tasks outside the routed modules;
  unipet knows of no such shared part in the release, so none is invented, and the full count is reported as
  it falls out. (``levels5`` matched the full count instead, by the
  same kind of fitting, with the pruned one 4.3 % short.)

Router gradient: only the chosen sub-pathway runs, so the straight-through Gumbel gradient keeps only that
path's term (``unipet.models.routing``); a test shows that routing still learns to put unrelated tasks on
different sub-pathways.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from unipet.errors import ConfigError, ImageGeometryError, MissingInputError
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
#: routed-module layouts: the release's 7 positions (default) and unipet's earlier 5 decoder levels
LAYOUTS = ("release", "levels5")
#: the layout of a recorded config without a ``layout`` key (checkpoints written before the option existed)
LEGACY_LAYOUT = "levels5"
#: the release layout's bottleneck sub-pathway width w_b (unipet's choice, fitted to the paper's pruned count)
BOTTLENECK_WIDTH = 92


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
        route: for a pruned model, the kept path of each routed module in ``pathways`` order; None = full model.
        task_index: for a pruned model, the index of its task in the task set (other tasks are refused).
        layout: ``"release"`` (7 routed modules: bottleneck, five decoder levels, output convolution) or
            ``"levels5"`` (the five decoder levels only, shared output heads).
        bottleneck_width: w_b, the output width of the release layout's bottleneck sub-pathways (unused by
            ``"levels5"``).
    """

    output_activation = "softmax"

    def __init__(self, in_channels: int, num_classes: int, num_tasks: int, text_embedding: torch.Tensor | None = None,
                 text_dim: int = MINILM_DIM, feature_size: int = 48, depths: Sequence[int] = (2, 2, 2, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7,
                 decoder_widths: Sequence[int] = (24, 24, 48, 96, 192), num_paths: int = 6, router_hidden: int = 256,
                 tau: float = 1.0, route: Sequence[int] | None = None, task_index: int | None = None,
                 layout: str = "release", bottleneck_width: int = BOTTLENECK_WIDTH) -> None:
        from monai.networks.nets.swin_unetr import SwinTransformer

        super().__init__()
        f = int(feature_size)
        widths = [int(w) for w in decoder_widths]
        if layout not in LAYOUTS:
            raise ConfigError(f"unknown gcis layout {layout!r}; use 'release' (7 routed modules) or 'levels5' "
                              "(the five decoder levels)")
        if len(widths) != LEVELS or min(widths) < 1:
            raise ConfigError(f"gcis needs {LEVELS} positive decoder widths (full resolution first), got {widths}")
        if int(bottleneck_width) < 1:
            raise ConfigError(f"bottleneck_width must be >= 1, got {bottleneck_width}")
        self.layout = layout
        positions = LEVELS + 2 if layout == "release" else LEVELS
        if len(depths) != 4 or len(num_heads) != 4:
            raise ConfigError("gcis's Swin encoder has four stages; give four depths and four head counts")
        if num_paths < 1:
            raise ConfigError(f"num_paths must be >= 1, got {num_paths}")
        self.pruned = route is not None
        if self.pruned:
            route = [int(k) for k in route]
            if len(route) != positions or any(not 0 <= k < num_paths for k in route):
                raise ConfigError(f"route must give one path in [0, {num_paths}) per routed module ({positions} in "
                                  f"the {layout} layout), got {route}")
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
        # ---- routed modules in forward order: [bottleneck], decoder levels (deepest first), [output convolution]
        dim = int(text_dim) if text_embedding is None else int(text_embedding.shape[1])
        count = 1 if self.pruned else num_paths
        modules: list[PathwayModule] = []

        def routed(make) -> PathwayModule:
            kept = route[len(modules)] if self.pruned else None
            return PathwayModule([make() for _ in range(count)], dim, router_hidden, tau, kept=kept)

        prev = 16 * f
        if layout == "release":
            wb = int(bottleneck_width)
            modules.append(routed(lambda: ResBlock(16 * f, wb)))
            prev = wb
        heads = []
        for level in range(LEVELS - 1, -1, -1):
            w = widths[level]
            modules.append(routed(lambda: DecoderPath(prev, skip_channels[level], w)))
            if level > 0 or layout == "levels5":
                heads.append(nn.Conv3d(w, num_classes, 1))  # shared head (deep supervision)
            prev = w
        if layout == "release":
            modules.append(routed(lambda: nn.Conv3d(widths[0], num_classes, 1)))
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
        if self.layout == "release" and all(int(v) == 32 for v in x.shape[2:]):
            raise ImageGeometryError(f"gcis's release layout cannot run on a {tuple(x.shape[2:])} input: its "
                                     "bottleneck block's instance normalisation needs more than one voxel at 1/32 "
                                     "(pad it to e.g. 64 x 32 x 32, or use the sliding-window predictor)")
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
        modules = list(self.pathways)
        output = None
        if self.layout == "release":
            h = modules[0](h, text=emb)  # routed bottleneck block at 1/32
            modules, output = modules[1:1 + LEVELS], modules[-1]
        wanted = LEVELS if (self.deep_supervision and self.training) else 1
        logits: list[torch.Tensor] = []
        for i, module in enumerate(modules):
            level = LEVELS - 1 - i
            h = module(h, skips[level], text=emb)
            if level < wanted:
                logits.insert(0, output(h, text=emb) if output is not None and level == 0 else self.heads[i](h))
        return logits if wanted > 1 else logits[0]

    # ------------------------------------------------------------------ routing
    @property
    def module_labels(self) -> list[str]:
        """What each routed module is, in ``pathways`` (and route-table column) order."""
        levels = [f"decoder 1/{2 ** level}" for level in range(LEVELS - 1, -1, -1)]
        return ["bottleneck 1/32", *levels, "output 1/1"] if self.layout == "release" else levels

    def routes(self, text=None) -> torch.Tensor:
        """Arg-max path of every task at every routed module: ``LongTensor[T, P]``, P = 7 (release layout:
        bottleneck, decoder levels deepest first, output) or 5 (``levels5``); see ``module_labels``."""
        from unipet.models.routing import route_table

        return route_table(list(self.pathways), self.task_text(text))

    def pruned_parameters(self) -> int:
        """Parameters of one task's single-path model, counted without building it: every parameter outside the
        pathway modules plus one sub-pathway of each (the sub-pathways of a module are identical; no routers)."""
        routed = sum(p.numel() for p in self.pathways.parameters())
        kept = sum(p.numel() for m in self.pathways for p in m.paths[0].parameters())
        return sum(p.numel() for p in self.parameters()) - routed + kept

    def paper_counts(self) -> dict:
        """This model's parameters beside the gCIS article's (full model, one task's single-path model).

        Returns ``{"source", "full", "pruned", "paper_full", "paper_pruned", "full_diff_pct",
        "pruned_diff_pct", "settings"}`` (counts in parameters; ``full`` None for a pruned model).
        """
        full = None if self.pruned else sum(p.numel() for p in self.parameters())
        pruned = self.pruned_parameters() if not self.pruned else sum(p.numel() for p in self.parameters())
        paper_full, paper_pruned = PAPER_PARAMS["full"] * 1e6, PAPER_PARAMS["pruned"] * 1e6
        return {"source": "gCIS (Ouyang et al., Communications Engineering 2024)", "full": full, "pruned": pruned,
                "paper_full": paper_full, "paper_pruned": paper_pruned,
                "full_diff_pct": None if full is None else round(100 * (full / paper_full - 1), 2),
                "pruned_diff_pct": round(100 * (pruned / paper_pruned - 1), 2),
                "settings": "paper: 1 input channel (CT), 2 classes; unipet's widths fitted with 384-d MiniLM text"}

    # ------------------------------------------------------------------ trainable scopes
    def trainable_scopes(self) -> tuple[str, ...]:
        """``all``; ``encoder`` (Swin + skip blocks); ``decoder`` (everything else: the routed modules — the release
        layout's bottleneck and output convolution included — and the shared heads; the few-shot scope);
        ``paths`` (every sub-pathway: the second stage, routes fixed); and ``path:L:K`` (sub-pathway K of routed
        module L in ``pathways`` order, see ``module_labels``: one second-stage step). The routers train only
        under ``all`` and ``decoder``; a frozen router routes by arg-max."""
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
                if len(parts) != 3 or not (0 <= level < len(self.pathways) and 0 <= k < self.pathways[level].num_paths):
                    raise ValueError
            except (ValueError, IndexError):
                raise ConfigError(f"scope {scope!r} names no sub-pathway; use path:MODULE:PATH with MODULE in "
                                  f"[0, {len(self.pathways)}) ({', '.join(self.module_labels)}) and PATH in "
                                  f"[0, {self.num_paths})") from None
            prefix = f"pathways.{level}.paths.{k}."
            return {n for n in names if n.startswith(prefix)}
        return super().scope_parameters(scope)


def check_patch(patch_size: Sequence[int], layout: str = "release") -> None:
    """Raise ConfigError unless every patch size is a positive multiple of 32 (five halvings) and, for the release
    layout, the patch's 1/32 grid holds more than one voxel: the bottleneck block's instance normalisation
    (as in Swin UNETR's ``encoder10``) cannot run on a single voxel (e.g. use 64 x 32 x 32, not 32^3)."""
    patch = as_tuple3(patch_size)
    if any(p <= 0 or p % 32 for p in patch):
        valid = " ".join(str(max(32, -(-p // 32) * 32)) for p in patch)
        raise ConfigError(f"gcis needs a patch whose sizes are multiples of 32, got {patch}; use e.g. --patch {valid}")
    if layout == "release" and all(p == 32 for p in patch):
        raise ConfigError(f"gcis's release layout normalises its bottleneck block over the 1/32 grid, which a {patch} "
                          "patch reduces to one voxel; use e.g. --patch 64 32 32 (or layout='levels5')")


@register("gcis", prompts=("task", "text"), family="gcis", legacy_kwargs={"layout": LEGACY_LAYOUT},
          description="gCIS: Swin encoder, text-routed automatic pathway modules (bottleneck, decoder, output; M "
                      "sub-pathways, one runs)")
def build(in_channels: int, num_classes: int, tasks, patch_size, feature_size: int = 48,
          depths: Sequence[int] = (2, 2, 2, 2), num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7,
          decoder_widths: Sequence[int] = (24, 24, 48, 96, 192), num_paths: int = 6, router_hidden: int = 256,
          tau: float = 1.0, text_encoder: str | None = "minilm", text_field: str = "description",
          text_dim: int = MINILM_DIM, route: Sequence[int] | None = None, task: str | None = None,
          layout: str = "release", bottleneck_width: int = BOTTLENECK_WIDTH) -> GCIS:
    """gCIS (see the module docstring); ``route`` + ``task`` build the pruned single-path model of one task.

    ``text_encoder``: ``"minilm"``, ``"hash"`` or None (zero placeholder of ``text_dim``, filled by loading a
    checkpoint's state dict). ``text_field``: ``"description"`` (short text, gCIS-style) or ``"prompt"``.
    ``layout``: ``"release"`` (default, 7 routed modules) or ``"levels5"``; a recorded config without the key is
    ``"levels5"`` (``legacy_kwargs``: checkpoints written before the option keep loading), and new configs
    record it.
    """
    check_patch(patch_size, layout)
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
                route=route, task_index=task_index, layout=layout, bottleneck_width=bottleneck_width)

