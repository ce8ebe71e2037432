"""MAST-Pro (Meng et al., MICCAI 2025): D-MoE Swin UNETR with knowledge-driven text and anatomical prompts.

The paper has no public code; this is unipet's implementation of what it specifies.

- **Backbone**: MONAI's Swin UNETR (feature size 48, depths 2-2-2-2, heads 3-6-12-24, window 7; the module
  is ``net`` and its parameter names equal those of unipet's ``swinunetr``, so ``--init`` from a Swin UNETR or a
  MAST-Pro run copies the backbone by name). Its 1x1x1 output layer is replaced by the dynamic heads below.
- **D-MoE** (``unipet.models.moe.DynamicMoE``) in every Swin block of ``moe_stages``: ``G`` generic and ``S``
  per-task low-rank experts (rank ``expert_rank``) whose gated sum is added to the output of the block's MLP
  (a forward hook on ``block.mlp``, so the backbone's names stay untouched). A sample with a known task is
  routed by its task's router (top-``top_k_task`` of the generic + its own experts); a sample without a task
  ("mixed-tumour data": ``task=None`` for the batch, or the task index ``NO_TASK = -1`` for single samples of a
  batch) by the general router (top-``top_k_general`` of the generic experts). The paper trains the general
  router on such mixed-tumour data, and so do the ``mastpro`` recipes: their ``taskless="general"`` makes the
  sampler give every task-less training case (no tumour type in the cache: mixed-tumour data, lesion-free
  controls) ``NO_TASK``, and the task-category CE ignores those samples. On top of that, training sends a share
  ``general_route_prob`` of task-labelled samples down the general route too (unipet's choice, so the general
  router also learns where a cohort has no task-less cases; the paper gives no such schedule; 0 turns it off). The
  load-balancing loss of every layer, averaged and weighted by ``balance_weight``, is returned by
  ``auxiliary_losses()``.
- **Text prompts**: the knowledge sentence of every tumour type ("This is a [C] in the [O], appearing as a
  [S] mass with [E] borders on [M].", editable data in the task set: ``Task.prompt`` / ``Task.template``)
  encoded once by the frozen offline text encoder (``unipet.models.text``) into the buffer ``text_embedding
  [Q, E]`` that the checkpoint stores; ``Q = tasks x (num_classes - 1)`` class queries (``query_texts``).
  When the encoder is not installed the model is built with an empty placeholder that loading a checkpoint
  fills, so a trained model loads without it.
- **Anatomical prompts**: the organ label map (the Study's organ map: phantom, imported or predicted; values
  ``0 .. organ_classes - 1``) as per-organ area fractions on a 1/4 grid (``organ_fractions``), encoded by
  three strided conv-GELU layers to one prompt token per bottleneck cell. A sample whose organ patch has no
  labelled voxel (a study without organ map reaches the model as zeros) has its anatomical tokens masked:
  its prompts are then text-only. Calling the model with ``organs=None`` raises ``MissingInputError``. The paper
  uses a pre-trained anatomical encoder without saying how it was pre-trained; unipet pre-trains it as an organ-map
  autoencoder (``unipet mastpro pretrain-anatomy``, ``unipet.pretrain.organs``) and starts MAST-Pro from it with
  ``unipet train --model mastpro --init RUN`` (the encoder's tensors have the same names).
- **Prompt cross-attention** at the bottleneck (``PromptAttention``): the prompts ``[text; anatomy]`` are the
  queries over the image tokens (keys/values) and are refined by an MLP; the image tokens then read the
  refined prompts back, giving ``F_attn``, which is added to the image features before the Swin UNETR decoder.
  As in the paper, a sample's text prompt is **its own tumour type's** knowledge sentence(s) (the other types'
  tokens are masked out of its attention) with its own anatomy; a sample on the general route (no known task)
  reads every type's sentence, since nothing says which one is its own.
- **Mask proposal** (``MaskProposal``): ``[GAP(F_attn); text embedding of a class query] -> MLP ->`` the
  parameters ``theta`` of that query's dynamic 1x1x1 head ``8 -> 8 -> 8 -> 1`` (as the CLIP-driven model)
  and its class logit. Class logits give ``last_task_logits [B, T]`` (the tumour-category CE the trainer adds
  with ``task_loss_weight``); with ``task=None`` their argmax chooses the head. Output: **sigmoid** logits of
  the sample's task, ``[B, K-1, D, H, W]`` (Dice + BCE in training).
- **PEFT** (``trainable="peft"`` / ``unipet train --peft``): only the experts, routers and heads (mask
  proposal MLP, the 8-channel head reduction and, without text, the learned type queries) are trained.

Ablations: ``use_text=False`` replaces the knowledge sentences by learned per-query embeddings (the mask
proposal keeps working), ``use_anatomy=False`` drops the organ map (no ``organs`` input needed),
``use_moe=False`` removes the experts; without text and anatomy there is no prompt attention (``F_attn`` is
the bottleneck feature itself).

Defaults: the paper specifies the backbone (Swin UNETR-48) and the prompts but not the number, rank or top-k of
its experts, the prompt-attention width or the proposal MLP; those defaults (8 generic + 4 per task rank-16
experts, top-4) are unipet's choice, not the paper's size.

Size (2 inputs, 2 classes, MiniLM 384-d text, defaults; ``parameter_report``): with the 4 phantom types
73.87 M parameters (Swin UNETR 62.19 M, experts 1.11 M, routers 0.08 M, prompt attention 9.46 M, anatomical
encoder 0.41 M, text projection 0.30 M, heads 0.34 M); PEFT trains 1.52 M (2.06 %, -97.94 %). With the 10
shipped PET/CT types: 75.08 M, PEFT 2.73 M (-96.36 %). 331 G MACs at 96^3 (Swin UNETR: 319 G). The paper's
21.04 M trainable (-91.04 %, i.e. about 235 M in all) is not reproduced: it states neither the size nor the
number of its experts, and rank-16 low-rank experts are far smaller than full MLP copies.
"""
from __future__ import annotations

