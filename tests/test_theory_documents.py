"""The committed theory/ documents are exactly what `linearcnn derive` generates now."""

from __future__ import annotations

from pathlib import Path

import pytest

from linearcnn.cli import main
from linearcnn.theory.document import FORMATS, render

THEORY = Path(__file__).resolve().parents[1] / "theory"


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_committed_document_is_current(fmt):
    committed = (THEORY / f"derivation.{FORMATS[fmt]}").read_text()
    assert committed == render(fmt), f"theory/derivation.{FORMATS[fmt]} is stale: run `make theory`"


def test_text_document_shows_every_result():
    text = render("text")
    for needle in ["recurrence", "rsolve", "Thm 4.2", "raw profile", "whitening limit", "gradient-flow profile",
                   "early regime", "x*", "1.256431208626", "Divergence", "expm1", "log1p"]:
        assert needle in text, needle
    assert "FAILS" not in text


def test_derive_cli_writes_each_format(tmp_path, capsys):
    for fmt, suffix in FORMATS.items():
        out = tmp_path / f"d.{suffix}"
        assert main(["derive", "--format", fmt, "--out", str(out)]) == 0
        assert out.read_text() == render(fmt)
    assert capsys.readouterr().out.count("wrote") == len(FORMATS)


def test_derive_cli_prints_text_document(capsys):
    assert main(["derive", "--format", "text"]) == 0
    assert capsys.readouterr().out == render("text")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["derive", "--format", "pdf"], "--format"),
        (["derive", "-e", "1,-2"], "positive"),
        (["derive", "-e", "1,abc"], "--eigenvalues"),
        (["derive", "-e", "4,1", "--lr", "0.5"], "diverges"),
        (["derive", "-e", "4,1", "--lr", "0"], "lr"),
        (["derive", "-e", "4,1", "--steps", "-3"], "steps"),
        (["derive", "--out", "/nonexistent-dir/x.md"], "does not exist"),
    ],
)
def test_derive_bad_input_is_one_line_exit_2(argv, words, capsys, tmp_path):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_derive_out_directory_is_refused(tmp_path, capsys):
    assert main(["derive", "--out", str(tmp_path)]) == 2
    assert "directory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
