"""The web page in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`), driven by Selenium,
against a live `serve` on loopback: upload a SynthCXR image, wait for the report, check the DOM, save a screenshot.
The same for the self-contained page of `leadrrg explain`, opened from a file.

Skips only when no Chromium or chromedriver can be found; `.ci/run` installs them and sets
LEADRRG_REQUIRE_BROWSER=1, which turns that skip into a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")

import leadrrg  # noqa: E402
from leadrrg.serve.app import BackgroundServer, create_app  # noqa: E402
from leadrrg.serve.settings import ServeConfig  # noqa: E402
from tests.fixtures_data import make_jsonl  # noqa: E402
from tests.test_generate_cli import write_tiny_run  # noqa: E402
from tests.test_model_helpers import EXPERTS  # noqa: E402

WAIT_S = 60


def find_browser() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


@pytest.fixture(scope="module")
def browser():
    found = find_browser()
    if found is None:
        message = "no chromium + chromedriver on PATH (apt-get install chromium chromium-driver)"
        if os.environ.get("LEADRRG_REQUIRE_BROWSER"):
            pytest.fail(message + "; LEADRRG_REQUIRE_BROWSER is set")
        pytest.skip(message)
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = found[0]
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,1400",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def synth_png(tmp_path_factory) -> Path:
    """One SynthCXR radiograph (with findings drawn in)."""
    from PIL import Image

    from leadrrg.data.synth.generate import make_study
    from leadrrg.data.synth.types import SynthConfig

    _, image = make_study("test", 0, 128, 0, SynthConfig())
    path = tmp_path_factory.mktemp("synth") / "synth_frontal.png"
    Image.fromarray(np.asarray(image), mode="L").save(path)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    data = make_jsonl(tmp_path_factory.mktemp("data"), counts={"train": 2, "test": 1}, views=1)
    return write_tiny_run(tmp_path_factory.mktemp("run"), data, max_new_tokens=8)


def check_rendered(driver, tokens_expected: int | None = None) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done"
    )
    assert driver.find_element(By.ID, "report").text.strip()
    bars = driver.find_elements(By.CSS_SELECTOR, "#experts .expert-bar")
    assert len(bars) == len(EXPERTS) and {b.text.split("\n")[0] for b in bars} == set(EXPERTS)
    words = driver.find_elements(By.CSS_SELECTOR, "#report .tok")
    rows = driver.find_elements(By.CSS_SELECTOR, "#heatmap-table tr")
    assert words and len(rows) == len(words) + 1  # a header and one row per token
    assert len(rows[1].find_elements(By.CSS_SELECTOR, "td.cell")) == 2  # one cell per decoder layer
    if tokens_expected is not None:
        assert len(words) == tokens_expected
    next(w for w in words if w.is_displayed() and w.size["width"] > 0).click()
    detail = driver.find_element(By.ID, "token-detail")
    assert detail.is_displayed() and "Gate per layer" in detail.text and "layer 1" in detail.text


def test_upload_in_a_real_browser(browser, run_dir, synth_png, tmp_path):
    from selenium.webdriver.common.by import By

    generator = leadrrg.load(run_dir, device="cpu")
    expected = generator.generate(str(synth_png), evidence=True)
    with BackgroundServer(create_app(generator, ServeConfig())) as url:
        browser.get(url + "/")
        browser.find_element(By.ID, "file").send_keys(str(synth_png))
        preview = browser.find_element(By.CSS_SELECTOR, "#views img")
        assert preview.get_attribute("alt") == synth_png.name
        browser.find_element(By.ID, "submit").click()
        check_rendered(browser, tokens_expected=len(expected.evidence["tokens"]))
        # the display form: sentence case, punctuation attached (the API's `report` keeps the model's text)
        assert browser.find_element(By.ID, "report").text.split() == expected.report_display.split()
        screenshot = tmp_path / "page.png"
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 1000
        keep = os.environ.get("LEADRRG_SCREENSHOT_DIR")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(screenshot, Path(keep) / "serve_page.png")
        # a bad file: the page shows the server's message, no report
        bad = tmp_path / "notes.png"
        bad.write_bytes(b"plain text, not an image")
        browser.get(url + "/")
        browser.find_element(By.ID, "file").send_keys(str(bad))
        browser.find_element(By.ID, "submit").click()
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(browser, WAIT_S).until(lambda d: "error 415" in d.find_element(By.ID, "status").text)
        assert "notes.png" in browser.find_element(By.ID, "status").text


def test_a_dicom_upload_shows_the_preview_the_model_read(browser, run_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.test_images import write_dicom

    stored = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 3) % 4096
    dicom = write_dicom(tmp_path / "frontal.dcm", stored)
    with BackgroundServer(create_app(leadrrg.load(run_dir, device="cpu"), ServeConfig())) as url:
        browser.get(url + "/")
        browser.find_element(By.ID, "file").send_keys(str(dicom))
        assert "no preview" in browser.find_element(By.ID, "views").text  # the browser cannot draw DICOM
        browser.find_element(By.ID, "submit").click()
        check_rendered(browser)
        WebDriverWait(browser, WAIT_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#views img"))
        image = browser.find_element(By.CSS_SELECTOR, "#views img")
        assert image.get_attribute("src").startswith("data:image/png;base64,")


def test_explain_page_opens_offline_in_a_real_browser(browser, run_dir, synth_png, tmp_path):
    from leadrrg.cli import main

    out = tmp_path / "study.html"
    assert main(["explain", "--run", str(run_dir), "--images", str(synth_png), "--out", str(out)]) == 0
    browser.get(out.as_uri())
    check_rendered(browser)


def wait_done(driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done"
    )


def test_examples_what_if_keyboard_and_tools(browser, run_dir, synth_png, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    generator = leadrrg.load(run_dir, device="cpu")
    with BackgroundServer(create_app(generator, ServeConfig())) as url:
        browser.get(url + "/")
        WebDriverWait(browser, WAIT_S).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#example-list .example")
        )
        examples = browser.find_elements(By.CSS_SELECTOR, "#example-list .example")
        assert len(examples) >= 3 and "view" in browser.find_element(By.ID, "max-views").text
        examples[1].click()  # an example study: its report, and its reference beside it
        wait_done(browser)
        reference = browser.find_element(By.ID, "reference")
        assert reference.is_displayed() and "Reference (SynthCXR test-" in reference.text
        first = browser.find_element(By.CSS_SELECTOR, "#report .tok").text
        assert first[:1].isupper() or not first[:1].isalpha()  # display form
        # keyboard: Tab to a word, Enter opens its evidence
        word = browser.find_element(By.CSS_SELECTOR, '#report .tok[tabindex="0"]')
        word.send_keys(Keys.ENTER)
        assert browser.find_element(By.ID, "token-detail").is_displayed()
        # a what-if: one expert set present, the report written again, the model's own report kept beside it
        menus = browser.find_elements(By.CSS_SELECTOR, "#experts select.what-if")
        assert len(menus) == len(EXPERTS)
        name = menus[-1].get_attribute("data-expert")
        Select(menus[-1]).select_by_value("1")
        WebDriverWait(browser, WAIT_S).until(lambda d: d.find_element(By.ID, "what-if-note").is_displayed())
        wait_done(browser)
        row = browser.find_element(By.CSS_SELECTOR, "#experts .expert-bar.overridden")
        assert row.text.split("\n")[0] == name and "1.000" in row.text
        assert name in browser.find_element(By.ID, "what-if-note").text
        assert "Without the what-if" in browser.find_element(By.ID, "baseline").text
        screenshot = tmp_path / "what_if.png"
        assert browser.save_screenshot(str(screenshot))
        keep = os.environ.get("LEADRRG_SCREENSHOT_DIR")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(screenshot, Path(keep) / "serve_what_if.png")
        browser.find_element(By.ID, "what-if-reset").click()
        WebDriverWait(browser, WAIT_S).until(
            lambda d: not d.find_element(By.ID, "what-if-note").is_displayed()
        )
        assert not browser.find_elements(By.CSS_SELECTOR, "#experts .expert-bar.overridden")
        # copy and download: both buttons work without a server round trip
        browser.find_element(By.ID, "copy").click()
        WebDriverWait(browser, WAIT_S).until(lambda d: "copied" in d.find_element(By.ID, "status").text)
        browser.find_element(By.ID, "download-json").click()
        browser.find_element(By.ID, "download-text").click()
        # more views than the model reads: refused on the page, naming model.max_views
        paths = [str(synth_png)] * (generator.max_views + 1)
        browser.find_element(By.ID, "file").send_keys("\n".join(paths))
        status = browser.find_element(By.ID, "status").text
        assert "model.max_views" in status and "none is used" in status
        assert not browser.find_element(By.ID, "submit").is_enabled()


def test_words_are_shaded_by_expert_focus_not_by_gate(browser, tmp_path):
    """A word whose expert shares are an even split is not shaded however high its gate; a focused one is."""
    from selenium.webdriver.common.by import By

    from leadrrg.serve.render import explain_html

    even = [[name, round(1 / len(EXPERTS), 3)] for name in EXPERTS]
    tokens = [
        {"text": "the", "display": "The", "gate": 0.9, "gates": [0.9, 0.9], "experts": even},
        {
            "text": " effusion",
            "display": " effusion.",
            "gate": 0.3,
            "gates": [0.3, 0.3],
            "experts": [[EXPERTS[0], 0.9]],
        },
    ]
    result = {
        "report": "the effusion",
        "report_display": "The effusion.",
        "findings": {},
        "expert_probs": {name: 0.5 for name in EXPERTS},
        "thresholds": {name: 0.5 for name in EXPERTS},
        "contradictions": [],
        "expert_attributes": {EXPERTS[0]: {"side": "right", "severity": "moderate"}},
        "evidence": {"format": "leadrrg.evidence/1", "experts": EXPERTS, "layers": 2, "tokens": tokens},
    }
    page = tmp_path / "shading.html"
    page.write_text(explain_html(result, []), encoding="utf-8")
    browser.get(page.as_uri())
    words = browser.find_elements(By.CSS_SELECTOR, "#report .tok")
    assert [w.text.strip() for w in words] == ["The", "effusion."]
    assert "diffuse" in words[0].get_attribute("class") and "diffuse" not in words[1].get_attribute("class")
    assert words[0].value_of_css_property("background-color") == "rgba(0, 0, 0, 0)"
    assert words[1].value_of_css_property("background-color") != "rgba(0, 0, 0, 0)"
    rows = browser.find_elements(By.CSS_SELECTOR, "#experts .expert-bar")
    attributes = {r.text.split("\n")[0]: r.get_attribute("data-attributes") for r in rows}
    assert attributes[EXPERTS[0]] == "right, moderate"
    assert not browser.find_elements(By.CSS_SELECTOR, "select.what-if")  # what-ifs need the live service
    assert "https://" not in page.read_text() and "http://" not in page.read_text()
