"""The web dashboard in a real browser (headless Chromium) against real jobs on the private
engine: the pages show the jobs and their logs (a job printing ``<script>`` shows the text and
runs nothing), a running job's output is followed live, and Cancel pressed on a page stops
the batch's services on the engine.

``nox -s browser`` runs these; ``COVEY_SCREENSHOTS=docs nox -s browser`` also renews the
README's pictures (``docs/dashboard-*.png``).
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.engine.covey_env import CoveyEnv, free_port, wait_for

IMAGE = "covey-test/busybox:latest"
SCRIPT = "<script>alert(1)</script>"
PNG_MAX = 300_000


def serving(url: str, timeout: float = 30.0) -> None:
    def up() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    wait_for(f"the dashboard at {url}", up, timeout)


def find(driver: Any, css: str, timeout: float = 15.0) -> Any:
    """The first element ``css`` finds once there is one."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def look(d: Any) -> Any:
        found = d.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found else False

    return WebDriverWait(driver, timeout).until(look, f"no {css!r} on {driver.current_url}")


def until(driver: Any, what: str, check: Callable[[Any], Any], timeout: float = 20.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(check, what)


def no_alert(driver: Any) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        text = driver.switch_to.alert.text
    except NoAlertPresentException:
        return
    raise AssertionError(f"the page opened an alert: {text!r}")


def screenshot(driver: Any, path: Path, height: int = 1600) -> None:
    """The whole page (up to ``height`` CSS pixels) as a PNG under :data:`PNG_MAX`, through
    the DevTools protocol: beyond the window, at the page's own size."""
    bottom = driver.execute_script(
        "return document.querySelector('main').getBoundingClientRect().bottom + scrollY"
    )
    clip = {"x": 0, "y": 0, "width": 1400, "height": min(int(bottom) + 24, height), "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"format": "png", "clip": clip, "captureBeyondViewport": True},
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    if path.stat().st_size > PNG_MAX:  # a page with a picture in it: fewer colours
        from PIL import Image

        with Image.open(path) as image:
            image.convert("RGB").quantize(colors=128).save(path, optimize=True)
    assert path.stat().st_size <= PNG_MAX, (path, path.stat().st_size)


def test_the_pages_show_real_jobs_and_their_logs(
    env: CoveyEnv, browser: Any, screenshots: Path
) -> None:
    local = {"image": IMAGE, "resolve_image": False}  # the engine's own copy: no registry
    batch_file = env.batch_file(
        "nightly.yaml",
        [
            {"name": "hello", **local,
             "command": ["sh", "-c", "echo hello from covey; echo to stderr >&2"]},
            {"name": "script", **local, "command": ["sh", "-c", f"echo '{SCRIPT}'"]},
            {"name": "fails", **local, "command": ["sh", "-c", "echo failing; exit 3"]},
            {"name": "square", **local, "for_each": {"range": [1, 6]},
             "command": ["sh", "-c", "sleep 0.$COVEY_INDEX; echo $((COVEY_ITEM * COVEY_ITEM))"]},
        ],
    )  # fmt: skip
    done = env.covey("batch", "--json", "--no-progress", batch_file, timeout=120, check=False)
    assert done.returncode == 1, done.stderr  # one job fails, on purpose
    result = json.loads(done.stdout)
    batch = result["batch"]
    jobs = {j["name"]: j["id"] for j in env.query("SELECT name, id FROM jobs")}
    assert len(jobs) == 8
    # and one waiting for a supervisor, paused with a cap of its own
    later = env.batch_file(
        "weekly.yaml", [{"name": "w", "image": IMAGE, "for_each": {"range": [0, 6]}}]
    )
    waiting = env.submit("--file", later)["batch"]
    env.covey("throttle", waiting, "2")
    env.covey("pause", waiting)
    port = free_port()
    env.spawn("ui", f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    serving(base + "/")

    browser.get(base + "/")
    row = find(browser, f'a[href="/batch/{batch}"]')
    assert row.text == "nightly.yaml"
    listed = find(browser, "table.batches").text
    assert "8 / 8 ended" in listed and "0 / 6 ended" in listed
    assert "paused" in listed and "at most 2 at once" in listed
    live = find(browser, "#live")
    until(browser, "the live event stream", lambda _: "on" in live.get_attribute("class"))
    screenshot(browser, screenshots / "dashboard-batches.png", height=400)

    row.click()
    table = find(browser, "table.jobs")
    names = [a.text for a in table.find_elements("css selector", "a.name")]
    assert sorted(names) == sorted(jobs), names
    find(browser, "#timeline svg", timeout=60)  # drawn by the server, inline
    assert "succeeded" in find(browser, "#summary").text
    screenshot(browser, screenshots / "dashboard-batch.png")

    browser.get(f"{base}/job/{jobs['script']}")
    stdout = find(browser, "pre.log.stdout")
    assert stdout.text == SCRIPT  # shown as text ...
    assert browser.execute_script("return document.querySelectorAll('main script').length") == 0
    no_alert(browser)  # ... and never run

    browser.get(f"{base}/job/{jobs['hello']}")
    assert find(browser, "pre.log.stdout").text == "hello from covey"
    assert find(browser, "pre.log.stderr").text == "to stderr"
    assert "node" in find(browser, "#summary").text
    screenshot(browser, screenshots / "dashboard-job.png")

    browser.get(f"{base}/job/{jobs['fails']}")
    assert "exit 3" in find(browser, "#summary").text
    no_alert(browser)


def services_of(env: CoveyEnv, batch: str) -> list[str]:
    out = subprocess.run(
        ["docker", "-H", env.host, "service", "ls", "-q", "--filter", f"label=covey.batch={batch}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return out.split()


def test_cancel_pressed_in_the_browser_stops_the_batch_on_the_engine(
    env: CoveyEnv, browser: Any
) -> None:
    sleeper = {
        "name": "sleeper",
        "image": IMAGE,
        "for_each": {"range": [0, 4]},
        "command": ["sh", "-c", "echo started $COVEY_INDEX; echo warming up >&2; sleep 30"],
    }
    batch = env.submit("--file", env.batch_file("sleepers.yaml", [sleeper]))["batch"]
    port = free_port()
    sup = env.supervise("--ui", f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    serving(base + "/")
    wait_for("4 services", lambda: len(services_of(env, batch)) == 4, 60)
    wait_for("4 running", lambda: env.states(batch)["running"] == 4, 60)

    # a running job's output, followed live from the engine
    first = env.query("SELECT id FROM jobs WHERE batch_id=? ORDER BY seq", (batch,))[0]["id"]
    browser.get(f"{base}/job/{first}")
    until(browser, "the live stdout", lambda d: "started 0" in d.find_element(
        "css selector", "pre.log.stdout").text)  # fmt: skip
    until(browser, "the live stderr", lambda d: "warming up" in d.find_element(
        "css selector", "pre.log.stderr").text)  # fmt: skip

    browser.get(f"{base}/batch/{batch}")
    find(browser, "#actions summary.danger").click()  # "Cancel batch…": asks first
    find(browser, "#actions button.danger").click()
    until(browser, "the outcome", lambda d: "cancelled 4 job(s)" in d.find_element(
        "css selector", "main").text, timeout=40)  # fmt: skip
    no_alert(browser)
    wait_for("no service of the batch left", lambda: not services_of(env, batch), 30)
    assert env.states(batch) == {"cancelled": 4}
    until(browser, "the page to show it", lambda d: "cancelled" in d.find_element(
        "css selector", "#summary").text)  # fmt: skip
    assert sup.alive()
    code, _ = sup.term()
    assert code == 0, sup.logs()
    assert "Traceback" not in sup.logs(), sup.logs()