import functools
from typing import Sequence

import torch
from torch import nn

from unipet.errors import (
    ConfigError,
    ImageGeometryError,
    MissingInputError,
    UnknownTaskError,
)
from unipet.data.organs import ORGAN_CLASSES
from unipet.models.base import UnipetModel, as_tuple3, task_tensor
from unipet.models.blocks import check_patch_multiple, organ_fractions
from unipet.models.dodnet import (
    HEAD_WIDTH,
    dynamic_conv,
    dynamic_head_params,
    group_norm,
)
from unipet.models.moe import GENERAL, DynamicMoE, Routing
from unipet.models.registry import register
from unipet.models.text import MINILM_DIM, encode_texts, register_text_embedding, text_or_stored

#: the anatomical encoder works on organ fractions at 1/4 of the input grid; three stride-2 convs reach 1/32
ANATOMY_FACTOR = 4
PEFT_PREFIXES = ("moe.", "proposal.", "precls.", "type_queries")
#: task index of a sample without a known task (mixed-tumour data): routed by the general router
NO_TASK = GENERAL


class AnatomyEncoder(nn.Module):
    """Organ map -> anatomical prompt tokens, one per cell of the 1/32 bottleneck grid.

    ``organ_fractions`` at 1/4, then three ``Conv3d(3, stride 2) -> GELU`` layers (``widths``) to 1/32 and a
    linear map to ``dim``. No normalisation: the fractions are already in [0, 1] and their absolute values
    (how much of a cell is liver) are the information.

    ``forward(organs [B, D, H, W]) -> (tokens [B, D*H*W/32^3, dim], present BoolTensor[B])``; ``present`` is
    False for a sample whose organ patch has no labelled voxel.
    """

    def __init__(self, organ_classes: int, dim: int, widths: Sequence[int] = (32, 64, 128)) -> None:
        super().__init__()
        if len(widths) != 3:
            raise ConfigError(f"the anatomical encoder has three stride-2 layers (1/4 -> 1/32); give 3 widths, got {widths}")
        self.organ_classes = int(organ_classes)
        layers: list[nn.Module] = []
        cin = self.organ_classes
        for width in widths:
            layers += [nn.Conv3d(cin, int(width), 3, stride=2, padding=1), nn.GELU()]
            cin = int(width)
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(cin, dim)

    def forward(self, organs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fractions = organ_fractions(organs, self.organ_classes, ANATOMY_FACTOR)
        present = fractions[:, 1:].flatten(1).amax(1) > 0
        feat = self.convs(fractions.to(self.proj.weight.dtype))
        return self.proj(feat.flatten(2).transpose(1, 2)), present


class PromptAttention(nn.Module):
    """Prompt cross-attention at the bottleneck.

    1. prompts ``[B, P, C]`` attend to the image tokens (queries = prompts, keys/values = image), then an MLP;
    2. the image tokens attend to the refined prompts (plus a learned null token, so that a sample whose
       prompts are all masked still has a key), giving ``F_attn [B, C, d, h, w]``.

    ``forward(image [B, C, d, h, w], prompts [B, P, C], valid BoolTensor[B, P]) -> (image + F_attn, F_attn)``.
    """

    def __init__(self, dim: int, heads: int = 8, mlp_ratio: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"prompt attention width {dim} is not divisible by {heads} heads; change attention_heads")
        self.norm_prompt = nn.LayerNorm(dim)
        self.norm_image = nn.LayerNorm(dim)
        self.prompt_to_image = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))
        self.norm_keys = nn.LayerNorm(dim)
        self.norm_query = nn.LayerNorm(dim)
        self.image_to_prompt = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.null = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, image: torch.Tensor, prompts: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c = image.shape[:2]
        tokens = image.flatten(2).transpose(1, 2)  # [B, n, C]
        kv = self.norm_image(tokens)
        q = prompts + self.prompt_to_image(self.norm_prompt(prompts), kv, kv, need_weights=False)[0]
        q = q + self.mlp(self.norm_mlp(q))
        keys = torch.cat((self.null.expand(b, 1, c).to(q.dtype), self.norm_keys(q)), dim=1)
        ignore = torch.cat((valid.new_zeros(b, 1), ~valid), dim=1)
        f = self.image_to_prompt(self.norm_query(tokens), keys, keys, key_padding_mask=ignore, need_weights=False)[0]
        f_attn = f.transpose(1, 2).reshape(image.shape)
        return image + f_attn, f_attn


