"""``python -m app.screenshot docs/app-screenshot.png``: the README's screenshot of the app with
the shipped generator, zoo and base model: the app on a loopback port, headless Chromium (Debian's
``chromium`` and ``chromium-driver``, driven by Selenium) types the default description,
generates, answers the default input three ways, and captures the whole page.
"""

from __future__ import annotations

import argparse
import base64
import socket
import time
from pathlib import Path

from app.demo import GEN_DESCRIPTION, GEN_INPUT

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_page(driver, path: Path) -> Path:
    """The whole page (beyond the window) as a PNG at ``path``, through Chromium's DevTools."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def capture(out: Path, description: str, text: str, wait_s: float = 600.0) -> Path:
    """Serve the app, drive one Generate and one Try-it, write the page as a PNG to ``out``."""
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from app.ui import create_app
    from hypergen.generator import HyperGen

    demo = create_app(HyperGen.from_pretrained())
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in [*FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(
        service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"), options=options
    )
    try:
        wait = WebDriverWait(driver, wait_s, poll_frequency=0.2)
        driver.get(f"http://127.0.0.1:{port}/")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#generate-btn"))
        driver.find_element(By.CSS_SELECTOR, "#description textarea").send_keys(description)
        driver.find_element(By.CSS_SELECTOR, "#generate-btn").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#download a[href]"))
        driver.find_element(By.CSS_SELECTOR, "#try-input textarea").send_keys(text)
        driver.find_element(By.CSS_SELECTOR, "#try-btn").click()
        wait.until(lambda d: "Answered" in d.find_element(By.CSS_SELECTOR, "#try-status").text)
        time.sleep(1.0)
        return save_page(driver, out)
    finally:
        driver.quit()
        demo.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.screenshot", description=__doc__)
    p.add_argument("out", type=Path, help="PNG to write (e.g. docs/app-screenshot.png)")
    p.add_argument("--description", default=GEN_DESCRIPTION, help="the task, in words")
    p.add_argument("--input", default=GEN_INPUT, help="the try-it input")
    args = p.parse_args(argv)
    print(f"wrote {capture(args.out, args.description, args.input)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
