"""``covey timeline``: a picture of where a batch's time went.

One lane per node (and ``unplaced`` for attempts that never got one), one bar per attempt
from its admission to its end, packed into sub-rows so that none overlap: pending
(admitted, not running yet; dotted while its node pulls the image) drawn pale, running in
full, coloured by how it ended; its wait for admission a thin line before it where the
sub-row has room. Retries are hatched, lost attempts cross-hatched, a pipeline stage
underlines its bars in a colour of its own and has a strip at the top; a ``queue`` lane
shows how many jobs waited over time. A lane of more bars than can be seen one by one
(:func:`fit`) shows how many attempts were in progress over time instead, and the title
says so.

Pure but for :func:`command`: a :class:`~covey.store.timeline.BatchTimeline` in, PNG, SVG
or HTML bytes out, drawn with matplotlib (imported only then: the CLI starts no slower). The
HTML is one file that fetches nothing: the SVG inline, an invisible rectangle over each bar
whose ``<title>`` the browser shows on hover (no script), and a table of every attempt.
"""

from __future__ import annotations

import heapq
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from covey.errors import SpecError, StoreError
from covey.store.timeline import BatchTimeline, Span, Wait

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FORMATS = ("html", "png", "svg")
COLOURS = {  # Okabe-Ito, told apart with colour-blindness too
    "succeeded": "#009E73",
    "failed": "#D55E00",
    "timed_out": "#E69F00",
    "rejected": "#CC79A7",
    "lost": "#4B2991",
    "cancelled": "#8C8C8C",
    "skipped": "#C8C8C8",
    "running": "#56B4E9",
}
STAGE_COLOURS = ("#0072B2", "#A6761D", "#7F3C8D", "#000000", "#F0E442", "#11A579", "#E7298A")
QUEUE_COLOUR, NEEDS_COLOUR = "#7F7F7F", "#D9D9D9"
PALE = "#99D8C7"  # pending, in the legend and in counted lanes: a succeeded bar's pale part
UNPLACED = "unplaced"

DPI = 100
WIDTH, LEFT, RIGHT, AXIS = 14.0, 1.6, 0.3, 0.55  # inches (AXIS: the time axis, below)
LINE, LEGEND_COLUMNS = 0.2, 6  # a line of the title or of the legend, in inches
PLOT_PX = (WIDTH - LEFT - RIGHT) * DPI
ROW_PX, MIN_ROW_PX = 18.0, 3.0  # a sub-row of bars; thinner than this: counted instead
BARS_PX = 2400.0  # at most this tall, all lanes of bars together
COUNT_PX, QUEUE_PX, STAGE_PX, LANE_PX = 70.0, 50.0, 14.0, 30.0  # LANE_PX: the least
COUNT_OVER = 2000  # attempts in one lane: more are counted, not drawn one by one


@dataclass(frozen=True, slots=True)
class Lane:
    """A node's attempts; each in a sub-row of its own (``rows``) so that none overlap."""

    name: str
    spans: tuple[Span, ...]
    rows: tuple[int, ...]
    queue: tuple[bool, ...]  # whether its wait for admission fits in its sub-row
    height: int  # sub-rows
    counted: bool = False  # drawn as counts over time, not bar by bar


def end_of(span: Span, now: float) -> float:
    return span.ended if span.ended is not None else now


def pack(spans: Sequence[Span], min_width: float, now: float) -> tuple[list[int], list[bool], int]:
    """Each span (in order of admission) into the sub-row that has been free longest, or a
    new one: ``(rows, whether its queue wait fits there too, sub-rows)``."""
    free: list[tuple[float, int]] = []  # (free from, row)
    rows: list[int] = []
    queue: list[bool] = []
    height = 0
    for span in spans:
        if free and free[0][0] <= span.created:
            since, row = heapq.heappop(free)
            queue.append(since <= span.queued)
        else:
            row, height = height, height + 1
            queue.append(True)
        rows.append(row)
        heapq.heappush(free, (max(end_of(span, now), span.created + min_width), row))
    return rows, queue, height


