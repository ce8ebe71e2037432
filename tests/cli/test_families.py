"""Paper commands are sub-commands of their family (``unipet gcis export``); the former top-level names stay as
hidden aliases that run the same function (``unipet export`` is no longer one: it is the ONNX / OpenVINO export)."""
from __future__ import annotations

import pytest

from unipet.cli import main
from unipet.cli.app import app

FAMILIES = {
    ("gcis", "adapt"): "adapt", ("mastpro", "experts"): "experts",
    ("mastpro", "pretrain-anatomy"): "pretrain-anatomy", ("h2aseg", "tamw"): "tamw-weights",
    ("anatomy", "pretrain"): "pretrain", ("anatomy", "organs"): "organs",
}


def _commands(typer_app) -> dict[str, object]:
    return {c.name: c for c in typer_app.registered_commands}


@pytest.mark.parametrize("family, name", list(FAMILIES))
def test_family_command_and_its_hidden_alias_run_one_function(family, name, capsys):
    groups = {g.name: g.typer_instance for g in app.registered_groups}
    command = _commands(groups[family])[name]
    alias = _commands(app)[FAMILIES[(family, name)]]
    assert alias.callback is command.callback and alias.hidden and not command.hidden
    assert main([family, name, "--help"]) == 0
    assert f"{family} {name}" in capsys.readouterr().out.replace("\n", " ")


def test_top_level_help_lists_families_not_aliases(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f in out for f in ("gcis", "mastpro", "h2aseg", "anatomy"))
    listed = {line.strip("│ ").split(" ")[0] for line in out.splitlines() if line.startswith("│ ")}
    assert {"gcis", "mastpro", "h2aseg", "anatomy"} <= listed
    assert not listed & set(FAMILIES.values())  # the former names run but are not listed as commands


def test_gcis_export_is_a_family_command_and_export_is_the_network_export(capsys):
    assert main(["gcis", "export", "--help"]) == 0
    assert "gcis export" in capsys.readouterr().out.replace("\n", " ")
    assert main(["export", "--help"]) == 0
    assert "--format" in capsys.readouterr().out
