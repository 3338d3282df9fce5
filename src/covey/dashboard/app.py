"""The dashboard's web application (aiohttp, which covey already has through aiodocker).

Pages are rendered on the server (:mod:`covey.dashboard.views`); one small script
(``static/app.js``) keeps them live. The server watches the store's ``PRAGMA data_version``
every half second and tells every open page through ``/events`` (server-sent events) when
another connection committed; a page then fetches its live fragments again, each only when
its content changed. A running job's output comes from the engine through
``/job/ID/follow`` as it is written, until the store has its logs.

Actions (POST only: the guard checked their origin and CSRF token) are covey's own
(:mod:`covey.commands`): a cancel from a page is ``covey cancel``. :mod:`~covey.dashboard.board`
holds the state, :mod:`~covey.dashboard.pages` and :mod:`~covey.dashboard.live` the handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

from aiohttp import web

from covey import commands
from covey.dashboard import live, pages, views
from covey.dashboard.board import DASH, Dashboard, EngineLink
from covey.dashboard.pages import not_found
from covey.dashboard.security import security_headers
from covey.errors import CoveyError, EngineError


def _static(name: str) -> bytes:
    return resources.files("covey.dashboard").joinpath("static", name).read_bytes()


# -- actions (POST only; the guard checked origin and CSRF token) ----------------------------------


async def _batch_action(request: web.Request, name: str) -> web.StreamResponse:
    dash = request.app[DASH]
    store = dash.store
    found = await store.batch(request.match_info["id"])
    if found is None:
        return not_found(dash, "no such batch")
    form = await request.post()
    cap = str(form.get("cap", "") or "none")
    ids = [found.id]
    actions: dict[str, Callable[[], Awaitable[str]]] = {
        "cancel": lambda: _cancel(dash, ids),
        "retry": lambda: commands.retry_refs(store, ids),
        "pause": lambda: commands.pause_batch(store, found.id, True),
        "resume": lambda: commands.pause_batch(store, found.id, False),
        "throttle": lambda: commands.throttle_batch(store, found.id, commands.parse_cap(cap)),
    }
    await dash.act(actions[name])
    return _after(request, views.batch_url(found.id))


async def _job_action(request: web.Request, name: str) -> web.StreamResponse:
    dash = request.app[DASH]
    store = dash.store
    found = await store.job(request.match_info["id"])
    if found is None:
        return not_found(dash, "no such job")
    ids = [found.id]
    if name == "cancel":
        await dash.act(lambda: _cancel(dash, ids))
    else:
        await dash.act(lambda: commands.retry_refs(store, ids))
    return _after(request, views.job_url(found.id))


async def _cancel(dash: Dashboard, ids: list[str]) -> str:
    """``covey cancel``; without an engine to stop what runs, say what was done."""
    try:
        return await commands.cancel_refs(dash.store, ids, dash.engine.opener)
    except EngineError as exc:
        raise CoveyError(
            f"the cancel is recorded (nothing more of it starts), but what runs could not be"
            f" stopped from here: {exc}; the covey process that runs it (covey supervise)"
            " stops it within a second"
        ) from exc


def _after(request: web.Request, location: str) -> web.StreamResponse:
    """Where the browser goes next: the page's script asks for JSON (and goes there
    itself); a plain form gets a redirect."""
    if "application/json" in request.headers.get("Accept", ""):
        return web.json_response({"location": location})
    raise web.HTTPSeeOther(location)


def _post(name: str, act: Callable[[web.Request, str], Awaitable[web.StreamResponse]]) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await act(request, name)

    return handler


# -- the application ---------------------------------------------------------------------------


def _asset(name: str, content_type: str) -> Any:
    body = _static(name)

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type=content_type, charset="utf-8")

    return handler


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    dash = app[DASH]
    watcher = asyncio.create_task(dash.watch())
    yield
    dash.close()
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    await dash.settle()
    await dash.engine.close()


async def _shutdown(app: web.Application) -> None:
    app[DASH].close()  # open event streams end now, not at the shutdown timeout


def make_app(dash: Dashboard) -> web.Application:
    app = web.Application(middlewares=[dash.guard.middleware], client_max_size=64 * 1024)
    app[DASH] = dash
    app.on_response_prepare.append(security_headers)
    app.on_shutdown.append(_shutdown)
    app.cleanup_ctx.append(_lifetime)
    r = app.router
    r.add_get("/", pages.batches)
    r.add_get("/events", live.events)
    r.add_get("/static/app.js", _asset("app.js", "text/javascript"))
    r.add_get("/static/app.css", _asset("app.css", "text/css"))
    r.add_get("/batch/{id}", pages.batch)
    r.add_get("/batch/{id}/timeline", pages.timeline)
    r.add_get("/batch/{id}/timeline.html", pages.timeline_page)
    r.add_get("/job/{id}", pages.job)
    r.add_get("/job/{id}/follow", live.follow)
    r.add_get("/job/{id}/log/{n}/{stream}", pages.raw_log)
    for name in ("cancel", "retry", "pause", "resume", "throttle"):
        r.add_post(f"/batch/{{id}}/{name}", _post(name, _batch_action))
    for name in ("cancel", "retry"):
        r.add_post(f"/job/{{id}}/{name}", _post(name, _job_action))
    return app


__all__: Sequence[str] = ["DASH", "Dashboard", "EngineLink", "make_app"]
