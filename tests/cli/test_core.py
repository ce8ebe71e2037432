"""The command-line contract: help for every command, one-line errors, no overwriting."""
import json
import subprocess
import sys

import pytest

from _synthetic import write_autopet
from unipet.cli import app, main


def _commands():
    import typer.main

    return sorted(typer.main.get_command(app).commands)


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in _commands():
        assert name in out


@pytest.mark.parametrize("name", _commands())
def test_each_command_has_help_with_examples(name, capsys):
    assert main([name, "--help"]) == 0
    assert "Examples" in capsys.readouterr().out


def test_user_error_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "unipet", "import", "autopet", str(tmp_path / "nope"),
                           "--out", str(tmp_path / "m.json")], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("unipet: error:") and "Traceback" not in proc.stderr


def test_import_preprocess_and_refuse_overwrite(tmp_path, capsys):
    root = write_autopet(tmp_path / "ap", n=3)
    m = tmp_path / "m.json"
    assert main(["import", "autopet", str(root), "--out", str(m)]) == 0
    data = json.loads(m.read_text())
    assert len(data["cases"]) == 3 and data["source"] == "autopet"
    before = m.read_text()
    assert main(["import", "autopet", str(root), "--out", str(m), "--task", "melanoma"]) == 2
    assert "--overwrite" in capsys.readouterr().err and m.read_text() == before
    assert main(["import", "autopet", str(root), "--out", str(m), "--overwrite"]) == 0
    assert main(["preprocess", str(m), "--out", str(tmp_path / "cache"), "--ct-norm", "ct-window"]) == 0
    assert len(json.loads((tmp_path / "cache" / "cache.json").read_text())["cases"]) == 3


def test_manifest_with_unknown_task_fails_cleanly(tmp_path, capsys):
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"version": 1, "cases": [{"case_id": "a", "images": {}, "task": "glioma"}]}))
    assert main(["preprocess", str(p), "--out", str(tmp_path / "c")]) == 2
    assert "unknown task 'glioma'" in capsys.readouterr().err


def test_predict_usage_names_its_arguments_and_summary_lines_do_not_wrap_in_files(tmp_path):
    """``unipet predict --help`` showed ``{INPUTS OUT_DIR}...``; a summary line written to a file wrapped at 80."""
    env = {**__import__("os").environ, "COLUMNS": "120"}
    usage = subprocess.run([sys.executable, "-m", "unipet", "predict", "--help"], capture_output=True, text=True,
                           env=env).stdout
    line = next(l for l in usage.splitlines() if "Usage:" in l)
    assert "[INPUT] [OUT_DIR]" in line and "..." not in line and "THIRD" not in line
    code = "from unipet.cli._common import console; console.print('[1/1] ' + 'word ' * 40, markup=False)"
    piped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert len(piped.strip().splitlines()) == 1  # not broken at rich's 80 columns for a pipe or a file
