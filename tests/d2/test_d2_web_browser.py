"""The web demo in a real browser: the system's headless Chromium, driven by selenium.

Nothing is downloaded: selenium gets the system's chromium and chromedriver paths. With
``CHIMERASEG_WEB_WEIGHTS`` set to a checkpoint of ``make demo`` the page serves that trained
model (and its world CLIP) instead of a small random one; ``CHIMERASEG_WEB_SCREENSHOT`` names
where the screenshot goes (the README's ``docs/web_demo.png`` is made this way).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON, SYNTHETIC_CONFIG

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

pytestmark = pytest.mark.detectron2
CHROMIUM = os.environ.get("CHIMERASEG_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHIMERASEG_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1300",
]
WAIT_S = 180  # a cold CPU model and the first text embeddings on a shared machine


def _model_opts(tiny_opts: list[str]) -> tuple[list[str], str]:
    weights = os.environ.get("CHIMERASEG_WEB_WEIGHTS")
    if weights:
        return ["MODEL.WEIGHTS", weights], "the synthetic ChimeraSeg of `make demo`"
    return [*tiny_opts, "MODEL.CHIMERASEG.ALLOW_RANDOM_WEIGHTS", "True"], "tiny random model"


@pytest.fixture
def browser(tmp_path):
    if not (os.path.isfile(CHROMIUM) and os.path.isfile(CHROMEDRIVER)):
        pytest.skip(f"no Chromium/chromedriver at {CHROMIUM} / {CHROMEDRIVER} (CI installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def served(tiny_opts, synthetic_root):
    from chimeraseg.d2.web_source import build_d2_source
    from chimeraseg.demo.session import DEFAULT_LIMITS, WebDemo
    from chimeraseg.demo.web import build_app, launch

    opts, description = _model_opts(tiny_opts)
    web = WebDemo(build_d2_source(SYNTHETIC_CONFIG, opts, description), DEFAULT_LIMITS)
    examples = sorted(str(p) for p in Path(synthetic_root).glob("synthetic_zs/val2017/*.jpg"))
    app = build_app(web, examples)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch(app, web, "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}", examples
    app.close()
    web.close()


def _replace_text(driver, selector: str, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, selector)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(text)


def test_browser_uploads_types_runs_and_reads_the_legend(browser, served, tmp_path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, examples = served
    image = os.environ.get("CHIMERASEG_WEB_IMAGE") or examples[0]
    vocabulary = ["grass", "sky", "water", "sand", "tree", "carpet", "road"]
    wait = WebDriverWait(browser, WAIT_S)
    browser.get(url)
    upload = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#cs-image input[type=file]"))
    )
    upload.send_keys(image)
    uploaded = f"#cs-image td[aria-label='{Path(image).name}']"  # the upload's file row
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, uploaded)))
    _replace_text(browser, "#cs-vocabulary textarea", "\n".join(vocabulary))
    _replace_text(browser, "#cs-unseen textarea, #cs-unseen input", "water, tree, carpet")
    browser.find_element(By.CSS_SELECTOR, "#cs-run").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#cs-overlay img")))
    rows = wait.until(
        ec.presence_of_all_elements_located((By.CSS_SELECTOR, "#cs-legend .cs-legend-row"))
    )
    legend = {r.get_attribute("data-class"): float(r.get_attribute("data-share")) for r in rows}
    assert legend and set(legend) <= set(vocabulary)
    assert sum(legend.values()) == pytest.approx(1.0, abs=1e-3)
    message = browser.find_element(By.CSS_SELECTOR, "#cs-message").text
    assert "Model:" in message and f"{len(vocabulary)} classes" in message
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#cs-similarity img")))
    shot = Path(os.environ.get("CHIMERASEG_WEB_SCREENSHOT") or tmp_path / "web_demo.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    # the page loaded nothing from anywhere but its own server
    requested = [
        json.loads(entry["message"])["message"]["params"]["request"]["url"]
        for entry in browser.get_log("performance")
        if '"Network.requestWillBeSent"' in entry["message"]
    ]
    network = [u for u in requested if u.startswith(("http:", "https:", "ws:", "wss:"))]
    remote = [u for u in network if not u.startswith((url, url.replace("http", "ws", 1)))]
    assert any(u.startswith(url) for u in network) and not remote, remote
