"""Fixtures of the browser tests: Debian's headless Chromium driven through its
chromedriver (selenium), and a store of one test on the shared private engine.

These run in ``nox -s browser`` (which installs chromium, chromium-driver and selenium and
sets COVEY_BROWSER_TESTS=1); elsewhere they are skipped.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.engine.conftest import env  # noqa: F401  (the engine tests' fixture, shared)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("COVEY_BROWSER_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="a real browser: run by `nox -s browser`")
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(skip)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A fresh headless Chromium (its own profile), for one test."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            pytest.fail(f"{path} is missing: `nox -s browser` installs chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.unhandled_prompt_behavior = "ignore"  # an alert must stay, for the test to see it
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where the pages' pictures go: ``COVEY_SCREENSHOTS`` (``docs`` for the README's),
    else this test's own directory."""
    where = Path(os.environ.get("COVEY_SCREENSHOTS") or tmp_path / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where
