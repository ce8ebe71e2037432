"""Training you can watch: metrics.csv always, TensorBoard scalars and validation MIP images read back from the
event file, a progress bar with loss / it/s / ETA on a terminal only."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from _synthetic import tiny_train_cache
from unipet.train import train
from unipet.train.monitor import MetricsCSV, mip_overlay_rgb, progress_bar

PATCH = (8, 16, 16)
KW = {"base_width": 4, "min_feature": 2}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tiny_train_cache(tmp_path_factory, n=4, n_val=1)


def _read_csv(path):
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_metrics_csv_and_tensorboard_events(cache, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"augmentation": {"enabled": False}, "validate_every": 3, "validate_cases": 1}))
    run = tmp_path / "run"
    result = train(cache, "dpdnet", run, recipe=recipe, iterations=4, patch_size=PATCH, batch_size=1, workers=0,
                   model_kw=KW, device="cpu", progress=True, tensorboard=True, checkpoint_every=4)
    assert "it/s" not in capsys.readouterr().err  # not a terminal: no progress bar in the log
    rows = _read_csv(run / "metrics.csv")
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["loss"]) for r in rows] == pytest.approx(result.losses, rel=1e-5)
    dice_cols = [c for c in rows[0] if c.startswith("dice/")]
    assert dice_cols and rows[2][dice_cols[0]] != "" and rows[0][dice_cols[0]] == ""  # validation at step 3 only
    assert all(float(r["it_per_s"]) > 0 and float(r["lr"]) > 0 for r in rows)
    events = EventAccumulator(str(run / "tb"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    for tag in ("loss", "lr", "it_per_s", "step_s", dice_cols[0]):
        assert tag in tags["scalars"], (tag, tags["scalars"])
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3, 4]
    assert [e.value for e in events.Scalars("loss")] == pytest.approx(result.losses, rel=1e-5)
    assert [e.step for e in events.Scalars(dice_cols[0])] == [3]
    images = [t for t in tags["images"] if t.startswith("val_mip/")]
    assert len(images) == 1 and events.Images(images[0])[0].step == 3
    img = events.Images(images[0])[0]
    assert img.width > 8 and img.height > 8 and img.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_csv_extends_columns_and_drops_repeated_steps(tmp_path):
    m = MetricsCSV(tmp_path)
    m.write({"iteration": 1, "loss": 0.9, "lr": 0.01})
    m.write({"iteration": 2, "loss": 0.8, "lr": 0.01, "dice/lymphoma": 0.5})
    m.write({"iteration": 3, "loss": 0.7, "lr": 0.01})
    rows = _read_csv(tmp_path / "metrics.csv")
    assert [r["dice/lymphoma"] for r in rows] == ["", "0.5", ""] and rows[0]["loss"] == "0.9"
    # a resume from the checkpoint at iteration 2 repeats step 3: its old row goes
    m2 = MetricsCSV(tmp_path, start=2)
    m2.write({"iteration": 3, "loss": 0.65, "lr": 0.01})
    rows = _read_csv(tmp_path / "metrics.csv")
    assert [(r["iteration"], r["loss"]) for r in rows] == [("1", "0.9"), ("2", "0.8"), ("3", "0.65")]


def test_progress_bar_shows_loss_rate_and_eta_on_a_terminal_only():
    from rich.console import Console

    out = io.StringIO()
    bar = progress_bar(True, total=10, start=0, console=Console(file=out, force_terminal=True, width=120))
    bar[0].update(bar[1], completed=4, loss=0.5321, rate=2.5)
    bar[0].refresh()
    bar[0].stop()
    text = out.getvalue()
    assert "4/10" in text and "loss 0.5321" in text and "2.50 it/s" in text and "ETA" in text
    assert progress_bar(True, 10, 0, console=Console(file=io.StringIO(), force_terminal=False)) is None
    assert progress_bar(False, 10, 0, console=Console(file=io.StringIO(), force_terminal=True)) is None


def test_mip_overlay_outlines_reference_and_prediction():
    pet = np.zeros((10, 6, 8), np.float32)
    pet[2:5, 2:4, 1:4] = 5.0
    ref = pet > 0
    pred = np.zeros_like(ref)
    pred[6:9, 1:3, 5:7] = True
    rgb = mip_overlay_rgb(pet, pred, ref)
    assert rgb.shape == (10, 8, 3) and rgb.dtype == np.uint8
    # rows: superior (z = 9) first; columns: x flipped (radiological)
    assert tuple(rgb[9 - 2, 7 - 1]) == (0, 114, 178)  # a corner of the reference's projection: its outline
    assert tuple(rgb[9 - 6, 7 - 5]) == (213, 94, 0)
    assert tuple(rgb[0, 0]) == (255, 255, 255)  # background: white (inverted grey)


def test_cli_quiet_trains_without_a_bar_and_writes_metrics(cache, tmp_path, capsys):
    from unipet.cli import main

    out = tmp_path / "cli"
    args = ["train", str(cache.root), "--model", "dpdnet", "--out", str(out), "--iterations", "2", "--patch",
            *map(str, PATCH), "--batch", "1", "--model-kw", "base_width=4", "--model-kw", "min_feature=2",
            "--device", "cpu", "--workers", "0", "--quiet"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "it/s" not in captured.out + captured.err
    assert [int(r["iteration"]) for r in _read_csv(out / "metrics.csv")] == [1, 2]


def test_metrics_csv_after_a_kill_and_resume_lists_every_step_once(cache, tmp_path):
    args = dict(iterations=4, patch_size=PATCH, batch_size=1, workers=0, model_kw=KW, device="cpu", progress=False,
                tensorboard=False, checkpoint_every=2)

    def die_at_4(it, logs):  # step 3 is logged but the last checkpoint is at 2: a resume repeats step 3
        if it == 4:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        train(cache, "dpdnet", tmp_path / "run", callbacks=[die_at_4], **args)
    assert [int(r["iteration"]) for r in _read_csv(tmp_path / "run" / "metrics.csv")] == [1, 2, 3]
    resumed = train(cache, "dpdnet", tmp_path / "run", resume=True, **args)
    rows = _read_csv(tmp_path / "run" / "metrics.csv")
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["loss"]) for r in rows[2:]] == pytest.approx(resumed.losses, rel=1e-5)
