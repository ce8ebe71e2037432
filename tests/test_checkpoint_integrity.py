"""Checkpoint integrity: checksums, damaged files and headers, non-finite weights, edited metadata, the shipped
checkpoint (no checksum) still loading without a warning, stale temporaries and file modes."""
from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from unipet.errors import ConfigError, InputFileError
from unipet.models import create
from unipet import checkpoint as ckpt

PATCH = (16, 16, 16)
SHIPPED = Path(__file__).resolve().parents[1] / "src" / "unipet" / "resources" / "checkpoints" / "dpdnet-small"


def _model():
    torch.manual_seed(0)
    return create("nnunet", in_channels=2, num_classes=2, tasks=["lymphoma"], patch_size=PATCH, base_channels=4,
                  max_channels=8, max_stages=3)


def _save(run: Path) -> Path:
    model = _model()
    return ckpt.save_checkpoint(run, model, {"model": model.config, "preprocess": {}, "iteration": 1})


def test_checksum_is_recorded_and_verified(tmp_path):
    folder = _save(tmp_path / "run")
    meta = json.loads((folder / "meta.json").read_text())
    assert meta[ckpt.CHECKSUM_KEY] == ckpt.file_sha256(folder / "model.safetensors")
    model, loaded = ckpt.load_checkpoint(tmp_path / "run")
    assert loaded.checkpoint_id == meta[ckpt.CHECKSUM_KEY][:16] == ckpt.checkpoint_id(folder)
    # 16 bytes overwritten in the middle of the weights: refused, not silently used
    data = bytearray((folder / "model.safetensors").read_bytes())
    mid = len(data) // 2
    data[mid:mid + 16] = b"\x7f" * 16
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(InputFileError, match="damaged.*SHA-256"):
        ckpt.load_checkpoint(folder)
    with pytest.raises(InputFileError, match="damaged"):
        ckpt.verify_weights(folder)


def test_damaged_header_and_non_finite_weights_without_checksum(tmp_path):
    from safetensors.torch import save_file

    folder = _save(tmp_path / "run")
    meta = json.loads((folder / "meta.json").read_text())
    del meta[ckpt.CHECKSUM_KEY]  # an old checkpoint: nothing to compare against
    (folder / "meta.json").write_text(json.dumps(meta))
    good = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(b"\xff" * 8 + good[8:])
    with pytest.raises(InputFileError, match="cannot be read as safetensors"):
        ckpt.load_checkpoint(folder)
    state = ckpt.model_state(_model())
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first].clone()
    state[first].view(-1)[0] = float("nan")
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(InputFileError, match="non-finite"):
        ckpt.load_checkpoint(folder)


def test_non_finite_weights_are_never_saved(tmp_path):
    model = _model()
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("inf")
    with pytest.raises(ConfigError, match="non-finite"):
        ckpt.save_checkpoint(tmp_path / "run", model, {"model": model.config})
    assert not (tmp_path / "run" / "checkpoint").exists()


@pytest.mark.parametrize("edit, phrase", [
    (lambda m: m["model"].update(name="no-such-net"), "unknown model"),
    (lambda m: m["model"].update(name="dpdnet"), "does not fit|cannot be built|buildable"),
    (lambda m: m["model"]["kwargs"].update(base_channels=8), "does not fit"),
    (lambda m: m["model"]["kwargs"].update(bogus=1), "cannot be built"),
    (lambda m: m.pop("model"), "no model config"),
])
def test_edited_metadata_is_one_clear_error(tmp_path, edit, phrase):
    folder = _save(tmp_path / "run")
    meta = json.loads((folder / "meta.json").read_text())
    edit(meta)
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=phrase):
        ckpt.load_checkpoint(folder)


def test_shipped_checkpoint_records_its_checksum_and_verifies():
    meta = json.loads((SHIPPED / "meta.json").read_text())
    assert meta[ckpt.CHECKSUM_KEY] == ckpt.file_sha256(SHIPPED / "model.safetensors")
    _, loaded = ckpt.load_checkpoint(SHIPPED)
    assert loaded.checkpoint_id == meta[ckpt.CHECKSUM_KEY][:16]


def test_checkpoint_without_checksum_loads_without_warning(tmp_path, caplog):
    """Checkpoints written before checksums existed are accepted as documented (their id is their weights' hash)."""
    import shutil

    folder = tmp_path / "old"
    shutil.copytree(SHIPPED, folder)
    meta = json.loads((folder / "meta.json").read_text())
    del meta[ckpt.CHECKSUM_KEY]
    (folder / "meta.json").write_text(json.dumps(meta))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.WARNING):
            _, loaded = ckpt.load_checkpoint(folder)
    assert not caplog.records
    assert loaded.checkpoint_id == ckpt.file_sha256(folder / "model.safetensors")[:16]


def test_stale_temporaries_are_cleaned_and_modes_follow_the_umask(tmp_path):
    run = tmp_path / "run"
    stale = run / ".checkpoint.tmpdeadbeef"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"x" * 1000)
    old = os.umask(0o022)
    try:
        folder = _save(run)
    finally:
        os.umask(old)
    assert not stale.exists()
    assert folder.stat().st_mode & 0o777 == 0o755
    assert all((f.stat().st_mode & 0o777) == 0o644 for f in folder.iterdir())
    (run / ".checkpoint.tmpfeed").mkdir()
    assert ckpt.clean_stale_temporaries(run) == [run / ".checkpoint.tmpfeed"]
    shutil.rmtree(run)


def test_a_write_after_an_interrupted_swap_never_deletes_the_only_checkpoint(tmp_path, monkeypatch):
    folder = _save(tmp_path / "run")
    os.replace(folder, tmp_path / "run" / ckpt.OLD)  # killed between the two renames: only the old one is left
    real = os.replace

    def dies_before_the_new_one_is_in_place(src, dst):
        if Path(src).name.startswith(ckpt.TMP_PREFIX):
            raise OSError(5, "I/O error")
        real(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", dies_before_the_new_one_is_in_place)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path / "run", _model(), {"model": _model().config, "iteration": 2})
    monkeypatch.undo()
    _, meta = ckpt.load_checkpoint(tmp_path / "run")  # the previous checkpoint survived
    assert meta.iteration == 1
