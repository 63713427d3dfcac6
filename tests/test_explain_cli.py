"""`leadrrg explain` (one self-contained HTML file and a PNG heatmap), `python -m leadrrg`, and the packaging
facts a user relies on (one version, the licence, the page in the package)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import leadrrg
from leadrrg.cli import main
from leadrrg.errors import LeadrrgError
from leadrrg.serve import render
from leadrrg.serve.assets import SCRIPT_TAG, STYLE_TAG, page_text
from tests.fixtures_data import make_jsonl, write_png
from tests.test_generate_cli import write_tiny_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    data = make_jsonl(tmp_path_factory.mktemp("data"), counts={"train": 2, "test": 1}, views=1)
    return write_tiny_run(tmp_path_factory.mktemp("run"), data, max_new_tokens=6)


def test_explain_writes_one_offline_html_file_and_a_heatmap(run_dir, tmp_path, capsys):
    image = write_png(tmp_path / "frontal.png", seed=5)
    html, png = tmp_path / "study.html", tmp_path / "gates.png"
    assert (
        main(
            ["explain", "--run", str(run_dir), "--images", str(image), "--out", str(html), "--png", str(png)]
        )
        == 0
    )
    text = html.read_text()
    assert 'src="static/' not in text and 'href="static/' not in text  # everything inlined
    assert not re.search(r"(src|href)=\"https?://", text)
    embedded = json.loads(
        re.search(r"window\.LEADRRG_EMBEDDED = (.*?);</script>", text).group(1).replace("<\\/", "</")
    )
    assert embedded["result"]["evidence"]["layers"] == 2 and embedded["images"][0]["url"].startswith(
        "data:image/png"
    )
    with Image.open(png) as heatmap:
        assert heatmap.format == "PNG" and heatmap.width > 100
    out = capsys.readouterr().out
    assert "top experts" in out and f"wrote {html}" in out


def test_python_dash_m_and_one_version():
    result = subprocess.run(
        [sys.executable, "-m", "leadrrg", "--version"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == f"leadrrg {leadrrg.__version__}"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert (
        'dynamic = ["version"]' in pyproject and "\nversion =" not in pyproject.split("[project.optional")[0]
    )
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert "research use only" in leadrrg.__doc__.lower()


def test_building_the_command_line_does_not_import_torch():
    code = "import sys; from leadrrg.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr


def test_the_offline_page_inlines_the_style_and_the_script():
    result = {"report": "no </script> here", "evidence": None}
    text = render.explain_html(result, [("frontal.png", b"\x89PNG")], "run")
    assert STYLE_TAG not in text and SCRIPT_TAG not in text
    script = page_text("app.js").replace("</", "<\\/")
    assert "<style>\n" + page_text("style.css") + "</style>" in text
    assert "<script>\n" + script + "</script>" in text
    assert text.index("window.LEADRRG_EMBEDDED") < text.index(script)
    assert "no \\u003c/script\\u003e here" in text and "</script> here" not in text


def test_the_offline_page_fails_loudly_when_index_html_lost_a_tag(monkeypatch):
    def edited(name: str) -> str:
        return page_text(name).replace(STYLE_TAG, '<link href="static/style.css" rel="stylesheet">')

    monkeypatch.setattr(render, "page_text", edited)
    with pytest.raises(LeadrrgError, match="index.html has 0 copies"):
        render.explain_html({}, [], "run")
