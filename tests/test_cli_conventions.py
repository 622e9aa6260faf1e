"""CLI conventions: --version, -h everywhere, help text on every option, no `<bool>` after flags."""

from __future__ import annotations

import re

import pytest
import typer

from linearcnn.cli import main
from linearcnn.cli._app import app
from linearcnn.records import versions


def _commands() -> list[str]:
    click_group = typer.main.get_command(app)
    return sorted(click_group.commands)  # type: ignore[attr-defined]


def test_version_prints_the_versions(capsys):
    assert main(["--version"]) == 0
    found = versions()
    assert capsys.readouterr().out.strip() == (
        f"linearcnn {found['linearcnn']} (torch {found['torch']}, python {found['python']})")


def test_every_command_has_short_help_and_documents_every_option(capsys):
    commands = _commands()
    assert {"fit", "profile", "train", "validate", "derive"} <= set(commands)
    group = typer.main.get_command(app)
    for name in commands:
        assert main([name, "-h"]) == 0, name
        text = capsys.readouterr().out
        assert "Usage: linearcnn " + name in text, name
        assert "<bool>" not in text, name  # a flag takes no value
        command = group.commands[name]  # type: ignore[attr-defined]
        for param in command.params:
            if param.param_type_name == "option" and "--help" not in param.opts:
                assert (param.help or "").strip(), f"{name} {param.opts[0]} has no help text"


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_root_help(flag, capsys):
    assert main([flag]) == 0
    text = capsys.readouterr().out
    assert re.search(r"--version\s+-V", text) and "<bool>" not in text


def _short_options() -> dict[str, set[str]]:
    group = typer.main.get_command(app)
    meaning: dict[str, set[str]] = {}
    for command in group.commands.values():  # type: ignore[attr-defined]
        for param in command.params:
            if param.param_type_name != "option":
                continue
            longs = [o for o in param.opts + param.secondary_opts if o.startswith("--")]
            for short in (o for o in param.opts if not o.startswith("--")):
                meaning.setdefault(short, set()).add(longs[0] if longs else param.name)
    return meaning


def test_a_short_option_means_one_thing_across_commands():
    meaning = _short_options()
    assert meaning["-c"] == {"--checkpoint"} and meaning["-d"] == {"--data"}
    shared = {short: longs for short, longs in meaning.items() if len(longs) > 1}
    assert not shared, shared


def test_validate_help_lists_every_experiment(capsys):
    from validation.experiments import EXPERIMENTS

    assert main(["validate", "-h"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in EXPERIMENTS:
        assert name in text.replace("│", " ").replace(" ", "") or name in text, name
