"""End to end: the real app (a tiny HyperGen: the real task encoder, a tiny zoo, an untrained
generator, the tiny base model) on a loopback port, driven in headless Chromium with Selenium.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; skipped when
they are missing. Set ``HYPERGEN_SCREENSHOT=docs/app-screenshot.png`` to keep the screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel

from app import create_app
from app.screenshot import FLAGS as CHROMIUM_FLAGS
from app.screenshot import save_page
from expert_zoo.train import ExpertTrainConfig
from hypergen import HyperGen
from hypergen.encoder import TaskEncoder
from tests.app.helpers import build_zoo, task_jsonl
from tests.conftest import tiny_llama

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = CHROMIUM_FLAGS  # the same headless flags as the README screenshot
WAIT_S = 120.0
DESCRIPTION = "Decide whether a restaurant review is positive or negative"

if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
    pytest.skip(
        "needs /usr/bin/chromium and /usr/bin/chromedriver "
        "(apt-get install -y chromium chromium-driver)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="needs `pip install selenium`")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def real_generator(tmp_path_factory, tiny_model_dir):
    """HyperGen.from_pretrained over a tiny zoo and an untrained generator (as in its tests)."""
    from hypergen.bank import ExpertBank
    from training.module import new_model

    root = tmp_path_factory.mktemp("e2e")
    zoo = build_zoo(root / "zoo", TaskEncoder())
    torch.manual_seed(0)
    model = new_model(ExpertBank.load(zoo.root), np.arange(len(zoo)), k=3)
    with torch.no_grad():  # as if trained: heads start at zero, which ignores the latent
        for name, param in model.named_parameters():
            if name.startswith("heads."):
                param.normal_(0, 0.02)
    model.save_pretrained(root / "generator")
    base = shutil.copytree(tiny_model_dir, root / "tiny-llama")  # the base model the zoo names
    gen = HyperGen.from_pretrained(root / "generator", zoo.root, base_model=base)
    return gen, zoo, root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(real_generator):
    gen, zoo, root = real_generator
    layout = gen.bank.layout
    config = ExpertTrainConfig(
        steps=2, batch_size=2, max_length=48, eval_examples=2, target_modules=layout.modules
    )
    demo = create_app(gen, zoo, user_zoo=root / "user-zoo", train_config=config)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(service=service, options=options)
    yield driver
    driver.quit()


def _wait(driver, condition, what: str):
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(condition, message=what)


def _text(driver, css: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def _wait_text(driver, css: str, needle: str) -> str:
    _wait(driver, lambda d: needle in _text(d, css), f"{needle!r} in {css}")
    return _text(driver, css)


def _set_text(driver, css: str, value: str) -> None:
    """Put ``value`` into a textbox the way typing does (fast, for long text)."""
    box = driver.find_element(By.CSS_SELECTOR, css)
    driver.execute_script(
        "arguments[0].value = arguments[1];"
        "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));",
        box,
        value,
    )


def _generate(driver, description: str) -> float:
    """Type ``description``, click Generate; seconds until the download link appears."""
    old = {_download_href(driver)}
    box = driver.find_element(By.CSS_SELECTOR, "#description textarea")
    box.clear()
    box.send_keys(description)
    start = time.perf_counter()
    driver.find_element(By.CSS_SELECTOR, "#generate-btn").click()
    _wait(driver, lambda d: _download_href(d) not in (None, *old), "a new download link")
    seconds = time.perf_counter() - start
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#neighbours-plot img"), "plot")
    return seconds


def _download_href(driver) -> str | None:
    """The download link's target, or None while there is none (or the page is re-rendering
    it: the element found a moment ago can be gone, and the wait asks again)."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        links = driver.find_elements(By.CSS_SELECTOR, "#download a[href]")
        return links[0].get_attribute("href") if links else None
    except StaleElementReferenceException:
        return None


