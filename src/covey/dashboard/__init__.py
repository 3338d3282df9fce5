"""The web dashboard: ``covey ui [HOST:]PORT`` and ``covey supervise --ui [HOST:]PORT``.

A store's batches with their progress, a batch's jobs (paged, filtered), stages and
timeline, a job's attempts and logs (followed live while it runs), and the operator's
actions (cancel, retry, throttle, pause, resume), live as the store changes. Server-rendered
HTML with one small script, no build step, nothing fetched from elsewhere.
:mod:`~covey.dashboard.security` says who may use it and how; :mod:`~covey.dashboard.app`
is the application; :mod:`~covey.dashboard.views` its HTML.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import anyio
from aiohttp import web
from anyio.abc import TaskStatus

from covey.client import Mode
from covey.dashboard.app import Dashboard, make_app
from covey.dashboard.security import Address, Guard, parse_address, read_token, require_token
from covey.errors import CoveyError
from covey.store import Store

SHUTDOWN_TIMEOUT = 2.0
LOCK_PATIENCE = 10.0  # an action waits this long for a store another process locked


async def serve(
    db: Path | None,
    address: Address,
    *,
    token: str | None,
    mode: Mode = "auto",
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the dashboard of the store ``db`` until cancelled; reports its URL (with the
    port the system chose when ``address.port`` is 0) once it listens."""
    require_token(address, token)
    async with Store.open(db, lock_patience=LOCK_PATIENCE) as store:
        dash = Dashboard(store, Guard(address, token), mode=mode)
        runner = web.AppRunner(make_app(dash), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(
                runner, address.host, address.port, shutdown_timeout=SHUTDOWN_TIMEOUT
            )
            try:
                await site.start()
            except OSError as exc:
                raise CoveyError(
                    f"the dashboard cannot listen on {address.url}: {exc.strerror or exc}"
                ) from exc
            task_status.started(Address(address.host, _bound_port(runner, address.port)).url)
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()


async def beside(
    main: Callable[[], Awaitable[int]],
    db: Path | None,
    address: Address,
    *,
    token: str | None,
    mode: Mode = "auto",
) -> int:
    """``covey supervise --ui``: the dashboard listens first, then ``main`` runs; when it
    returns, the dashboard stops."""
    async with anyio.create_task_group() as tg:
        url = await tg.start(partial(serve, db, address, token=token, mode=mode))
        _say(url)
        code = await main()
        tg.cancel_scope.cancel()
    return code


async def until_signal(
    db: Path | None, address: Address, *, token: str | None, mode: Mode = "auto"
) -> int:
    """``covey ui``: serve until SIGINT or SIGTERM, then exit 0."""
    async with anyio.create_task_group() as tg:
        url = await tg.start(partial(serve, db, address, token=token, mode=mode))
        _say(url)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        tg.cancel_scope.cancel()
    return 0


def _bound_port(runner: web.AppRunner, asked: int) -> int:
    for server in runner.sites:
        sockets = getattr(getattr(server, "_server", None), "sockets", None) or ()
        for sock in sockets:
            return int(sock.getsockname()[1])
    return asked


def _say(url: str) -> None:
    print(f"covey: dashboard on {url}", file=sys.stderr, flush=True)


__all__ = [
    "Address",
    "Dashboard",
    "Guard",
    "beside",
    "make_app",
    "parse_address",
    "read_token",
    "require_token",
    "serve",
    "until_signal",
]
