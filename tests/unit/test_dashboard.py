"""The web dashboard (covey.dashboard) against a real store, through aiohttp's test client:
the pages, escaping, the guard (token, CSRF, origin, host), that GET changes nothing, the
live events, and the actions. In a real browser: tests/browser/test_dashboard_browser.py."""

from __future__ import annotations

import re
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp.test_utils import TestClient, TestServer

from covey.dashboard import Address, Dashboard, Guard, make_app, parse_address, read_token
from covey.dashboard.security import AUTH_COOKIE, require_token
from covey.errors import CoveyError, SpecError
from covey.spec import JobSpec
from covey.states import JobState, Outcome
from covey.store import AttemptEnd, Store

SCRIPT = b"<script>alert(1)</script>\n"
TOKEN = "t0ken-for-the-dashboard-tests"
SPEC = JobSpec(image="busybox", command=("sh", "-c", "echo hi"))

Client = TestClient[Any, Any]


async def finish(
    store: Store,
    job_id: str,
    *,
    outcome: Outcome = Outcome.SUCCEEDED,
    code: int | None = 0,
    stdout: bytes = b"",
    stderr: bytes = b"",
) -> None:
    """An attempt of the job from admission to its saved logs, as the orchestrator records it."""
    job = await store.job(job_id)
    assert job is not None
    attempt = await store.begin_attempt(job, "swarm")
    assert attempt is not None
    now = time.time()
    store.attempt_running(attempt.id, job.id, "node-1", now, "poll")
    error = None if outcome is Outcome.SUCCEEDED else f"exit {code}"
    await store.finish(attempt, AttemptEnd(outcome, code, error, "node-1", now + 0.5, "poll"))
    await store.save_logs(attempt.id, stdout, stderr)
    store.mark_removed(attempt.id)
    await store.flush()


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    """A store with a batch of three: one succeeded printing a script, one failed, one queued."""
    path = tmp_path / "covey.db"
    async with Store.open(path) as store:
        specs = [SPEC.with_changes(name=n) for n in ("shows-script", "fails", "waits")]
        _, ids, _ = await store.create_batch(specs, name="demo.yaml")
        await finish(store, ids[0], stdout=SCRIPT, stderr=b"to stderr <b>bold</b>\n")
        await finish(store, ids[1], outcome=Outcome.FAILED, code=3, stdout=b"out\n")
    return path


async def batch_and_jobs(db: Path) -> tuple[str, list[str]]:
    async with Store.open(db, readonly=True) as store:
        (batch,) = await store.batches()
        return batch.id, await store.batch_job_ids(batch.id)


async def serve(db: Path, *, token: str | None = None, host: str = "127.0.0.1") -> Any:
    """An async context manager: (client, dashboard) on a store of its own."""

    class Served:
        async def __aenter__(self) -> tuple[Client, Dashboard]:
            self.store_cm = Store.open(db, lock_patience=5)
            store = await self.store_cm.__aenter__()
            self.dash = Dashboard(store, Guard(Address(host, 0), token))
            self.client: Client = TestClient(TestServer(make_app(self.dash), host="127.0.0.1"))
            await self.client.start_server()
            return self.client, self.dash

        async def __aexit__(self, *exc: object) -> None:
            await self.client.close()
            await self.store_cm.__aexit__(None, None, None)

    return Served()


def origin(client: Client) -> str:
    return str(client.make_url("/")).rstrip("/")


async def csrf_of(client: Client, path: str) -> str:
    page = await (await client.get(path)).text()
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, page
    return found.group(1)