def lanes(timeline: BatchTimeline, min_width: float) -> list[Lane]:
    """One lane per node (by name), then ``unplaced``; sub-rows packed, none counted yet."""
    by_node: dict[str, list[Span]] = {}
    for span in timeline.spans:
        by_node.setdefault(span.node or UNPLACED, []).append(span)
    names = sorted(n for n in by_node if n != UNPLACED) + ([UNPLACED] * (UNPLACED in by_node))
    found = []
    for name in names:
        spans = sorted(by_node[name], key=lambda s: s.created)
        rows, queue, height = pack(spans, min_width, timeline.now)
        found.append(Lane(name, tuple(spans), tuple(rows), tuple(queue), height))
    return found


def fit(found: Sequence[Lane]) -> tuple[list[Lane], float]:
    """Which lanes are counted, and the height of a sub-row: a lane of more than
    :data:`COUNT_OVER` attempts, then the tallest ones while the bars would be thinner
    than :data:`MIN_ROW_PX` in :data:`BARS_PX`."""
    result = [replace(lane, counted=len(lane.spans) > COUNT_OVER) for lane in found]
    while True:
        bars = [lane for lane in result if not lane.counted]
        rows = sum(lane.height for lane in bars)
        budget = BARS_PX - COUNT_PX * (len(result) - len(bars))
        if not bars or rows * MIN_ROW_PX <= budget:
            return result, min(ROW_PX, budget / rows) if rows else ROW_PX
        tallest = max(bars, key=lambda lane: lane.height)
        result = [replace(lane, counted=True) if lane is tallest else lane for lane in result]


def outcome_of(span: Span) -> str:
    """Its colour's name in :data:`COLOURS`: how it ended, or ``running`` (not ended yet)."""
    if span.outcome is None:
        return "running"
    return span.outcome if span.outcome in COLOURS else "cancelled"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def durations(span: Span, now: float) -> tuple[float, float | None, float | None]:
    """(queued, pending, running) seconds; ``None``: it never was."""
    queued = span.created - span.queued
    if span.n == 0:
        return queued, None, None
    pending = (span.started if span.started is not None else end_of(span, now)) - span.created
    running = end_of(span, now) - span.started if span.started is not None else None
    return queued, pending, running


def details(span: Span, now: float) -> str:
    """What hovering a bar shows: job, index, stage, attempt, node, exit code, durations."""
    queued, pending, running = durations(span, now)
    state = span.outcome or ("running" if span.started is not None else "pending")
    if span.pulling is not None and span.started is None and span.ended is None:
        state = f"pulling the image since {_seconds(now - span.pulling)}"
    lines = [
        f"job {span.job_id} {span.name}"
        + (f", index {span.index}" if span.index is not None else "")
        + (f", stage {span.stage}" if span.stage else ""),
        (f"attempt {span.n}: " if span.n else "no attempt: ")
        + state
        + (f", exit {span.exit_code}" if span.exit_code is not None else ""),
        f"node {span.node or '-'}",
        f"queued {_seconds(queued)}, pending {_seconds(pending)}, running {_seconds(running)}",
    ]
    if span.error:
        lines.append(span.error)
    return "\n".join(lines)


def in_progress(
    intervals: Sequence[tuple[float, float]], x0: float, width: float, bins: int
) -> list[float]:
    """How many of the intervals were in progress, on average, in each of ``bins`` equal
    slices of ``[x0, x0 + width]``: the time they spent there over the slice's length."""
    import numpy as np

    if not intervals:
        return [0.0] * bins
    spans = np.asarray(intervals, dtype=float)
    starts, ends = np.sort(spans[:, 0]), np.sort(np.maximum(spans[:, 1], spans[:, 0]))
    edges = np.linspace(x0, x0 + width, bins + 1)

    def lived(points: Any, at: Any) -> Any:  # sum over points p < at of (at - p)
        before = np.searchsorted(points, at)
        sums = np.r_[0.0, np.cumsum(points)]
        return before * at - sums[before]

    total = lived(starts, edges) - lived(ends, edges)  # time spent in progress before each edge
    return [float(n) for n in np.diff(total) / (width / bins)]


