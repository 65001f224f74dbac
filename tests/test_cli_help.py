"""Every command's --help reads well at 80 columns: no cut option names or help texts (an ellipsis), no broken
text (an empty parenthesis, a markup-eaten [section]), booleans that read as English, no squeezed column."""
from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from facediff.cli.main import app

runner = CliRunner()


def _commands(group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            out += _commands(cmd, path + (name,))
        else:
            out.append(path + (name,))
    return out


COMMANDS = _commands(typer.main.get_command(app))


def test_every_command_is_listed():
    names = {" ".join(c) for c in COMMANDS}
    assert {"sample", "compose", "panorama", "info", "eval", "train lora", "data synth"} <= names


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "facediff")
def test_help_reads_well_at_80_columns(cmd):
    res = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "80", "TERM": "dumb"}, terminal_width=80)
    assert res.exit_code == 0, res.output
    text = res.output
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    assert "…" not in text and "..." not in text.replace("[ARGS]...", ""), text
    assert not re.search(r"\(\s*\)|\(\s+\w", text), text  # "( rank)": a [section] eaten as markup
    assert "--no-no-" not in text
    # booleans: only --step-noise/--no-step-noise has a negative form, everything else is a plain flag
    for pair in re.findall(r"(--[\w-]+) / (--no-[\w-]+)", text):
        assert pair == ("--step-noise", "--no-step-noise"), pair
    # no squeezed help column: a help text never wraps into a strip narrower than 30 characters
    for line in lines:
        m = re.match(r"^\s{20,}(\S.*)$", line)
        if m:
            assert len(line) - len(m.group(1)) <= 50, line


def test_lora_help_names_real_things():
    text = runner.invoke(app, ["train", "lora", "--help"], terminal_width=80).output
    assert "[lora] rank" in text and "e.g. lora)" not in text