class MaskProposal(nn.Module):
    """``[GAP(F_attn) [B, C]; query embedding [Q, E]] -> MLP ->`` dynamic-head parameters and class logits.

    ``forward(pooled [B, C], queries [Q, E]) -> (params [B, Q, P], class_logits [B, Q])``.
    """

    def __init__(self, image_dim: int, text_dim: int, params_per_head: int, hidden: int = 256) -> None:
        super().__init__()
        self.params_per_head = int(params_per_head)
        self.mlp = nn.Sequential(nn.Linear(image_dim + text_dim, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, self.params_per_head + 1))

    def forward(self, pooled: torch.Tensor, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, q = pooled.shape[0], queries.shape[0]
        joint = torch.cat((pooled[:, None].expand(b, q, -1), queries[None].expand(b, q, -1).to(pooled.dtype)), dim=2)
        out = self.mlp(joint)
        return out[..., :-1], out[..., -1]


class MASTPro(UnipetModel):
    """MAST-Pro: ``model(x [B, C, D, H, W], task LongTensor[B], organs LongTensor[B, D, H, W])`` -> sigmoid logits
    ``[B, K-1, D, H, W]`` of each sample's task (see the module docstring; arguments as ``build``)."""

    output_activation = "sigmoid"
    takes_no_task = True

    def __init__(self, in_channels: int, num_classes: int, num_tasks: int, text_embedding: torch.Tensor | None = None,
                 text_dim: int = MINILM_DIM, feature_size: int = 48, depths: Sequence[int] = (2, 2, 2, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7, use_text: bool = True,
                 use_anatomy: bool = True, use_moe: bool = True, organ_classes: int = ORGAN_CLASSES,
                 anatomy_widths: Sequence[int] = (32, 64, 128), generic_experts: int = 8, task_experts: int = 4,
                 expert_rank: int = 16, top_k_general: int = 4, top_k_task: int = 4,
                 moe_stages: Sequence[int] = (0, 1, 2, 3), attention_heads: int = 8, proposal_hidden: int = 256,
                 balance_weight: float = 0.01, general_route_prob: float = 0.2) -> None:
        super().__init__()
        from monai.networks.nets import SwinUNETR

        if num_classes < 2:
            raise ConfigError(f"num_classes={num_classes}: give background + at least one foreground class (>= 2)")
        if not 0.0 <= general_route_prob <= 1.0:
            raise ConfigError(f"general_route_prob must be in [0, 1], got {general_route_prob}")
        if any(s not in range(len(depths)) for s in moe_stages):
            raise ConfigError(f"moe_stages {list(moe_stages)} must be Swin stages 0..{len(depths) - 1}")
        self.num_tasks, self.num_classes = int(num_tasks), int(num_classes)
        self.num_queries = self.num_tasks * (self.num_classes - 1)
        self.use_text, self.use_anatomy, self.use_moe = bool(use_text), bool(use_anatomy), bool(use_moe)
        self.balance_weight, self.general_route_prob = float(balance_weight), float(general_route_prob)
        self.requires = ("organs",) if self.use_anatomy else ()
        self.accepts = ("task", "text", "organs") if self.use_anatomy else ("task", "text")
        self.last_task_logits: torch.Tensor | None = None
        self._aux: dict[str, torch.Tensor] = {}
        self._routing: Routing | None = None

        self.net = SwinUNETR(in_channels, num_classes, feature_size=feature_size, depths=tuple(depths),
                             num_heads=tuple(num_heads), window_size=window_size, norm_name="instance")
        del self.net.out  # replaced by the dynamic heads
        bottleneck = 16 * feature_size
        self.moe = nn.ModuleList()
        self.moe_sites: list[tuple[int, int]] = []
        if self.use_moe:
            for stage in sorted({int(s) for s in moe_stages}):
                layer = getattr(self.net.swinViT, f"layers{stage + 1}")[0]
                for i, block in enumerate(layer.blocks):
                    layer_moe = DynamicMoE(feature_size * 2 ** stage, self.num_tasks, generic_experts, task_experts,
                                           expert_rank, top_k_general, top_k_task)
                    block.mlp.register_forward_hook(functools.partial(self._add_experts, len(self.moe)))
                    self.moe.append(layer_moe)
                    self.moe_sites.append((stage, i))

        self.text_dim = int(text_dim) if text_embedding is None else int(text_embedding.shape[1])
        if text_embedding is not None and text_embedding.shape[0] != self.num_queries:
            raise ConfigError(f"got {text_embedding.shape[0]} text embeddings for {self.num_queries} class queries "
                              f"({num_tasks} tasks x {num_classes - 1} foreground classes); give one per query")
        if self.use_text:
            register_text_embedding(self, self.num_queries, self.text_dim, text_embedding)
            self.text_proj = nn.Linear(self.text_dim, bottleneck)
        else:
            self.type_queries = nn.Parameter(torch.randn(self.num_queries, self.text_dim) * 0.02)
        if self.use_anatomy:
            self.anatomy = AnatomyEncoder(organ_classes, bottleneck, anatomy_widths)
        if self.use_text or self.use_anatomy:
            self.token_type = nn.Parameter(torch.zeros(2, bottleneck))  # text, anatomy
            self.attention = PromptAttention(bottleneck, attention_heads)
        self.head_channels = (HEAD_WIDTH, HEAD_WIDTH, HEAD_WIDTH, 1)
        self.proposal = MaskProposal(bottleneck, self.text_dim, dynamic_head_params(self.head_channels), proposal_hidden)
        self.precls = nn.Sequential(group_norm(feature_size), nn.ReLU(inplace=True), nn.Conv3d(feature_size, HEAD_WIDTH, 1))

    # ------------------------------------------------------------------ D-MoE hook
    def _add_experts(self, index: int, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
        """Forward hook on a Swin block's MLP: ``MLP(x) + D-MoE(x)`` for its input ``x [B, D, H, W, C]``."""
        if self._routing is None:
            raise ConfigError("MAST-Pro's Swin blocks were run outside MASTPro.forward; call the model itself")
        return output + self.moe[index](inputs[0], self._routing)

    # ------------------------------------------------------------------ training hooks of UnipetModel
    def auxiliary_losses(self) -> dict[str, torch.Tensor]:
        """``{"balance": balance_weight * mean load-balancing loss of the D-MoE layers}`` after a training forward."""
        return dict(self._aux)

    def trainable_scopes(self) -> tuple[str, ...]:
        return ("all", "peft")

    def scope_parameters(self, scope: str) -> set[str]:
        """``"peft"``: experts and routers (``moe.*``) and the heads (``proposal.*``, ``precls.*``, learned type
        queries); ``"all"``: every parameter."""
        if scope == "peft":
            return {name for name, _ in self.named_parameters() if name.startswith(PEFT_PREFIXES)}
        return super().scope_parameters(scope)

    # ------------------------------------------------------------------ forward
    def _queries(self, text) -> torch.Tensor:
        """Class-query embeddings ``[Q, E]``: the knowledge-sentence embeddings (or ``text``), or learned ones."""
        if not self.use_text:
            if text is not None:
                raise MissingInputError("this MAST-Pro was built with use_text=False and takes no text embeddings; "
                                        "drop text=... or build it with use_text=True")
            return self.type_queries
        return text_or_stored(self, text, unset_hint=" (or install the text encoder: pip install 'unipet[text]')")

    def _routes(self, task: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """Per-sample route: the task, ``GENERAL`` without one (``None`` or ``NO_TASK``), and in training
        ``GENERAL`` for a random share."""
        if task is None:
            return torch.full((batch,), GENERAL, dtype=torch.long, device=device)
        route = task.clone()
        route[route < 0] = GENERAL
        if self.training and self.general_route_prob > 0 and device.type != "meta":
            route[torch.rand(batch, device=device) < self.general_route_prob] = GENERAL
        return route

    def own_text_mask(self, route: torch.Tensor, queries: int) -> torch.Tensor:
        """``BoolTensor[B, Q]``: the class queries a sample's prompt attention reads: its own task's
        (``Q / num_tasks`` per task, task-major), or all of them on the general route."""
        owner = torch.arange(queries, device=route.device) // max(1, queries // self.num_tasks)
        return (owner[None] == route[:, None]) | (route[:, None] == GENERAL)

    def _bottleneck(self, x: torch.Tensor, route: torch.Tensor, organs, text):
        """Encoder + prompts: ``(hidden states, fused bottleneck [B, 16F, d, h, w], GAP(F_attn) [B, 16F], queries)``."""
        shape = tuple(int(s) for s in x.shape[2:])
        if any(s % 32 for s in shape):
            raise ImageGeometryError(f"MAST-Pro (Swin UNETR) needs input sizes that are multiples of 32, got {shape}; "
                                     "pad the volume or use the sliding-window predictor with the model's patch size")
        queries = self._queries(text)
        self._routing = Routing.of(route) if self.use_moe else None
        try:
            hidden = self.net.swinViT(x, self.net.normalize)
        finally:
            self._routing = None
        dec4 = self.net.encoder10(hidden[4])
        prompts, valid = [], []
        if self.use_text:
            tokens = self.text_proj(queries.to(dec4.dtype)) + self.token_type[0]
            prompts.append(tokens[None].expand(x.shape[0], -1, -1))
            valid.append(self.own_text_mask(route, tokens.shape[0]))
        if self.use_anatomy:
            if organs is None:
                organs = torch.zeros(x.shape[0], *shape, dtype=torch.long, device=x.device)
            elif tuple(organs.shape) != (x.shape[0], *shape):
                raise MissingInputError(f"organs must be [B, D, H, W] = {(x.shape[0], *shape)}, got "
                                        f"{tuple(organs.shape)}; give the organ map on the image's grid")
            tokens, present = self.anatomy(organs)
            prompts.append(tokens + self.token_type[1])
            valid.append(present[:, None].expand(-1, tokens.shape[1]))
        if prompts:
            dec4, f_attn = self.attention(dec4, torch.cat(prompts, 1), torch.cat(valid, 1))
        else:
            f_attn = dec4
        return hidden, dec4, f_attn.mean(dim=(2, 3, 4)), queries

    def _segment(self, x: torch.Tensor, task, text, organs, all_queries: bool):
        self.check_inputs(x, task, text, organs)
        t = task_tensor(task, x.shape[0], x.device)
        if t is not None and t.device.type != "meta" and t.numel() and (int(t.min()) < NO_TASK
                                                                         or int(t.max()) >= self.num_tasks):
            raise UnknownTaskError(f"task indices {t.tolist()} are outside 0..{self.num_tasks - 1}; give indices of the "
                                   f"model's task set (TaskSet.index(name)), or {NO_TASK} for a sample without one")
        hidden, dec4, pooled, queries = self._bottleneck(x, self._routes(t, x.shape[0], x.device), organs, text)
        params, class_logits = self.proposal(pooled, queries)
        b, per_task = x.shape[0], self.num_classes - 1
        self.last_task_logits = class_logits.reshape(b, self.num_tasks, per_task).logsumexp(-1)
        if t is None:
            t = self.last_task_logits.argmax(1)
        elif t.device.type != "meta" and bool((t < 0).any()):  # task-less samples: the classifier's choice
            t = torch.where(t < 0, self.last_task_logits.argmax(1), t)
        net = self.net
        enc0 = net.encoder1(x)
        enc1 = net.encoder2(hidden[0])
        enc2 = net.encoder3(hidden[1])
        enc3 = net.encoder4(hidden[2])
        dec3 = net.decoder5(dec4, hidden[3])
        out = net.decoder1(net.decoder2(net.decoder3(net.decoder4(dec3, enc3), enc2), enc1), enc0)
        if all_queries:
            chosen = torch.arange(self.num_queries, device=x.device).expand(b, -1)
        else:
            chosen = t[:, None] * per_task + torch.arange(per_task, device=x.device)
        head = params.gather(1, chosen[..., None].expand(-1, -1, params.shape[-1]))
        logits = dynamic_conv(self.precls(out), head, self.head_channels).flatten(1, 2)
        self._aux = {}
        if self.training and self.use_moe and self.balance_weight > 0:
            losses = [m.last_balance_loss for m in self.moe if m.last_balance_loss is not None]
            if losses:
                self._aux = {"balance": self.balance_weight * torch.stack(losses).mean()}
        return [logits] if (self.deep_supervision and self.training) else logits

    def forward(self, x: torch.Tensor, task=None, text=None, organs=None):
        return self._segment(x, task, text, organs, all_queries=False)

    def forward_all(self, x: torch.Tensor, task=None, text=None, organs=None):
        """Every class query: sigmoid logits ``[B, Q, D, H, W]``; ``task`` only chooses the experts' route
        (None = the general router)."""
        return self._segment(x, task, text, organs, all_queries=True)

    @torch.no_grad()
    def infer_task(self, x: torch.Tensor, organs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt-free tumour type of ``x [B, C, D, H, W]`` through the general router: ``(task [B], probability [B])``.

        Without ``organs`` the anatomical prompt is left out (as for an all-zero organ map).
        """
        route = torch.full((x.shape[0],), GENERAL, dtype=torch.long, device=x.device)
        _, _, pooled, queries = self._bottleneck(x, route, organs, None)
        logits = self.proposal(pooled, queries)[1].reshape(x.shape[0], self.num_tasks, -1).logsumexp(-1)
        prob = logits.softmax(dim=1)
        conf, idx = prob.max(dim=1)
        return idx, conf


# ---------------------------------------------------------------------------------------------- reports
# ---------------------------------------------------------------------------------------------- builder
@register("mastpro", prompts=("task", "text", "organs"), family="mastpro",
          description="MAST-Pro: Swin UNETR with D-MoE low-rank experts, text + anatomical prompts, dynamic heads (sigmoid)")
def build(in_channels: int, num_classes: int, tasks, patch_size, feature_size: int = 48,
          depths: Sequence[int] = (2, 2, 2, 2), num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7,
          text_encoder: str | None = "minilm", text_field: str = "prompt", text_dim: int = MINILM_DIM,
          use_text: bool = True, use_anatomy: bool = True, use_moe: bool = True,
          organ_classes: int = ORGAN_CLASSES, anatomy_widths: Sequence[int] = (32, 64, 128),
          generic_experts: int = 8, task_experts: int = 4, expert_rank: int = 16, top_k_general: int = 4,
          top_k_task: int = 4, moe_stages: Sequence[int] = (0, 1, 2, 3), attention_heads: int = 8,
          proposal_hidden: int = 256, balance_weight: float = 0.01, general_route_prob: float = 0.2) -> MASTPro:
    """MAST-Pro on Swin UNETR-``feature_size`` (the paper's backbone; expert and prompt sizes are unipet's choice,
    see the module docstring).

    The patch must be a multiple of 32 in every axis and larger than 32^3 (Swin UNETR). ``text_encoder``:
    ``"minilm"``, ``"hash"`` or None (zero placeholder of ``text_dim`` that a checkpoint fills); an encoder that
    is not installed also leaves the placeholder, so a trained model loads without it. Small settings for
    tests: ``feature_size=12, depths=(1, 1, 1, 1), window_size=4, attention_heads=4, anatomy_widths=(4, 8, 8)``.
    """
    from unipet.models.universal import query_texts

    patch = check_patch_multiple(as_tuple3(patch_size), 32, "MAST-Pro (Swin UNETR)")
    if patch == (32, 32, 32):
        raise ConfigError("MAST-Pro cannot train on a 32 x 32 x 32 patch: its 1/32 bottleneck would be one voxel; "
                          "use a larger patch, e.g. --patch 64 64 64")
    if feature_size % 12:
        raise ConfigError(f"MAST-Pro's Swin UNETR needs feature_size divisible by 12, got {feature_size}; use 12, 24, 36 or 48")
    embedding = None
    if use_text and text_encoder is not None:
        try:
            embedding = encode_texts(query_texts(tasks, num_classes, text_field), text_encoder, text_dim)
        except MissingInputError:
            embedding = None  # encoder not installed: placeholder, filled by a checkpoint (else forward says so)
    return MASTPro(in_channels, num_classes, num_tasks=len(tasks), text_embedding=embedding, text_dim=text_dim,
                   feature_size=feature_size, depths=depths, num_heads=num_heads, window_size=window_size,
                   use_text=use_text, use_anatomy=use_anatomy, use_moe=use_moe, organ_classes=organ_classes,
                   anatomy_widths=anatomy_widths, generic_experts=generic_experts, task_experts=task_experts,
                   expert_rank=expert_rank, top_k_general=top_k_general, top_k_task=top_k_task, moe_stages=moe_stages,
                   attention_heads=attention_heads, proposal_hidden=proposal_hidden, balance_weight=balance_weight,
                   general_route_prob=general_route_prob)
