"""CLIP-driven Universal Model (Liu et al., ICCV 2023) on an STU-Net backbone: text-embedding dynamic heads.

The architecture is the CLIP-driven model's; the text encoder is not CLIP by default. The original embeds its
class texts with CLIP's text encoder (512-d). unipet's default encoder is all-MiniLM-L6-v2 (384-d sentence
embeddings, the ``[text]`` extra; unipet's choice: a small offline package, no CLIP weights to fetch), or
``"hash"`` (deterministic bag of n-grams, any width). The embedding width is the parameter ``text_dim``: to use
CLIP embeddings, build with ``text_encoder=None, text_dim=512`` and pass them as ``text=`` or load them with
a checkpoint.

Each class query (task x foreground class; with 2 classes: one query per cancer type) has a frozen text
embedding ``[Q, E]``, computed once from the task set at construction (``unipet.models.text``) and stored in
the model as the buffer ``text_embedding`` so that inference and checkpoint loading never run the encoder.
A query's text feature ``ReLU(Linear(E -> 256))`` is concatenated with the image feature (the bottleneck,
GroupNorm-ReLU-pooled, ``Linear(C -> 256)``); a controller ``Linear(512 -> P)`` emits the parameters of that
query's 3-layer 1x1x1 dynamic head ``8 -> 8 -> 8 -> 1`` (as in ``dodnet``; one per decoder stage for deep
supervision). Outputs are **sigmoid** logits, one channel per query; the loss is taken only on the queries
annotated in each sample's dataset (``unipet.train.losses.partial_label_dice_bce``).

``model(x, task)`` returns each sample's own task's ``K - 1`` channels ``[B, K-1, D, H, W]`` (the common
interface); ``model.forward_all(x)`` returns every query ``[B, Q, D, H, W]`` (training with partial labels,
or segmenting everything at once). ``text=FloatTensor[Q, E]`` overrides the stored embeddings.

With STU-Net-S (2 in-ch, 2 classes, 4 tasks) this has 15.14 M parameters with 512-d (CLIP-width) text
inputs, against the published 15.34 M (-1.3 %), and 15.11 M with the default 384-d MiniLM embeddings. The
remaining 0.2 M is not accounted for by the CLIP-driven paper's description (text projection 512 -> 256,
pooled image projection C -> 256, controller 512 -> head parameters, 8-channel precls), so nothing is added
to make it up.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unipet.errors import ConfigError
from unipet.models.dodnet import DynamicHeadSTUNet
from unipet.models.registry import register
from unipet.models.stunet import resolve_backbone
from unipet.models.text import MINILM_DIM, encode_texts, register_text_embedding, text_or_stored

EMBED_DIM = 256


class UniversalModel(DynamicHeadSTUNet):
    """CLIP-driven Universal Model: ``model(x, task LongTensor[B]) -> sigmoid logits [B, K-1, D, H, W]``.

    Args:
        text_embedding: ``[Q, E]`` query embeddings, ``Q = num_tasks * (num_classes - 1)`` (task-major), or None
            to leave a zero placeholder that a checkpoint's state dict fills (``text_dim`` gives E then).
        text_dim: E when ``text_embedding`` is None.
        num_tasks, task_classifier and STU-Net arguments: see ``PromptedSTUNet``.
    """

    def __init__(self, in_channels: int, num_classes: int, strides, num_tasks: int,
                 text_embedding: torch.Tensor | None = None, text_dim: int = MINILM_DIM,
                 task_classifier: bool = True, **stunet) -> None:
        super().__init__(in_channels, num_classes, strides, num_tasks, head_outputs=1,
                         task_classifier=task_classifier, **stunet)
        self.accepts = ("task", "text")
        self.num_queries = num_tasks * (num_classes - 1)
        dim = int(text_dim) if text_embedding is None else int(text_embedding.shape[1])
        if text_embedding is not None and text_embedding.shape[0] != self.num_queries:
            raise ConfigError(f"got {text_embedding.shape[0]} text embeddings for {self.num_queries} class queries "
                              f"({num_tasks} tasks x {num_classes - 1} foreground classes); give one per query")
        register_text_embedding(self, self.num_queries, dim, text_embedding)
        self.text_proj = nn.Linear(dim, EMBED_DIM)
        self.image_proj = nn.Linear(self.widths[-1], EMBED_DIM)
        self.controller = nn.Linear(2 * EMBED_DIM, self.num_stages * self.params_per_head)

    def _queries_text(self, text) -> torch.Tensor:
        return text_or_stored(self, text)

    def _segment(self, x: torch.Tensor, task, text, queries: torch.Tensor | None):
        """Shared forward; ``queries`` is ``LongTensor[B, G]`` (None = the queries of each sample's task)."""
        self.check_inputs(x, task, text)
        skips, bottleneck = self.encode(x)
        task = self.resolve_task(task, bottleneck)
        if queries is None:
            per_task = self.num_classes - 1
            queries = task[:, None] * per_task + torch.arange(per_task, device=task.device)
        text_feat = F.relu(self.text_proj(self._queries_text(text)))[queries]  # [B, G, 256]
        image_feat = self.image_proj(self.pooled_context(bottleneck))  # [B, 256]
        joint = torch.cat((image_feat[:, None].expand_as(text_feat), text_feat), dim=2)
        params = self.controller(joint).view(*queries.shape, self.num_stages, self.params_per_head)
        return self.dynamic_outputs(self.decode(bottleneck, skips), params)

    def forward(self, x: torch.Tensor, task=None, text=None, organs=None):
        return self._segment(x, task, text, None)

    def forward_all(self, x: torch.Tensor, text=None):
        """Every class query: sigmoid logits ``[B, Q, D, H, W]`` (a list per stage with deep supervision).

        Also sets ``last_task_logits`` when the model has a task classifier.
        """
        queries = torch.arange(self.num_queries, device=x.device).expand(x.shape[0], -1)
        return self._segment(x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device), text, queries)


