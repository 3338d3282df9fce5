"""The dashboard's pages (GET only: nothing here changes the store): the batches, a batch,
a job, a batch's timeline, a stored log. Each live part of a page is also served alone
(``?fragment=NAME``), with a key of its content: a page that already shows it gets 204."""

from __future__ import annotations

import hashlib

import anyio
from aiohttp import web

from covey.dashboard import views
from covey.dashboard.board import DASH, TIMELINES_KEPT, Dashboard
from covey.states import JobState
from covey.store import AttemptRow, attempt_id

BATCHES_PER_PAGE = 25
JOBS_PER_PAGE = 50
TIMELINE_MAX = 2000  # jobs: a larger batch's timeline is drawn by `covey timeline`
NAME_MAX = 200
STATES = frozenset(s.value for s in JobState)


# -- helpers -----------------------------------------------------------------------------------


def _html(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/html", charset="utf-8")


def _fragment(request: web.Request, text: str, key: str | None = None) -> web.Response:
    """A live part of a page; 204 when the page already shows it (its ``key``)."""
    key = key or hashlib.sha256(text.encode()).hexdigest()[:20]
    if request.query.get("key") == key:
        return web.Response(status=204, headers={"X-Covey-Key": key})
    response = _html(text)
    response.headers["X-Covey-Key"] = key
    return response


def _page_no(request: web.Request) -> int:
    try:
        return max(1, int(request.query.get("page", "1")))
    except ValueError:
        return 1


def _pages(total: int, per_page: int) -> int:
    return max(1, -(-total // per_page))


def _store_name(dash: Dashboard) -> str:
    return str(dash.store.path)


def not_found(dash: Dashboard, what: str) -> web.Response:
    return web.Response(
        status=404,
        text=views.not_found(what, store=_store_name(dash)),
        content_type="text/html",
        charset="utf-8",
    )


async def batches(request: web.Request) -> web.StreamResponse:
    dash = request.app[DASH]
    page_no = _page_no(request)
    rows, total = await dash.store.batch_page(BATCHES_PER_PAGE, (page_no - 1) * BATCHES_PER_PAGE)
    counts = await dash.store.batch_counts([b.id for b in rows])
    fragment = views.batches_fragment(rows, counts, page_no, _pages(total, BATCHES_PER_PAGE))
    if request.query.get("fragment") == "batches":
        return _fragment(request, fragment)
    text = views.batches_page(fragment, store=_store_name(dash), flashes=dash.take_flashes())
    return _html(text)


def _job_filter(request: web.Request) -> views.JobFilter:
    states = tuple(s for s in request.query.getall("state", []) if s in STATES)
    name = request.query.get("name", "").strip()[:NAME_MAX]
    return views.JobFilter(states, name, _page_no(request))


async def batch(request: web.Request) -> web.StreamResponse:
    dash = request.app[DASH]
    store = dash.store
    found = await store.batch(request.match_info["id"])
    if found is None:
        return not_found(dash, f"no batch {request.match_info['id']!r} in this store")
    fragment = request.query.get("fragment")
    counts = await store.counts(found.id)
    csrf = dash.guard.csrf()
    parts: dict[str, str] = {}
    if fragment in (None, "summary"):
        since, above = await store.queued_since(found.id)
        parts["summary"] = views.batch_summary(found, counts, since, above)
    if fragment in (None, "actions"):
        parts["actions"] = views.batch_actions(found, counts, csrf)
    if fragment in (None, "stages"):
        stages = await store.stages(found.id)
        per_stage = await store.stage_counts(found.id) if stages else {}
        parts["stages"] = views.stages_fragment(stages, per_stage)
    flt = _job_filter(request)
    if fragment in (None, "jobs"):
        if flt.name:
            matched = await store.count_jobs(found.id, states=flt.states, name=flt.name)
        elif flt.states:
            matched = sum(counts.get(s, 0) for s in flt.states)
        else:
            matched = sum(counts.values())
        pages = _pages(matched, JOBS_PER_PAGE)
        flt = views.JobFilter(flt.states, flt.name, min(flt.page, pages))
        lines = await store.job_lines(
            found.id,
            states=flt.states,
            name=flt.name or None,
            limit=JOBS_PER_PAGE,
            offset=(flt.page - 1) * JOBS_PER_PAGE,
        )
        parts["jobs"] = views.jobs_fragment(found, lines, matched, flt, pages)
    if fragment is not None:
        if fragment not in parts:
            raise web.HTTPNotFound(text=f"covey: no fragment {fragment!r}\n")
        return _fragment(request, parts[fragment])
    text = views.batch_page(
        found,
        **parts,
        flt=flt,
        timeline=found.total <= TIMELINE_MAX,
        store=_store_name(dash),
        flashes=dash.take_flashes(),
    )
    return _html(text)


async def _timeline_html(dash: Dashboard, batch_id: str) -> str | None:
    """The whole timeline page of :mod:`covey.timeline` (``None``: nothing to draw)."""
    try:
        from covey import timeline as drawing
    except ImportError:  # pragma: no cover - the module ships with covey
        return None
    found = await dash.store.timeline(batch_id)
    if found is None or not found.spans:
        return None
    async with dash.drawing:
        data = await anyio.to_thread.run_sync(drawing.render, found, "html")
    return data.decode()


async def timeline(request: web.Request) -> web.StreamResponse:
    """The batch's timeline as an inline SVG (with a hover title per bar), drawn again only
    when its jobs' states changed or while some run."""
    dash = request.app[DASH]
    found = await dash.store.batch(request.match_info["id"])
    if found is None:
        return not_found(dash, "no such batch")
    if found.total > TIMELINE_MAX:
        return _fragment(
            request,
            f'<p class="empty">{found.total} jobs are too many to draw here:'
            f" <code>covey timeline {views.h(found.id)}</code> draws them.</p>",
        )
    counts = await dash.store.counts(found.id)
    stamp = tuple(sorted(counts.items()))
    cached = dash.timelines.get(found.id)
    if cached is not None and cached[0] == stamp and all(s in views.ENDED for s in counts):
        return _fragment(request, cached[1])
    page = await _timeline_html(dash, found.id)
    if page is None:
        text = '<p class="empty">No attempt yet: nothing to draw.</p>'
    else:
        start, end = page.find("<svg"), page.rfind("</svg>")
        svg = page[start : end + len("</svg>")] if 0 <= start < end else ""
        full = views.link(views.batch_url(found.id) + "/timeline.html", "every attempt, full size")
        text = f'<div class="svg">{svg}</div><p>{full}</p>'
    dash.timelines[found.id] = (stamp, text)
    while len(dash.timelines) > TIMELINES_KEPT:
        dash.timelines.pop(next(iter(dash.timelines)))
    return _fragment(request, text)


async def timeline_page(request: web.Request) -> web.StreamResponse:
    """``covey timeline``'s own HTML file (no script in it), as a page of its own."""
    dash = request.app[DASH]
    found = await dash.store.batch(request.match_info["id"])
    if found is None or found.total > TIMELINE_MAX:
        return not_found(dash, "no such batch, or too large to draw here")
    page = await _timeline_html(dash, found.id)
    if page is None:
        return not_found(dash, "no attempt yet: nothing to draw")
    return _html(page)


async def job(request: web.Request) -> web.StreamResponse:
    dash = request.app[DASH]
    store = dash.store
    found = await store.job(request.match_info["id"])
    if found is None:
        return not_found(dash, f"no job {request.match_info['id']!r} in this store")
    fragment = request.query.get("fragment")
    attempts = await store.attempts(found.id)
    try:
        wanted = int(request.query.get("attempt", "0"))
    except ValueError:
        wanted = 0
    shown = next((a for a in attempts if a.n == wanted), attempts[-1] if attempts else None)
    follow = _follow_url(found.id, shown)
    logs_key = "-" if shown is None else f"{shown.id}:{shown.phase}:{shown.logs_saved}:{follow}"
    if fragment == "logs":
        if request.query.get("key") == logs_key:
            return web.Response(status=204, headers={"X-Covey-Key": logs_key})
        records = await store.logs(shown.id) if shown is not None and follow is None else {}
        return _fragment(request, views.logs_fragment(found, shown, records, follow), logs_key)
    csrf = dash.guard.csrf()
    parts: dict[str, str] = {}
    if fragment in (None, "summary"):
        history = await store.transitions(found.id)
        pin = await store.pin(found.batch_id, found.spec.image)
        pulling = (
            bool(attempts) and attempts[-1].pulling is not None and found.state is JobState.PENDING
        )
        parts["summary"] = views.job_summary(
            found, attempts, history, pin, pulling, shown.n if shown else 0
        )
    if fragment in (None, "actions"):
        parts["actions"] = views.job_actions(found, csrf)
    if fragment is not None:
        if fragment not in parts:
            raise web.HTTPNotFound(text=f"covey: no fragment {fragment!r}\n")
        return _fragment(request, parts[fragment])
    records = await store.logs(shown.id) if shown is not None and follow is None else {}
    text = views.job_page(
        found,
        **parts,
        logs=views.logs_fragment(found, shown, records, follow),
        logs_key=logs_key,
        shown=shown.n if shown else 0,
        store=_store_name(dash),
        flashes=dash.take_flashes(),
    )
    return _html(text)


def _follow_url(job_id: str, attempt: AttemptRow | None) -> str | None:
    """Where the page follows this attempt's output live: while it may still write and
    the store does not have its logs yet."""
    if attempt is None or attempt.logs_saved or attempt.phase == "ended":
        return None
    return views.job_url(job_id) + f"/follow?attempt={attempt.n}"


async def raw_log(request: web.Request) -> web.StreamResponse:
    """One stored stream as plain text (``nosniff``: never taken for a page)."""
    dash = request.app[DASH]
    stream = request.match_info["stream"]
    if stream not in ("stdout", "stderr"):
        raise web.HTTPNotFound()
    try:
        n = int(request.match_info["n"])
    except ValueError:
        raise web.HTTPNotFound() from None
    records = await dash.store.logs(attempt_id(request.match_info["id"], n))
    record = records.get(stream)
    if record is None:
        raise web.HTTPNotFound(text="covey: no such log\n")
    return web.Response(body=record.data, content_type="text/plain", charset="utf-8")