@dataclass(frozen=True, slots=True)
class Frame:
    """Where everything goes: the time axis (seconds since the batch was created) and the
    lanes, top down, in units of pixels."""

    t0: float
    last: float  # the latest end (or now, while something runs)
    lanes: tuple[Lane, ...]
    row_px: float
    stages: tuple[str, ...]

    @property
    def width(self) -> float:
        return max(self.last - self.t0, 1e-3) * 1.02

    @property
    def pixel(self) -> float:
        """One pixel of the time axis, in seconds: no bar is drawn thinner."""
        return self.width / PLOT_PX

    def size(self, lane: Lane) -> float:
        return COUNT_PX if lane.counted else max(lane.height * self.row_px, LANE_PX)

    @property
    def stages_px(self) -> float:
        return STAGE_PX * len(self.stages) + 6 if self.stages else 0.0

    @property
    def total(self) -> float:
        return QUEUE_PX + self.stages_px + sum(self.size(lane) for lane in self.lanes)


def frame(timeline: BatchTimeline) -> Frame:
    t0 = timeline.batch.created
    last = max((end_of(s, timeline.now) for s in timeline.spans), default=t0)
    pixel = max(last - t0, 1e-3) * 1.02 / PLOT_PX
    found, row_px = fit(lanes(timeline, pixel))
    return Frame(t0, last, tuple(found), row_px, timeline.stages[:12])


@dataclass(frozen=True, slots=True)
class _Picture:
    """A drawn figure and where each bar landed (for the HTML's hover rectangles)."""

    figure: Figure
    axes: Axes
    hits: list[tuple[Span, float, float, float, float]]  # span, x0, x1, y0, y1 (data)
    title: str
    now: float