def _bad_generate(driver, value: str, needle: str) -> None:
    _set_text(driver, "#description textarea", value)
    driver.find_element(By.CSS_SELECTOR, "#generate-btn").click()
    _wait_text(driver, "#status", needle)


def _screenshot(driver, path: Path) -> None:
    save_page(driver, path)


def test_generate_download_try_and_bad_input(server, browser, tmp_path):
    browser.get(server)
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#generate-btn"), "the page")
    _bad_generate(browser, "", "empty")
    _bad_generate(browser, "x" * 200_000, "the limit is 2,000")
    seconds = _generate(browser, DESCRIPTION)
    assert "Made an adapter" in _text(browser, "#status")
    assert "t__2" in browser.find_element(By.TAG_NAME, "body").text  # the review expert
    (tmp_path / "timing.json").write_text(json.dumps({"click_to_adapter_s": seconds}))
    print(f"\nclick to adapter in the browser: {seconds:.2f} s")

    zip_path = tmp_path / "adapter.zip"
    with urllib.request.urlopen(_download_href(browser), timeout=30) as response:
        zip_path.write_bytes(response.read())
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp_path)
    peft_model = PeftModel.from_pretrained(tiny_llama(), str(tmp_path / "hypergen-adapter"))
    assert peft_model.peft_config["default"].r == 8

    browser.find_element(By.CSS_SELECTOR, "#try-input textarea").send_keys("The soup was cold.")
    browser.find_element(By.CSS_SELECTOR, "#try-btn").click()
    _wait_text(browser, "#try-status", "Answered with the adapter")
    for box in ("#base-answer", "#told-answer", "#adapted-answer"):  # the three-way side-by-side
        assert browser.find_elements(By.CSS_SELECTOR, f"{box} textarea"), box
    assert "nearest expert" in _text(browser, "#confidence")
    screenshot = tmp_path / "app.png"
    _screenshot(browser, screenshot)
    if os.environ.get("HYPERGEN_SCREENSHOT"):
        shutil.copy(screenshot, os.environ["HYPERGEN_SCREENSHOT"])
    assert screenshot.stat().st_size > 10_000


def test_zoo_tab_and_grow_tab(server, browser, tmp_path):
    browser.get(server)
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#generate-btn"), "the page")
    _tab(browser, "Zoo")
    _wait_text(browser, "#zoo-table", "t__5")
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#zoo-plot img"), "zoo plot")
    _tab(browser, "Grow")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(task_jsonl(bad_line=3))
    upload = browser.find_element(By.CSS_SELECTOR, "#grow-upload input[type=file]")
    upload.send_keys(str(bad))
    _wait_text(browser, "#grow-status", "bad.jsonl line 3: invalid JSON")
    good = tmp_path / "good.jsonl"
    good.write_bytes(task_jsonl())
    browser.find_element(By.CSS_SELECTOR, "#grow-upload button[aria-label='Clear']").click()
    _wait(browser, lambda d: "line 3" not in _text(d, "#grow-status"), "cleared upload")
    browser.find_element(By.CSS_SELECTOR, "#grow-upload input[type=file]").send_keys(str(good))
    _wait_text(browser, "#grow-status", "user:shout")
    browser.find_element(By.CSS_SELECTOR, "#grow-train").click()
    _wait_text(browser, "#grow-progress", "Added **user__shout**".replace("**", ""))
    assert "is now in the zoo" in _text(browser, "#grow-progress")
    _tab(browser, "Generate")
    assert _generate(browser, "Count the vowels in a word") < WAIT_S  # still serving
    # the grown expert is retrieved by the next Generate, in the same app session
    _generate(browser, "Repeat the word in capitals.")
    _wait(
        browser, lambda d: "user__shout" in d.find_element(By.TAG_NAME, "body").text, "grown expert"
    )


def _tab(driver, name: str) -> None:
    buttons = driver.find_elements(By.CSS_SELECTOR, "button[role='tab']")
    next(b for b in buttons if b.text.strip() == name).click()
