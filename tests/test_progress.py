"""Progress: plain lines (no carriage returns) when not on a terminal, nothing when disabled."""

from __future__ import annotations

import io

from leadrrg import progress
from leadrrg.progress import Progress, progress_iter


def test_plain_lines_off_a_terminal(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    with Progress(4, "generate", stream=stream) as bar:
        for _ in range(4):
            bar.update(1)
    text = stream.getvalue()
    assert "\r" not in text and "generate: 4/4 studies (100%)" in text.splitlines()[-1]


def test_one_final_line_by_default_and_none_when_disabled(monkeypatch):
    stream = io.StringIO()
    with Progress(3, "synth", stream=stream) as bar:
        bar.update(3)
    assert stream.getvalue().count("\n") == 1 and stream.getvalue().startswith("synth: 3/3")
    quiet = io.StringIO()
    with Progress(3, "synth", enabled=False, stream=quiet) as bar:
        bar.update(3)
    assert quiet.getvalue() == ""


def test_progress_iter_yields_everything(capsys):
    assert list(progress_iter(range(5), 5, "x")) == [0, 1, 2, 3, 4]
    assert "x: 5/5" in capsys.readouterr().err