def draw(timeline: BatchTimeline) -> _Picture:
    """The figure: a title, the queue, the stages, a lane per node, a legend."""
    from matplotlib.figure import Figure

    f = frame(timeline)
    stage_colour = {n: STAGE_COLOURS[i % len(STAGE_COLOURS)] for i, n in enumerate(f.stages)}
    title = _title(timeline, f)
    handles = _legend(timeline, stage_colour)
    top = 0.25 + LINE * (title.count("\n") + 1)
    bottom = AXIS + LINE * (-(-len(handles) // LEGEND_COLUMNS)) + 0.1
    height = f.total / DPI + top + bottom
    figure = Figure(figsize=(WIDTH, height), dpi=DPI)
    figure.suptitle(title, x=0.01, y=1 - 0.12 / height, ha="left", va="top", fontsize=10)
    axes = figure.add_axes(
        (LEFT / WIDTH, bottom / height, 1 - (LEFT + RIGHT) / WIDTH, f.total / DPI / height)
    )
    axes.set_xlim(0, f.width)
    axes.set_ylim(f.total, 0)
    axes.set_xlabel("seconds since the batch was created")
    axes.grid(axis="x", color="#E5E5E5", linewidth=0.6)
    axes.set_axisbelow(True)
    axes.tick_params(axis="y", length=0)
    ticks = [_queue_lane(axes, timeline.waits, f, timeline.now)]
    if f.stages:
        ticks.append(_stage_lane(axes, timeline.spans, f, stage_colour, timeline.now))
    bars = _Bars(stage_colour, f.pixel, timeline.now)
    y = QUEUE_PX + f.stages_px
    for n, lane in enumerate(f.lanes):
        size = f.size(lane)
        if n % 2 == 0:
            axes.axhspan(y, y + size, color="#F6F6F6", linewidth=0, zorder=0)
        axes.axhline(y, color="#BBBBBB", linewidth=0.6)
        label = f"{lane.name[:22]}\n{_attempts(lane.spans)}"
        if lane.counted:
            label += f"\ncounted: up to {_count_lane(axes, lane, f, y, timeline.now)}"
        else:
            for span, row, queue in zip(lane.spans, lane.rows, lane.queue, strict=True):
                bars.add(span, f.t0, y + row * f.row_px, f.row_px, queue)
        ticks.append((y + size / 2, label))
        y += size
    bars.draw(axes)
    axes.set_yticks([t for t, _ in ticks], [text for _, text in ticks], fontsize=7)
    figure.legend(
        handles=handles,
        loc="lower left",
        bbox_to_anchor=(LEFT / WIDTH, 0.05 / height),
        ncols=LEGEND_COLUMNS,
        fontsize=7,
        frameon=False,
    )
    return _Picture(figure, axes, bars.hits, title, timeline.now)


def _attempts(spans: Sequence[Span]) -> str:
    tried = sum(1 for s in spans if s.n)
    never = len(spans) - tried
    return f"{tried} attempt{'' if tried == 1 else 's'}" + (f"\n{never} never ran" if never else "")


def _title(timeline: BatchTimeline, f: Frame) -> str:
    batch = timeline.batch
    attempts = [s for s in timeline.spans if s.n]
    jobs = len({s.job_id for s in timeline.spans})
    retried = sum(s.n > 1 for s in attempts)
    lost = sum(s.outcome == "lost" for s in attempts)
    title = (
        f"batch {batch.id}" + (f" ({batch.name})" if batch.name else "") + f": {jobs} jobs,"
        f" {len(attempts)} attempts ({retried} retries, {lost} lost) in {f.last - f.t0:.1f}s"
    )
    counted = [lane.name for lane in f.lanes if lane.counted]
    if counted:
        more = f" and {len(counted) - 4} more" if len(counted) > 4 else ""
        title += (
            f"\n{', '.join(counted[:4])}{more}: too many attempts to draw one by one,"
            " counted over time instead"
        )
    return title


def _pale(rgba: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """The colour of a pending bar: its outcome's, mixed with white."""
    r, g, b, _ = rgba
    return (0.4 * r + 0.6, 0.4 * g + 0.6, 0.4 * b + 0.6, 1.0)


class _Bars:
    """Bars gathered per kind and colour, each group drawn as one shape (fast for
    thousands).

    An attempt is a pale part (admitted, not running yet; dotted while its node pulls the
    image) and a full one (running), underlined in its stage's colour; a retry is hatched,
    a lost attempt cross-hatched, both in white over it."""

    KINDS: ClassVar[dict[str, str | None]] = {  # kind: hatch, drawn in this order
        "queue": None,
        "pending": None,
        "pulling": "....",
        "plain": None,
        "stage": None,
        "retry": "//",
        "lost": "xx",
    }

    def __init__(self, stage_colour: dict[str, str], pixel: float, now: float) -> None:
        from matplotlib.colors import to_rgba

        self.rgba = {k: to_rgba(c) for k, c in COLOURS.items()}
        self.rgba |= {f"pale {k}": _pale(c) for k, c in self.rgba.items()}
        self.rgba |= {f"stage {k}": to_rgba(c) for k, c in stage_colour.items()}
        self.rgba["queue"] = to_rgba(QUEUE_COLOUR)
        self.rgba["white"] = (1.0, 1.0, 1.0, 0.9)
        self.pixel = pixel
        self.now = now
        self.groups: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
        self.hits: list[tuple[Span, float, float, float, float]] = []

    def rect(self, kind: str, x0: float, x1: float, y0: float, y1: float, fill: str) -> None:
        self.groups.setdefault((kind, fill), []).append((x0, x1, y0, y1))

    def add(self, span: Span, t0: float, top: float, row_px: float, queue: bool) -> None:
        """One attempt in the sub-row whose top is ``top``."""
        y0, y1 = top + row_px * 0.12, top + row_px * 0.88
        start = span.created - t0
        end = max(end_of(span, self.now) - t0, start + self.pixel)
        outcome = outcome_of(span)
        left = start
        if span.n == 0:  # ended without an attempt: a mark where it ended
            end = start + 3 * self.pixel
            self.rect("plain", start, end, y0, y1, outcome)
        else:
            if queue and span.created - span.queued > self.pixel:
                left, middle = span.queued - t0, (y0 + y1) / 2
                half = row_px * 0.06
                self.rect("queue", left, start, middle - half, middle + half, "queue")
            running = span.started - t0 if span.started is not None else end
            pulling = span.pulling is not None and span.started is None and span.ended is None
            if running > start:
                kind = "pulling" if pulling else "pending"
                self.rect(kind, start, running, y0, y1, f"pale {outcome}")
            if span.started is not None:
                self.rect("plain", running, max(end, running + self.pixel), y0, y1, outcome)
            if span.outcome == "lost":
                self.rect("lost", start, end, y0, y1, "white")
            elif span.n > 1:
                self.rect("retry", start, end, y0, y1, "white")
        if span.stage is not None and f"stage {span.stage}" in self.rgba:
            self.rect("stage", start, end, y1 - (y1 - y0) * 0.25, y1, f"stage {span.stage}")
        self.hits.append((span, left, end, top, top + row_px))

    def draw(self, axes: Axes) -> None:
        """Each kind and colour as one compound path: one fill (and one hatch) for all of
        its rectangles, however many (a collection fills and hatches each one alone: 2 s
        for 1,000 hatched bars)."""
        import numpy as np
        from matplotlib.patches import PathPatch
        from matplotlib.path import Path as Shape

        codes = [Shape.MOVETO, Shape.LINETO, Shape.LINETO, Shape.LINETO, Shape.CLOSEPOLY]
        for kind, hatch in self.KINDS.items():
            for fill, boxes in ((f, b) for (k, f), b in self.groups.items() if k == kind):
                x0, x1, y0, y1 = np.asarray(boxes, dtype=float).T
                corners = [np.c_[x0, y0], np.c_[x0, y1], np.c_[x1, y1], np.c_[x1, y0]]
                verts = np.stack([*corners, corners[0]], axis=1).reshape(-1, 2)
                shape = Shape(verts, np.tile(np.asarray(codes, dtype=Shape.code_type), len(boxes)))
                face = self.rgba[fill] if hatch is None or kind == "pulling" else "none"
                edge = "none" if hatch is None else self.rgba["white"]
                patch = PathPatch(shape, facecolor=face, edgecolor=edge, linewidth=0, hatch=hatch)
                patch.set_zorder(2)
                axes.add_artist(patch)  # not add_patch: its data limits cost seconds


def _queue_lane(axes: Axes, waits: Sequence[Wait], f: Frame, now: float) -> tuple[float, str]:
    """Jobs waiting over time: for admission (queued, or a retry's backoff), and for needs."""
    admission = [(w.since, w.until or now) for w in waits if w.state != "waiting"]
    needs = [(w.since, w.until or now) for w in waits if w.state == "waiting"]
    layers = [(admission, QUEUE_COLOUR), (needs, NEEDS_COLOUR)]
    peak = _stacked(axes, layers, f, 0.0, QUEUE_PX)
    axes.axhline(QUEUE_PX, color="#BBBBBB", linewidth=0.6)
    return QUEUE_PX / 2, f"queue\nup to {peak} waiting"


def _count_lane(axes: Axes, lane: Lane, f: Frame, y: float, now: float) -> int:
    """A lane of too many bars: how many attempts were running (per outcome) and pending."""
    layers = []
    for outcome, fill in COLOURS.items():
        running = [
            (s.started, end_of(s, now))
            for s in lane.spans
            if s.started is not None and outcome_of(s) == outcome
        ]
        layers.append((running, fill))
    pending = [
        (s.created, s.started if s.started is not None else end_of(s, now))
        for s in lane.spans
        if s.n
    ]
    layers.append((pending, PALE))
    return _stacked(axes, layers, f, y, COUNT_PX)


def _stacked(
    axes: Axes,
    layers: Sequence[tuple[Sequence[tuple[float, float]], str]],
    f: Frame,
    y: float,
    size: float,
) -> int:
    """How many were in progress over time, stacked upwards from the lane's bottom and
    scaled to fit it; returns the peak (rounded)."""
    import numpy as np

    bins = int(PLOT_PX)
    counts = [np.asarray(in_progress(spans, f.t0, f.width, bins)) for spans, _ in layers]
    total = np.sum(counts, axis=0)
    peak = round(float(total.max()))
    scale = (size * 0.9) / max(peak, 1)
    xs = np.linspace(0, f.width, bins + 1)
    base = np.zeros(bins)
    for (_, fill), count in zip(layers, counts, strict=True):
        if count.any():
            top = base + count
            edges = np.r_[top, top[-1:]], np.r_[base, base[-1:]]  # "post": one more x than bins
            axes.fill_between(
                xs,
                y + size - edges[0] * scale,
                y + size - edges[1] * scale,
                step="post",
                color=fill,
                linewidth=0,
                zorder=2,
            )
            base = top
    return peak


def _stage_lane(
    axes: Axes, spans: Sequence[Span], f: Frame, stage_colour: dict[str, str], now: float
) -> tuple[float, str]:
    """Per stage, one bar from its first admission to its last end, named."""
    y = QUEUE_PX
    for i, name in enumerate(f.stages):
        mine = [s for s in spans if s.stage == name]
        if not mine:
            continue
        first = min(s.created for s in mine) - f.t0
        last = max(end_of(s, now) for s in mine) - f.t0
        top = y + 3 + i * STAGE_PX
        axes.broken_barh(
            [(first, max(last - first, f.pixel))],
            (top + 2, STAGE_PX - 4),
            facecolors=stage_colour[name],
            alpha=0.35,
            zorder=2,
        )
        axes.text(first, top + STAGE_PX / 2, f" {name}", va="center", fontsize=7, zorder=3)
    axes.axhline(y + f.stages_px, color="#BBBBBB", linewidth=0.6)
    return y + f.stages_px / 2, "stages"


def _legend(timeline: BatchTimeline, stage_colour: dict[str, str]) -> list[Artist]:
    """What the picture holds, and only that."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    spans = [s for s in timeline.spans if s.n]
    present = {outcome_of(s) for s in timeline.spans}
    handles: list[Artist] = [
        Patch(facecolor=c, edgecolor="#FFFFFF", hatch="xx" if k == "lost" else None,
              label=k.replace("_", " "))
        for k, c in COLOURS.items()
        if k in present
    ]  # fmt: skip
    shown = [
        (bool(spans),
         Patch(facecolor=PALE, label="pending (admitted, not running)")),
        (any(s.pulling and s.started is None and s.ended is None for s in spans),
         Patch(facecolor=PALE, edgecolor="#FFFFFF", hatch="....", label="pulling its image")),
        (any(w.state != "waiting" for w in timeline.waits),
         Line2D([], [], color=QUEUE_COLOUR, linewidth=2, label="queued (until admitted)")),
        (any(w.state == "waiting" for w in timeline.waits),
         Patch(facecolor=NEEDS_COLOUR, label="waiting for needs")),
        (any(s.n > 1 for s in spans),
         Patch(facecolor="#777777", edgecolor="#FFFFFF", hatch="//", label="retry (attempt > 1)")),
    ]  # fmt: skip
    handles += [handle for wanted, handle in shown if wanted]
    handles += [Patch(facecolor=c, label=f"stage {name}") for name, c in stage_colour.items()]
    return handles


# -- output ----------------------------------------------------------------------------------


def render(timeline: BatchTimeline, fmt: str) -> bytes:
    """The picture as ``png``, ``svg`` or ``html`` bytes."""
    picture = draw(timeline)
    buffer = io.BytesIO()
    if fmt == "png":
        picture.figure.savefig(buffer, format="png", dpi=DPI)
        return buffer.getvalue()
    meta = {"Creator": None, "Date": None, "Format": None, "Type": None}
    picture.figure.savefig(buffer, format="svg", metadata=meta)
    svg = buffer.getvalue().decode()
    if fmt == "svg":
        return svg.encode()
    return _html(timeline, picture, svg).encode()


def _hits(picture: _Picture) -> str:
    """An invisible rectangle over each bar, in the SVG's units (points, y down), whose
    ``<title>`` the browser shows on hover."""
    import numpy as np

    if not picture.hits:
        return ""
    figure, axes = picture.figure, picture.axes
    points = np.asarray([(x0, y1, x1, y0) for _, x0, x1, y0, y1 in picture.hits], dtype=float)
    corners = axes.transData.transform(np.r_[points[:, :2], points[:, 2:]])
    scale = 72 / figure.dpi
    height = figure.get_figheight() * 72
    n = len(picture.hits)
    low, high = corners[:n] * scale, corners[n:] * scale
    out = ['<g id="attempts">']
    for (span, *_), (ax, ay), (bx, by) in zip(picture.hits, low, high, strict=True):
        w = max(bx - ax, 1.0)
        out.append(
            f'<rect class="hit" id="a-{span.id}" x="{ax:.2f}" y="{height - by:.2f}"'
            f' width="{w:.2f}" height="{by - ay:.2f}"><title>'
            f"{html.escape(details(span, picture.now))}</title></rect>"
        )
    out.append("</g>")
    return "\n".join(out)


CSS = """
body { font: 13px sans-serif; margin: 1em; color: #222 }
h1 { font-size: 16px; white-space: pre-line }
svg { max-width: 100%; height: auto }
.hit { fill: #000; fill-opacity: 0 }
.hit:hover { fill-opacity: 0.15; stroke: #000; stroke-width: 0.8 }
table { border-collapse: collapse; font-size: 12px }
th, td { padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: left }
td.n { text-align: right }
"""


def _table(timeline: BatchTimeline) -> str:
    head = (
        "attempt", "job", "name", "index", "stage", "n", "node", "outcome", "exit",
        "queued s", "pending s", "running s", "error",
    )  # fmt: skip
    out = ["<table><thead><tr>", *(f"<th>{h}</th>" for h in head), "</tr></thead><tbody>"]
    for span in timeline.spans:
        queued, pending, running = durations(span, timeline.now)
        state = span.outcome or ("running" if span.started is not None else "pending")
        cells = (
            span.id, span.job_id, span.name, span.index, span.stage, span.n, span.node, state,
            span.exit_code,
        )  # fmt: skip
        times = (queued, pending, running)
        out.append(
            "<tr>"
            + "".join(f"<td>{html.escape('' if c is None else str(c))}</td>" for c in cells)
            + "".join(f'<td class="n">{"" if t is None else f"{t:.2f}"}</td>' for t in times)
            + f"<td>{html.escape(span.error or '')}</td></tr>"
        )
    out.append("</tbody></table>")
    return "\n".join(out)


def _html(timeline: BatchTimeline, picture: _Picture, svg: str) -> str:
    """One file, nothing fetched: the SVG inline (its XML prologue dropped), the hover
    rectangles, and every attempt in a table."""
    svg = svg[svg.index("<svg") :]
    svg = svg.replace("</svg>", _hits(picture) + "\n</svg>", 1) if picture.hits else svg
    title = html.escape(picture.title)
    n = len(timeline.spans)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f"<title>covey timeline: batch {html.escape(timeline.batch.id)}</title>\n"
        f"<style>{CSS}</style></head><body>\n<h1>{title}</h1>\n"
        "<p>Hover over a bar for its job, attempt, node, exit code and times.</p>\n"
        f"{svg}\n<details><summary>Every attempt ({n})</summary>\n{_table(timeline)}\n"
        "</details>\n</body></html>\n"
    )


# -- the command -----------------------------------------------------------------------------


def format_of(output: Path) -> str:
    fmt = output.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise SpecError(
            f"-o {output}: unknown picture format {output.suffix or '(none)'!r}:"
            " use .html, .png or .svg"
        )
    return fmt


async def load(db: Path | None, ref: str) -> BatchTimeline:
    """The batch ``ref`` names: a batch id, a job of it (id or name), or a batch's name."""
    from covey.store import Store

    async with Store.open(db, readonly=True) as store:
        try:
            kind, ids = await store.resolve(ref)
        except StoreError:
            found = await store.timeline(ref)  # a batch's name, or nothing at all
            if found is None:
                raise
        else:
            batch_id = ref if kind == "batch" and await store.batch(ref) else None
            if batch_id is None and ids:  # a job, or a batch's id prefix
                batch_id = (await store.jobs_by_id(ids[:1]))[0].batch_id
            found = await store.timeline(batch_id) if batch_id else None
            if found is None:
                raise StoreError(f"batch {ref!r} has no jobs: nothing to draw")
    if not found.spans:
        raise StoreError(f"batch {found.batch.id} has no attempts yet: nothing to draw")
    return found


async def command(db: Path | None, ref: str, output: Path | None, as_json: bool) -> int:
    """``covey timeline BATCH [-o FILE] [--json]``: draw it, print the file's path."""
    if output is not None:
        format_of(output)
    timeline = await load(db, ref)
    path = output or Path(f"timeline-{timeline.batch.id}.html")
    data = render(timeline, format_of(path))
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise SpecError(f"-o {path}: cannot write it: {exc.strerror or exc}") from exc
    if as_json:
        attempts = sum(1 for s in timeline.spans if s.n)
        jobs = len({s.job_id for s in timeline.spans})
        doc = {"batch": timeline.batch.id, "path": str(path), "attempts": attempts, "jobs": jobs}
        print(json.dumps(doc | {"bytes": len(data)}))
    else:
        print(path)
    return 0