def query_texts(task_set, num_classes: int, field: str) -> list[str]:
    """Texts of the class queries, task-major: the task's text, plus ``(class c)`` when a task has several."""
    if field not in ("prompt", "description"):
        raise ConfigError(f"unknown task text field {field!r}; use 'prompt' or 'description'")
    texts = task_set.prompts() if field == "prompt" else task_set.descriptions()
    if num_classes == 2:
        return texts
    return [f"{t} (class {c})" for t in texts for c in range(1, num_classes)]


@register("clip-universal", prompts=("task", "text"), family="clip",
          description="CLIP-driven Universal Model: text-embedding dynamic heads (sigmoid, partial labels)")
def build(in_channels: int, num_classes: int, tasks, patch_size, backbone: str = "s", base_width: int | None = None,
          depth=None, strides=None, spacing=None, min_feature: int = 4, text_encoder: str | None = "minilm",
          text_field: str = "prompt", text_dim: int = MINILM_DIM, task_classifier: bool = True) -> UniversalModel:
    """CLIP-Universal on STU-Net-``backbone`` (STU-Net-S: 15.14 M with 512-d text, 15.11 M with MiniLM's 384-d;
    published 15.34 M).

    ``text_encoder``: ``"minilm"``, ``"hash"`` or None (zero placeholder of ``text_dim``, filled by loading
    a checkpoint's state dict: the encoder is not needed then).
    """
    conf = resolve_backbone(patch_size, backbone, base_width, depth, strides, spacing, min_feature)
    embedding = None
    if text_encoder is not None:
        embedding = encode_texts(query_texts(tasks, num_classes, text_field), text_encoder, text_dim)
    return UniversalModel(in_channels, num_classes, num_tasks=len(tasks), text_embedding=embedding,
                          text_dim=text_dim, task_classifier=task_classifier, **conf)
