"""Headless Chromium driven through chromedriver's WebDriver HTTP API (standard library only).

`--dump-dom` and `--screenshot` cannot be used on a page that holds an MJPEG stream: Chromium
dumps at the load event (the first frame) and a virtual-time budget never expires while the
stream is open. WebDriver reads the live DOM whenever asked and screenshots on demand.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

BROWSER, DRIVER = "chromium", "chromedriver"  # Debian's `chromium` and `chromium-driver` packages


def require_chromium() -> tuple[str, str]:
    """Both binaries, or a skip with the reason; under CI (CI=true) a missing browser fails instead."""
    browser, driver = shutil.which(BROWSER), shutil.which(DRIVER)
    if browser and driver:
        return browser, driver
    reason = (f"needs {BROWSER} and {DRIVER} (Debian: apt-get install chromium chromium-driver; .ci/run installs them)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " - missing under CI")
    pytest.skip(reason)


class Chromium:
    """One headless browser session; a context manager that always stops chromedriver and Chromium."""

    def __init__(self, workdir: Path, width: int = 1000, height: int = 680, timeout: float = 30.0):
        browser, driver = require_chromium()
        self.timeout = timeout
        self._log = open(workdir / "chromedriver.log", "w+")
        self._driver = subprocess.Popen([driver, "--port=0"], stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._base = f"http://127.0.0.1:{self._wait_for_port(workdir / 'chromedriver.log')}"
            args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--mute-audio",
                    "--hide-scrollbars", f"--user-data-dir={workdir / 'chromium-profile'}", f"--window-size={width},{height}"]
            session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": {
                "browserName": "chrome", "goog:chromeOptions": {"binary": browser, "args": args}}}})
            self._session = f"/session/{session['sessionId']}"
            self._call("POST", f"{self._session}/timeouts", {"pageLoad": int(timeout * 1000), "script": 10000})
        except BaseException:
            self._stop_driver()
            raise

    def _wait_for_port(self, log: Path) -> int:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            match = re.search(r"started successfully on port (\d+)", log.read_text())
            if match:
                return int(match.group(1))
            if self._driver.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"chromedriver did not start: {log.read_text()[-2000:]}")

    def _call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self._base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout + 10) as response:
            return json.loads(response.read())["value"]

    def open(self, url: str) -> None:
        self._call("POST", f"{self._session}/url", {"url": url})

    def run(self, script: str):
        """Run `script` (a function body) in the page and return its result."""
        return self._call("POST", f"{self._session}/execute/sync", {"script": script, "args": []})

    def screenshot(self) -> bytes:
        return base64.b64decode(self._call("GET", f"{self._session}/screenshot"))

    def _stop_driver(self) -> None:
        self._driver.terminate()
        try:
            self._driver.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._driver.kill()
            self._driver.wait()
        self._log.close()

    def close(self) -> None:
        try:
            self._call("DELETE", self._session)  # quits Chromium
        finally:
            self._stop_driver()

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