def dump(db: Path) -> list[Any]:
    """Every row of every table: what a GET must leave as it was."""
    with closing(sqlite3.connect(db)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return [(t, sorted(map(repr, conn.execute(f"SELECT * FROM {t}")))) for t in tables]


# -- the pages ---------------------------------------------------------------------------------


async def test_the_batches_page_shows_progress_and_counts(db: Path) -> None:
    batch, _ = await batch_and_jobs(db)
    async with await serve(db) as (client, _dash):
        response = await client.get("/")
        page = await response.text()
    assert response.status == 200
    assert "demo.yaml" in page and f'href="/batch/{batch}"' in page
    assert "2 / 3 ended" in page
    for state in ("succeeded", "failed", "queued"):
        assert f'href="/batch/{batch}?state={state}"' in page


async def test_the_batch_page_has_jobs_stages_and_filters(db: Path) -> None:
    batch, ids = await batch_and_jobs(db)
    async with await serve(db) as (client, _dash):
        page = await (await client.get(f"/batch/{batch}")).text()
        assert all(f'href="/job/{j}"' in page for j in ids)
        assert 'data-timeline="/batch/' in page
        failed = await (await client.get(f"/batch/{batch}?state=failed&fragment=jobs")).text()
        assert f"/job/{ids[1]}" in failed and f"/job/{ids[0]}" not in failed
        assert "<html" not in failed  # a fragment, not a page
        named = await (await client.get(f"/batch/{batch}?name=SCRIPT&fragment=jobs")).text()
        assert f"/job/{ids[0]}" in named and "1 job(s)" in named
        response = await client.get(f"/batch/{batch}?fragment=jobs")
        key = response.headers["X-Covey-Key"]
        again = await client.get(f"/batch/{batch}?fragment=jobs&key={key}")
        assert again.status == 204  # unchanged: the page keeps what it shows
        assert (await client.get("/batch/nope")).status == 404


async def test_many_jobs_are_paged(tmp_path: Path) -> None:
    path = tmp_path / "covey.db"
    async with Store.open(path) as store:
        specs = [SPEC.with_changes(name=f"job-{i:03d}") for i in range(120)]
        batch, _ids, _ = await store.create_batch(specs, name="many")
    async with await serve(path) as (client, _dash):
        first = await (await client.get(f"/batch/{batch}?fragment=jobs")).text()
        last = await (await client.get(f"/batch/{batch}?fragment=jobs&page=3")).text()
        beyond = await (await client.get(f"/batch/{batch}?fragment=jobs&page=99")).text()
    assert "job-000" in first and "job-049" in first and "job-050" not in first
    assert "page 1 of 3" in first
    assert "job-100" in last and "job-119" in last and "job-099" not in last
    assert beyond == last  # a page past the end is the last one


async def test_a_job_page_shows_attempts_and_both_streams_escaped(db: Path) -> None:
    _, ids = await batch_and_jobs(db)
    async with await serve(db) as (client, _dash):
        page = await (await client.get(f"/job/{ids[0]}")).text()
        raw = await client.get(f"/job/{ids[0]}/log/1/stdout")
        raw_body = await raw.read()
        failed = await (await client.get(f"/job/{ids[1]}")).text()
    assert "<script>alert" not in page
    assert '<pre class="log stdout" data-stream="stdout">&lt;script&gt;alert(1)&lt;/script&gt;' in (
        page
    )
    assert '<pre class="log stderr" data-stream="stderr">to stderr &lt;b&gt;bold&lt;/b&gt;' in page
    assert "node-1" in page and "attempts" in page.lower()
    assert raw_body == SCRIPT
    assert raw.headers["Content-Type"].startswith("text/plain")
    assert raw.headers["X-Content-Type-Options"] == "nosniff"
    assert "exit 3" in failed and "Retry" in failed


async def test_every_response_carries_the_security_headers(db: Path) -> None:
    async with await serve(db) as (client, _dash):
        for path in ("/", "/nope", "/static/app.js", "/batch/nope"):
            response = await client.get(path)
            headers = response.headers
            policy = dict(
                d.strip().split(" ", 1) for d in headers["Content-Security-Policy"].split(";")
            )
            assert policy["script-src"] == "'self'", path  # no inline script, no eval
            assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Referrer-Policy"] == "no-referrer"
            assert headers["X-Frame-Options"] == "DENY"
        page = await (await client.get("/")).text()
    assert "<script>" not in page and '<script src="/static/app.js" defer>' in page


# -- the guard ---------------------------------------------------------------------------------


async def test_a_post_without_the_csrf_token_or_from_elsewhere_is_refused(db: Path) -> None:
    batch, _ = await batch_and_jobs(db)
    async with await serve(db) as (client, dash):
        token = await csrf_of(client, f"/batch/{batch}")
        here = {"Origin": origin(client)}
        url = f"/batch/{batch}/pause"
        no_token = await client.post(url, data={}, headers=here, allow_redirects=False)
        wrong = await client.post(url, data={"csrf": "0" * 64}, headers=here)
        elsewhere = await client.post(
            url, data={"csrf": token}, headers={"Origin": "http://evil.example"}
        )
        nowhere = await client.post(url, data={"csrf": token})  # no Origin, no Referer
        null = await client.post(url, data={"csrf": token}, headers={"Origin": "null"})
        framed = await client.post(  # e.g. a sandboxed frame of another site
            url, data={"csrf": token}, headers={"Origin": "null", "Sec-Fetch-Site": "cross-site"}
        )
        refused = (no_token, wrong, elsewhere, nowhere, null, framed)
        assert [r.status for r in refused] == [403] * len(refused)
        assert not (await dash.store.batch(batch)).paused  # type: ignore[union-attr]
        ok = await client.post(url, data={"csrf": token}, headers=here, allow_redirects=False)
        assert ok.status == 303 and ok.headers["Location"] == f"/batch/{batch}"
        assert (await dash.store.batch(batch)).paused  # type: ignore[union-attr]
        page = await (await client.get(f"/batch/{batch}")).text()
        assert f"batch {batch}: paused" in page  # the action's outcome, once
        assert "paused" in (await (await client.get(f"/batch/{batch}")).text())
        assert f"batch {batch}: paused" not in (await (await client.get(f"/batch/{batch}")).text())
        # a plain form (no script) under no-referrer: Origin null, and the browser's word
        token = await csrf_of(client, f"/batch/{batch}")
        form = await client.post(
            f"/batch/{batch}/resume",
            data={"csrf": token},
            headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"},
            allow_redirects=False,
        )
        assert form.status == 303
        assert not (await dash.store.batch(batch)).paused  # type: ignore[union-attr]


async def test_a_csrf_token_is_good_for_its_own_session_only(db: Path) -> None:
    batch, _ = await batch_and_jobs(db)
    async with await serve(db) as (client, _dash), await serve(db) as (other, _):
        theirs = await csrf_of(other, f"/batch/{batch}")
        await client.get("/")  # a session of its own
        response = await client.post(
            f"/batch/{batch}/pause", data={"csrf": theirs}, headers={"Origin": origin(client)}
        )
    assert response.status == 403


async def test_a_token_is_required_when_bound_beyond_loopback() -> None:
    with pytest.raises(CoveyError, match="needs a token"):
        require_token(parse_address("0.0.0.0:8080"), None)
    with pytest.raises(CoveyError, match="needs a token"):
        require_token(parse_address("example.com:8080"), None)
    require_token(parse_address("8080"), None)
    require_token(parse_address("[::1]:8080"), None)
    require_token(parse_address("localhost:8080"), None)
    require_token(parse_address("0.0.0.0:8080"), TOKEN)


def test_addresses_and_tokens_are_parsed(tmp_path: Path) -> None:
    assert parse_address("8080") == Address("127.0.0.1", 8080)
    assert parse_address(":8080") == Address("127.0.0.1", 8080)
    assert parse_address("0.0.0.0:80") == Address("0.0.0.0", 80)
    assert parse_address("[::1]:9000") == Address("::1", 9000)
    assert parse_address("[::1]:9000").url == "http://[::1]:9000/"
    for bad in ("", "host:", "host:port", "::1:80", "[::1]80", "[nope]:80", "99999"):
        with pytest.raises(SpecError):
            parse_address(bad)
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    assert read_token(None, secret, {}) == TOKEN
    assert read_token("x" * 20, secret, {"COVEY_UI_TOKEN": TOKEN}) == "x" * 20
    assert read_token(None, None, {"COVEY_UI_TOKEN": TOKEN}) == TOKEN
    assert read_token(None, None, {}) is None
    with pytest.raises(SpecError, match="at least 16"):
        read_token("short", None, {})
    with pytest.raises(SpecError, match="cannot read"):
        read_token(None, tmp_path / "missing", {})


def test_covey_ui_refuses_to_listen_beyond_loopback_without_a_token(
    covey_cli: Any, tmp_path: Path
) -> None:
    done = covey_cli("--db", str(tmp_path / "c.db"), "ui", "0.0.0.0:0", env={"COVEY_UI_TOKEN": ""})
    assert done.returncode == 125
    assert done.stderr.count("\n") == 1 and "needs a token" in done.stderr, done.stderr
    assert not (tmp_path / "c.db").exists()  # refused before anything was opened


async def test_with_a_token_every_request_needs_it(db: Path) -> None:
    async with await serve(db, token=TOKEN, host="0.0.0.0") as (client, _dash):
        assert (await client.get("/")).status == 401
        assert (await client.get("/events")).status == 401
        assert (await client.get("/?token=wrong-token-wrong-token")).status == 401
        bearer = await client.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
        assert bearer.status == 200
        login = await client.get(f"/?token={TOKEN}&page=1", allow_redirects=False)
        assert login.status == 303 and login.headers["Location"] == "/?page=1"
        cookie = login.cookies[AUTH_COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        assert TOKEN not in cookie.value  # an HMAC of it
        assert (await client.get("/")).status == 200  # the cookie now


async def test_without_a_token_only_loopback_host_names_are_served(db: Path) -> None:
    async with await serve(db) as (client, _dash):
        rebound = await client.get("/", headers={"Host": "evil.example:8080"})
        assert rebound.status == 421
        assert (await client.get("/", headers={"Host": "localhost:1"})).status == 200


async def test_a_get_never_changes_the_store(db: Path) -> None:
    batch, ids = await batch_and_jobs(db)
    before = dump(db)
    async with await serve(db) as (client, _dash):
        for path in (
            "/",
            f"/batch/{batch}",
            f"/batch/{batch}?state=failed&name=x&page=2",
            f"/batch/{batch}/timeline",
            f"/job/{ids[0]}",
            f"/job/{ids[2]}",
            f"/job/{ids[0]}/log/1/stderr",
            f"/batch/{batch}/cancel",
            f"/batch/{batch}/pause",
            f"/job/{ids[2]}/cancel",
            f"/job/{ids[1]}/retry",
        ):
            response = await client.get(path)
            assert response.status in (200, 405), path
    assert dump(db) == before


# -- live --------------------------------------------------------------------------------------


async def read_until(response: Any, needle: bytes, timeout: float) -> bytes:
    seen = b""
    with anyio.fail_after(timeout):
        while needle not in seen:
            chunk = await response.content.readany()
            assert chunk, seen
            seen += chunk
    return seen


async def test_events_tell_a_page_when_the_store_changed(db: Path) -> None:
    batch, _ = await batch_and_jobs(db)
    async with await serve(db) as (client, _dash):
        response = await client.get("/events")
        assert response.headers["Content-Type"].startswith("text/event-stream")
        await read_until(response, b"retry:", 5)
        async with Store.open(db) as other:  # another connection, as a supervisor's
            await other.steer(batch, paused=True)
        seen = await read_until(response, b"event: change", 5)
        response.close()
    assert b"data: 1" in seen


async def test_a_running_job_without_an_engine_is_shown_once_saved(
    db: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    _, ids = await batch_and_jobs(db)
    async with Store.open(db) as other:
        job = await other.job(ids[2])
        assert job is not None
        attempt = await other.begin_attempt(job, "swarm")
        assert attempt is not None
        other.attempt_running(attempt.id, job.id, "node-1", time.time(), "poll")
        await other.flush()
        async with await serve(db) as (client, _dash):
            page = await (await client.get(f"/job/{ids[2]}")).text()
            assert f'data-follow="/job/{ids[2]}/follow?attempt=1"' in page
            response = await client.get(f"/job/{ids[2]}/follow?attempt=1")
            seen = await read_until(response, b"cannot follow it live", 10)
            assert seen.startswith(b"event: reset")
            end = AttemptEnd(Outcome.SUCCEEDED, 0, None, "node-1", time.time(), "poll")
            await other.finish(attempt, end)
            await other.save_logs(attempt.id, SCRIPT, b"")
            await read_until(response, b"event: done", 10)
            response.close()
            logs = await (await client.get(f"/job/{ids[2]}?fragment=logs")).text()
    assert "data-follow" not in logs and "&lt;script&gt;alert(1)" in logs


# -- actions -----------------------------------------------------------------------------------


async def post(client: Client, url: str, page: str, **form: str) -> Any:
    token = await csrf_of(client, page)
    return await client.post(
        url,
        data={"csrf": token, **form},
        headers={"Origin": origin(client), "Accept": "application/json"},
    )


async def test_the_actions_are_covey_s_own(db: Path) -> None:
    batch, ids = await batch_and_jobs(db)
    async with await serve(db) as (client, dash):
        store = dash.store
        page = f"/batch/{batch}"
        done = await post(client, f"{page}/throttle", page, cap="2")
        assert (await done.json()) == {"location": page}
        assert (await store.batch(batch)).max_concurrent == 2  # type: ignore[union-attr]
        await post(client, f"{page}/throttle", page, cap="lots")
        shown = await (await client.get(page)).text()
        assert "is not a number of jobs" in shown  # the CLI's own words
        await post(client, f"{page}/throttle", page, cap="")
        assert (await store.batch(batch)).max_concurrent is None  # type: ignore[union-attr]
        await post(client, f"{page}/pause", page)
        await post(client, f"{page}/resume", page)
        assert not (await store.batch(batch)).paused  # type: ignore[union-attr]
        await post(client, f"/job/{ids[1]}/retry", f"/job/{ids[1]}")
        assert (await store.job(ids[1])).state is JobState.QUEUED  # type: ignore[union-attr]
        await post(client, f"{page}/cancel", page)  # nothing runs: no engine needed
        states = {j.id: j.state for j in await store.jobs_by_id(ids)}
        assert states == {
            ids[0]: JobState.SUCCEEDED,
            ids[1]: JobState.CANCELLED,
            ids[2]: JobState.CANCELLED,
        }
        shown = await (await client.get(page)).text()
        assert "cancelled 2 job(s); 1 had ended or are ending on their own" in shown


async def test_the_timeline_is_an_inline_svg_without_script(db: Path) -> None:
    batch, ids = await batch_and_jobs(db)
    async with Store.open(db) as store:
        await store.request_cancel([ids[2]])  # all ended: the picture no longer changes
    async with await serve(db) as (client, _dash):
        response = await client.get(f"/batch/{batch}/timeline")
        text = await response.text()
        again = await client.get(f"/batch/{batch}/timeline?key={response.headers['X-Covey-Key']}")
        full = await client.get(f"/batch/{batch}/timeline.html")
        whole = await full.text()
    assert response.status == 200 and text.startswith('<div class="svg"><svg')
    assert "<script" not in text.lower() and "</svg></div>" in text
    assert again.status == 204  # drawn once: an ended batch does not change
    assert full.status == 200 and "<svg" in whole and "<script" not in whole.lower()


class FakeBackend:
    """A running job's output as the engine would stream it: one piece per stream, then
    more of stdout until the page goes."""

    async def follow_logs(self, attempt: object, *, follow: bool = True) -> Any:
        yield 1, b"<script>alert(1)</script>\n"
        yield 2, "\u00e9".encode()[:1]  # half a character: the decoder waits for the rest
        yield 2, "\u00e9".encode()[1:] + b" on stderr\n"
        while True:
            await anyio.sleep(0.05)
            yield 1, b"tick\n"


async def test_a_running_job_s_output_is_streamed_as_text_until_the_page_goes(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, ids = await batch_and_jobs(db)
    async with Store.open(db) as other:
        job = await other.job(ids[2])
        assert job is not None
        attempt = await other.begin_attempt(job, "swarm")
        assert attempt is not None
        await other.flush()
        async with await serve(db) as (client, dash):

            async def fake() -> Any:
                return FakeBackend()

            dash.engine.backend = fake  # type: ignore[method-assign]
            response = await client.get(f"/job/{ids[2]}/follow?attempt=1")
            seen = await read_until(response, b"tick", 10)
            response.close()  # the page is closed while the job still writes
            await anyio.sleep(0.5)
    assert b'"stream": "stdout", "text": "<script>alert(1)</script>\\n"' in seen
    assert b'"stream": "stderr", "text": "\\u00e9 on stderr\\n"' in seen
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


async def test_a_cancel_without_an_engine_says_what_it_did(
    db: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    _, ids = await batch_and_jobs(db)
    async with Store.open(db) as other:
        job = await other.job(ids[2])
        assert job is not None
        attempt = await other.begin_attempt(job, "swarm")
        assert attempt is not None
        other.attempt_running(attempt.id, job.id, "node-1", time.time(), "poll")
        await other.flush()
        async with await serve(db) as (client, dash):
            page = f"/job/{ids[2]}"
            await post(client, f"{page}/cancel", page)
            shown = await (await client.get(page)).text()
            running = await dash.store.job(ids[2])
    assert "the cancel is recorded" in shown and "flash error" in shown
    assert running is not None and running.cancel_requested  # a supervisor stops it
