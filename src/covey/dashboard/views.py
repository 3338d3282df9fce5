"""The dashboard's HTML: pure functions from store rows to text, every value escaped.

Nothing from the store reaches the page unescaped: every value goes through :func:`h` (or
:func:`attr`) where it is written, so a job named ``<script>`` or printing it is shown as
those characters. Each live part of a page is a *fragment* (``<section data-fragment=NAME>``)
that the page's script fetches again (``?fragment=NAME``) when the store changes.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

from covey.states import TERMINAL, JobState
from covey.store import AttemptRow, BatchRow, JobRow, LogRecord, StageRow, Transition
from covey.store.pages import JobLine
from covey.timeline import COLOURS as OUTCOME_COLOURS

ORDER = (
    "succeeded", "failed", "timed_out", "rejected", "lost", "cancelled", "skipped",
    "running", "pending", "retrying", "queued", "waiting",
)  # fmt: skip
COLOURS = {  # the timeline's (Okabe-Ito), and pale blue, yellow and greys for what waits
    **OUTCOME_COLOURS,
    "pending": "#A6D8F5",
    "retrying": "#F0E442",
    "queued": "#E5E5E5",
    "waiting": "#F2F2F2",
}
ENDED = frozenset(s.value for s in TERMINAL)
LOG_SHOWN = 512 * 1024  # bytes of a stream put in the page; the rest is a link away
SHOWN = ' class="shown"'


def h(value: object) -> str:
    """Text for HTML (``None`` is empty)."""
    return "" if value is None else html.escape(str(value), quote=True)


def attr(value: object) -> str:
    """A quoted attribute value."""
    return f'"{h(value)}"'


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def span(start: float | None, end: float | None, now: float | None = None) -> str:
    if start is None:
        return "-"
    stop = end if end is not None else (now if now is not None else time.time())
    return seconds(max(0.0, stop - start))


def state_badge(state: str) -> str:
    return f'<span class="state s-{h(state)}">{h(state.replace("_", " "))}</span>'


def link(path: str, text: str, cls: str = "") -> str:
    return f"<a href={attr(path)}{f' class={attr(cls)}' if cls else ''}>{h(text)}</a>"


def batch_url(batch_id: str, **query: object) -> str:
    return f"/batch/{quote(batch_id, safe='')}" + _query(query)


def job_url(job_id: str, **query: object) -> str:
    return f"/job/{quote(job_id, safe='')}" + _query(query)


def _query(query: Mapping[str, object]) -> str:
    pairs: list[tuple[str, str]] = []
    for key, value in query.items():
        if value is None or value in ("", ()):
            continue
        if isinstance(value, list | tuple):
            pairs += [(key, str(v)) for v in value]
        else:
            pairs.append((key, str(value)))
    return f"?{urlencode(pairs)}" if pairs else ""


# -- the frame of every page -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Flash:
    kind: str  # "ok" or "error"
    text: str


def page(title: str, body: str, *, store: str, flashes: Sequence[Flash] = ()) -> str:
    notes = "".join(f'<p class="flash {h(f.kind)}" role="status">{h(f.text)}</p>' for f in flashes)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{h(title)} · covey</title>"
        '<link rel="stylesheet" href="/static/app.css">'
        '<script src="/static/app.js" defer></script></head>\n'
        '<body><header><a class="brand" href="/">covey</a>'
        f'<span class="store" title="the store">{h(store)}</span>'
        '<span id="live" class="live off" title="live updates">live</span></header>\n'
        f"<main>{notes}{body}</main></body></html>\n"
    )


def section(name: str, content: str, *, key: str = "", extra: str = "") -> str:
    return (
        f"<section id={attr(name)} data-fragment={attr(name)} data-key={attr(key)}{extra}>"
        f"{content}</section>"
    )


def csrf_field(token: str) -> str:
    return f'<input type="hidden" name="csrf" value={attr(token)}>'


def button_form(action: str, label: str, csrf: str, *, cls: str = "", extra: str = "") -> str:
    return (
        f'<form method="post" action={attr(action)} class="act">{csrf_field(csrf)}{extra}'
        f'<button type="submit"{f" class={attr(cls)}" if cls else ""}>{h(label)}</button></form>'
    )


def confirm_form(action: str, label: str, question: str, csrf: str) -> str:
    """A destructive action behind a second click (no script needed)."""
    return (
        f'<details class="confirm"><summary class="danger">{h(label)}…</summary>'
        f"<p>{h(question)}</p>{button_form(action, label, csrf, cls='danger')}</details>"
    )


# -- pieces ------------------------------------------------------------------------------------


def progress_bar(counts: Mapping[str, int], total: int) -> str:
    """Jobs per state as one stacked bar (an inline SVG: no style needed)."""
    whole = max(total, sum(counts.values()), 1)
    x = 0.0
    parts = []
    for state in ORDER:
        n = counts.get(state, 0)
        if not n:
            continue
        width = 100.0 * n / whole
        parts.append(
            f'<rect x="{x:.3f}%" width="{width:.3f}%" height="100%" fill="{COLOURS[state]}">'
            f"<title>{h(state)}: {n}</title></rect>"
        )
        x += width
    ended = sum(counts.get(s, 0) for s in ENDED)
    return (
        f'<div class="progress"><svg class="bar" role="img" aria-label="{ended} of {whole}'
        f' ended" preserveAspectRatio="none" width="100%" height="12">'
        f'<rect width="100%" height="100%" fill="#F2F2F2"></rect>{"".join(parts)}</svg>'
        f'<span class="n">{ended} / {total} ended</span></div>'
    )


def state_counts(counts: Mapping[str, int], batch_id: str | None = None) -> str:
    items = []
    for state in ORDER:
        n = counts.get(state, 0)
        if not n:
            continue
        text = f"{state_badge(state)} {n}"
        if batch_id is not None:
            text = f"<a href={attr(batch_url(batch_id, state=state))}>{text}</a>"
        items.append(f"<li>{text}</li>")
    return f'<ul class="counts">{"".join(items)}</ul>'


def steering(batch: BatchRow) -> str:
    parts = []
    if batch.paused:
        parts.append('<span class="tag paused">paused</span>')
    if batch.max_concurrent is not None:
        parts.append(f'<span class="tag">at most {batch.max_concurrent} at once</span>')
    return " ".join(parts)


def pager(base: str, query: Mapping[str, object], page_no: int, pages: int) -> str:
    if pages <= 1:
        return ""

    def go(n: int, text: str) -> str:
        return link(base + _query({**query, "page": n}), text)

    parts = []
    if page_no > 1:
        parts += [go(1, "« first"), go(page_no - 1, "previous")]
    parts.append(f'<span class="at">page {page_no} of {pages}</span>')
    if page_no < pages:
        parts += [go(page_no + 1, "next"), go(pages, "last »")]
    return f'<nav class="pager">{" ".join(parts)}</nav>'


# -- the batches -------------------------------------------------------------------------------


def batches_fragment(
    batches: Sequence[BatchRow],
    counts: Mapping[str, Mapping[str, int]],
    page_no: int,
    pages: int,
) -> str:
    if not batches:
        return '<p class="empty">No batches in this store yet.</p>'
    rows = []
    for b in batches:
        c = counts.get(b.id, {})
        rows.append(
            "<tr>"
            f"<td>{link(batch_url(b.id), b.name or 'unnamed', 'name')}"
            f' <code class="id">{h(b.id)}</code></td>'
            f"<td>{when(b.created)}</td>"
            f'<td class="num">{b.total}</td>'
            f'<td class="wide">{progress_bar(c, b.total)}</td>'
            f"<td>{state_counts(c, b.id)}</td>"
            f"<td>{steering(b)}</td>"
            "</tr>"
        )
    head = "<tr><th>batch</th><th>created (UTC)</th><th>jobs</th><th>progress</th>"
    head += "<th>states</th><th>steering</th></tr>"
    return (
        f'<table class="list batches"><thead>{head}</thead><tbody>{"".join(rows)}</tbody>'
        f"</table>{pager('/', {}, page_no, pages)}"
    )


def batches_page(fragment: str, *, store: str, flashes: Sequence[Flash]) -> str:
    body = f"<h1>Batches</h1>{section('batches', fragment)}"
    return page("batches", body, store=store, flashes=flashes)


# -- one batch ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobFilter:
    states: tuple[str, ...] = ()
    name: str = ""
    page: int = 1

    def query(self) -> dict[str, object]:
        return {"state": self.states, "name": self.name}


def batch_summary(
    batch: BatchRow, counts: Mapping[str, int], queued_since: float | None, above: int
) -> str:
    waiting = ""
    if queued_since is not None:
        behind = f", behind jobs of priority {above} elsewhere" if above > 0 else ""
        waiting = (
            f"<p>oldest queued job waiting {seconds(time.time() - queued_since)}{h(behind)}</p>"
        )
    return (
        f'<p class="meta">{batch.total} jobs, created {when(batch.created)} UTC'
        f" {steering(batch)}</p>{progress_bar(counts, batch.total)}"
        f"{state_counts(counts, batch.id)}{waiting}"
    )


def batch_actions(batch: BatchRow, counts: Mapping[str, int], csrf: str) -> str:
    base = batch_url(batch.id)
    open_jobs = sum(n for s, n in counts.items() if s not in ENDED)
    retryable = sum(n for s, n in counts.items() if s in ENDED and s != "succeeded")
    forms = []
    if open_jobs:
        forms.append(
            confirm_form(
                f"{base}/cancel",
                "Cancel batch",
                f"Cancel its {open_jobs} unfinished job(s)? Running ones are stopped.",
                csrf,
            )
        )
    if retryable:
        forms.append(button_form(f"{base}/retry", f"Retry {retryable} unsuccessful", csrf))
    if batch.paused:
        forms.append(button_form(f"{base}/resume", "Resume", csrf))
    else:
        forms.append(button_form(f"{base}/pause", "Pause", csrf))
    cap = "" if batch.max_concurrent is None else str(batch.max_concurrent)
    forms.append(
        f'<form method="post" action={attr(base + "/throttle")} class="act throttle">'
        f'{csrf_field(csrf)}<label>at most <input name="cap" size="5" value={attr(cap)}'
        ' placeholder="none" aria-label="jobs at once"> at once</label>'
        '<button type="submit">Throttle</button></form>'
    )
    return f'<div class="actions">{"".join(forms)}</div>'


def stages_fragment(stages: Sequence[StageRow], per_stage: Mapping[str, Mapping[str, int]]) -> str:
    if not stages:
        return ""
    rows = []
    for stage in stages:
        counts = per_stage.get(stage.name, {})
        states = state_counts(counts)
        if stage.instances_note is not None:
            states = h(stage.instances_note)
        waits = "; ".join(
            f"{h(need)} ({h(condition)}{', inputs' if inputs else ''})"
            for need, condition, inputs in stage.needs
        )
        size = "?" if stage.size is None else str(stage.size)
        rows.append(
            f'<tr><td>{h(stage.name)}</td><td class="num">{size}</td>'
            f"<td>{states}</td><td>{waits or '-'}</td></tr>"
        )
    return (
        '<h2>Stages</h2><table class="list"><thead><tr><th>stage</th><th>jobs</th>'
        f"<th>states</th><th>waits for</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def jobs_fragment(
    batch: BatchRow, lines: Sequence[JobLine], matched: int, flt: JobFilter, pages: int
) -> str:
    if not lines:
        what = "No job matches." if flt.states or flt.name else "No jobs."
        return f'<p class="empty">{what}</p>'
    now = time.time()
    rows = []
    for j in lines:
        index = "" if j.idx is None else f"[{j.idx}]"
        rows.append(
            "<tr>"
            f'<td class="num">{j.seq}</td>'
            f"<td>{link(job_url(j.id), j.name, 'name')}</td>"
            f"<td>{h(j.stage or '')}{h(index) if j.stage else ''}</td>"
            f"<td>{state_badge(j.state)}</td>"
            f'<td class="num">{h(j.exit_code)}</td>'
            f"<td>{h(j.node or '')}</td>"
            f'<td class="num">{j.attempts}</td>'
            f"<td>{when(j.started)}</td>"
            f'<td class="num">{span(j.started, j.finished, now)}</td>'
            f'<td class="error">{h(_short(j.error))}</td>'
            "</tr>"
        )
    head = (
        "<tr><th>#</th><th>name</th><th>stage</th><th>state</th><th>exit</th><th>node</th>"
        "<th>attempts</th><th>started (UTC)</th><th>ran</th><th>why it ended</th></tr>"
    )
    return (
        f'<p class="matched">{matched} job(s)</p><table class="list jobs"><thead>{head}</thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
        f"{pager(batch_url(batch.id), flt.query(), flt.page, pages)}"
    )


def _short(text: str | None, limit: int = 120) -> str:
    if not text:
        return ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def job_filter_form(batch: BatchRow, flt: JobFilter) -> str:
    chosen = set(flt.states)
    options = ['<option value="">any state</option>']
    options += [
        f"<option value={attr(s)}{' selected' if s in chosen else ''}>{h(s)}</option>"
        for s in ORDER
    ]
    return (
        f'<form method="get" action={attr(batch_url(batch.id))} class="filters">'
        f'<label>state <select name="state">{"".join(options)}</select></label> '
        f'<label>name <input name="name" value={attr(flt.name)} size="20"'
        ' placeholder="part of a name"></label> <button type="submit">Filter</button>'
        f" {link(batch_url(batch.id), 'clear')}</form>"
    )


def batch_page(
    batch: BatchRow,
    *,
    summary: str,
    actions: str,
    stages: str,
    jobs: str,
    flt: JobFilter,
    timeline: bool,
    store: str,
    flashes: Sequence[Flash],
) -> str:
    picture = (
        '<section id="timeline" class="timeline"'
        f" data-timeline={attr(batch_url(batch.id) + '/timeline')}><h2>Timeline</h2>"
        '<div class="picture"><p class="empty">drawing…</p></div></section>'
        if timeline
        else ""
    )
    body = (
        f'<nav class="crumbs">{link("/", "batches")} &rsaquo; batch</nav>'
        f'<h1>{h(batch.name or "unnamed")} <code class="id">{h(batch.id)}</code></h1>'
        f"{section('summary', summary)}{section('actions', actions)}"
        f"{section('stages', stages)}{picture}"
        f"<h2>Jobs</h2>{job_filter_form(batch, flt)}{section('jobs', jobs)}"
    )
    return page(f"batch {batch.name or batch.id}", body, store=store, flashes=flashes)


# -- one job -----------------------------------------------------------------------------------


def job_summary(
    job: JobRow,
    attempts: Sequence[AttemptRow],
    history: Sequence[Transition],
    digest: tuple[str | None, str | None] | None,
    pulling: bool,
    shown: int,
) -> str:
    spec = job.spec
    state = "pulling" if pulling else job.state.value
    code = "" if job.exit_code is None else f", exit {job.exit_code}"
    facts = [
        ("state", f"{state_badge(state)}{h(code)}" + (f": {h(job.error)}" if job.error else "")),
        ("batch", link(batch_url(job.batch_id), job.batch_id)),
        ("image", f"<code>{h(spec.image)}</code>"),
        ("command", f"<code>{h(' '.join(spec.command)) or '(the image default)'}</code>"),
        ("node", h(job.node or "-")),
        (
            "times (UTC)",
            f"created {when(job.created)}, started {when(job.started)},"
            f" finished {when(job.finished)}",
        ),
    ]
    if digest is not None:
        facts.append(("digest", h(digest[0]) if digest[0] else f"none: {h(digest[1])}"))
    if job.stage is not None:
        facts.append(("stage", h(job.stage) + ("" if job.idx is None else f" [{job.idx}]")))
    if spec.priority:
        facts.append(("priority", str(spec.priority)))
    if spec.env:
        names = ", ".join(k for k, _ in spec.env)
        facts.append(("environment", f"{h(names)} <small>(values not shown)</small>"))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    return f'<dl class="facts">{dl}</dl>{attempts_table(job, attempts, shown)}' + (
        history_table(history)
    )


def attempts_table(job: JobRow, attempts: Sequence[AttemptRow], shown: int) -> str:
    if not attempts:
        return '<h2>Attempts</h2><p class="empty">No attempt yet.</p>'
    now = time.time()
    rows = []
    for a in attempts:
        outcome = a.outcome.value if a.outcome is not None else a.phase
        why = a.error or ("" if a.exit_code in (None, 0) else f"exit {a.exit_code}")
        logs = link(job_url(job.id, attempt=a.n) + "#logs", "logs")
        rows.append(
            f"<tr{SHOWN if a.n == shown else ''}>"
            f'<td class="num">{a.n}</td><td><code>{h(a.service)}</code></td>'
            f"<td>{h(a.node or '-')}</td><td>{state_badge(outcome)}</td>"
            f'<td class="num">{h(a.exit_code)}</td><td class="error">{h(why)}</td>'
            f"<td>{when(a.created)}</td><td>{when(a.started)}</td><td>{when(a.ended)}</td>"
            f'<td class="num">{span(a.started, a.ended, now)}</td><td>{logs}</td></tr>'
        )
    head = (
        "<tr><th>#</th><th>service</th><th>node</th><th>outcome</th><th>exit</th>"
        "<th>why it ended</th><th>admitted</th><th>started</th><th>ended</th><th>ran</th>"
        "<th></th></tr>"
    )
    return (
        f'<h2>Attempts</h2><table class="list"><thead>{head}</thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def history_table(history: Iterable[Transition]) -> str:
    rows = "".join(
        f"<tr><td>{when(t.at)}</td><td>{state_badge(t.state)}</td><td>{h(t.source)}</td>"
        f"<td>{h(t.detail or '')}</td></tr>"
        for t in history
    )
    return (
        '<details class="history"><summary>History</summary><table class="list"><thead><tr>'
        "<th>at (UTC)</th><th>state</th><th>source</th><th>detail</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></details>"
    )


def job_actions(job: JobRow, csrf: str) -> str:
    forms = []
    if not job.state.terminal:
        forms.append(
            confirm_form(
                f"{job_url(job.id)}/cancel",
                "Cancel job",
                "Cancel this job? If it runs, it is stopped.",
                csrf,
            )
        )
    elif job.state is not JobState.SUCCEEDED:
        forms.append(button_form(f"{job_url(job.id)}/retry", "Retry", csrf))
    return f'<div class="actions">{"".join(forms)}</div>'


def _stream(name: str, record: LogRecord | None, raw: str) -> str:
    if record is None:
        body, note = "", "nothing stored"
    else:
        data = record.data
        cut = len(data) > LOG_SHOWN
        shown = data[-LOG_SHOWN:] if cut else data
        body = shown.decode("utf-8", errors="replace")
        notes = [f"{record.size} bytes"]
        if record.truncated:
            notes.append(f"the store keeps the last {len(data)} (--log-cap)")
        if cut:
            notes.append(f"the last {LOG_SHOWN} shown")
        if not record.complete:
            notes.append("the engine could not give all of it")
        note = ", ".join(notes)
    return (
        f'<div class="stream"><h3>{name} <small>{h(note)}</small>'
        f" {link(raw, 'raw')}</h3>"
        f'<pre class="log {name}" data-stream="{name}">{h(body)}</pre></div>'
    )


def logs_fragment(
    job: JobRow,
    attempt: AttemptRow | None,
    records: Mapping[str, LogRecord],
    follow: str | None,
) -> str:
    """The logs of one attempt, stdout and stderr apart: from the store, or (``follow``:
    the URL of its live stream) empty boxes the page's script fills as the job writes."""
    if attempt is None:
        return '<h2>Logs</h2><p class="empty">No attempt yet: nothing to show.</p>'
    head = f"<h2>Logs <small>attempt {attempt.n}</small></h2>"
    if follow is not None:
        pres = "".join(
            f'<div class="stream"><h3>{name}</h3><pre class="log {name}"'
            f' data-stream="{name}"></pre></div>'
            for name in ("stdout", "stderr")
        )
        return (
            f'{head}<div class="logs live" data-follow={attr(follow)}>'
            '<p class="note">following the job on the engine…</p>'
            f"{pres}</div>"
        )
    if not attempt.logs_saved:
        return f'{head}<p class="empty">Not saved yet.</p>'
    base = f"{job_url(job.id)}/log/{attempt.n}"
    return (
        f'{head}<div class="logs">{_stream("stdout", records.get("stdout"), base + "/stdout")}'
        f"{_stream('stderr', records.get('stderr'), base + '/stderr')}</div>"
    )


def job_page(
    job: JobRow,
    *,
    summary: str,
    actions: str,
    logs: str,
    logs_key: str,
    shown: int,
    store: str,
    flashes: Sequence[Flash],
) -> str:
    extra = f" data-attempt={attr(shown)}" if shown else ""
    body = (
        f'<nav class="crumbs">{link("/", "batches")} &rsaquo; '
        f"{link(batch_url(job.batch_id), 'batch')} &rsaquo; job</nav>"
        f'<h1>{h(job.name)} <code class="id">{h(job.id)}</code></h1>'
        f"{section('summary', summary)}{section('actions', actions)}"
        f"{section('logs', logs, key=logs_key, extra=extra)}"
    )
    return page(f"job {job.name}", body, store=store, flashes=flashes)


def not_found(what: str, *, store: str) -> str:
    return page("not found", f"<h1>Not found</h1><p>{h(what)}</p>", store=store)
