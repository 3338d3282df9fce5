"""Prometheus metrics for operators of ``covey supervise`` (off unless ``--metrics-addr``)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from covey.context import Context
from covey.errors import SpecError
from covey.states import JobState


class SupervisorCollector(Collector):
    """Reads the orchestrator's counters and the store's cached counts at scrape time."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.counts: dict[str, int] = {}

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        ctx = self.ctx
        jobs = GaugeMetricFamily("covey_jobs", "Jobs in the store by state", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], self.counts.get(state.value, 0))
        yield jobs
        queued = self.counts.get("queued", 0) + self.counts.get("retrying", 0)
        yield GaugeMetricFamily("covey_queue_depth", "Jobs waiting for admission", value=queued)
        yield GaugeMetricFamily(
            "covey_live_attempts", "Attempts on the engine", value=len(ctx.live)
        )
        yield CounterMetricFamily(
            "covey_admissions", "Jobs admitted by the governor", value=ctx.counters.admissions
        )
        yield CounterMetricFamily(
            "covey_event_stream_reconnects",
            "Times the event stream was resubscribed",
            value=ctx.counters.event_reconnects,
        )
        yield GaugeMetricFamily(
            "covey_event_stream_up",
            "1 while the event stream is open",
            value=int(ctx.counters.events_up),
        )
        yield CounterMetricFamily(
            "covey_api_errors", "Engine API calls that failed", value=ctx.counters.api_errors
        )
        yield CounterMetricFamily(
            "covey_api_requests", "Engine API requests made", value=ctx.engine.total_requests
        )


def parse_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", addr
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise SpecError(f"--metrics-addr: {addr!r} is not HOST:PORT or PORT") from None


def serve_metrics(ctx: Context, addr: str) -> SupervisorCollector:
    """Start the HTTP endpoint in a thread (prometheus_client's own server)."""
    host, port = parse_addr(addr)
    registry = CollectorRegistry()
    collector = SupervisorCollector(ctx)
    registry.register(collector)
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise SpecError(f"--metrics-addr {addr}: {exc}") from exc
    return collector
