"""covey agent: follow one node's container events and print them as JSON lines on stdout.

covey deploys it as a global swarm service (one task per node, the node's docker socket
bind-mounted) and follows the service's logs through the manager, so it learns of job ends on
every node at once, with no network path from the nodes to covey. Standard library only: it is
delivered as a swarm config file and runs on any python3 >= 3.9 as ``python3 /covey-agent.py``.

Environment: COVEY_AGENT_STORE (follow containers labelled covey.store=<it>), COVEY_AGENT_SOCKET
(default /var/run/docker.sock), COVEY_AGENT_BEAT (heartbeat period in seconds, default 1.0).
Lines, one compact JSON object each, flushed at once (every one carries "k" and "node"):
  hello {"v"}  ev {"action","id","attrs","t"}  beat {"seq","up"}  down {"err"}  bye
After a ``down`` the stream is reopened with ``since`` = the last event's time (the engine
replays its last 256 events), so nothing in between is lost; an exact repeat is dropped.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, NoReturn, TextIO
from urllib.parse import quote

VERSION = 1
API = "/v1.41"
KEEP = (
    "covey.attempt",
    "covey.store",
    "exitCode",
    "com.docker.swarm.node.id",
    "com.docker.swarm.task.id",
    "com.docker.swarm.service.id",
)
BACKOFF_MIN, BACKOFF_MAX = 0.2, 5.0
STREAM_ERRORS = (OSError, http.client.HTTPException, ValueError)


def dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def event_filters(store: str) -> str:
    """The ``filters`` of ``GET /events``: start/kill/die of the store's containers."""
    label = f"covey.store={store}" if store else "covey.store"
    return dumps({"type": ["container"], "event": ["start", "kill", "die"], "label": [label]})


def since_param(time_nano: int) -> str:
    """A ``since`` value (seconds.nanoseconds); the engine's replay includes that instant."""
    return f"{time_nano // 1_000_000_000}.{time_nano % 1_000_000_000:09d}"


def event_line(node: str, raw: dict[str, Any]) -> dict[str, Any]:
    """An engine event as an ``ev`` line, keeping only the attributes covey uses."""
    actor = raw.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    return {
        "k": "ev",
        "node": node,
        "action": raw.get("Action") or raw.get("status") or "",
        "id": actor.get("ID") or raw.get("id") or "",
        "attrs": {key: attrs[key] for key in KEEP if key in attrs},
        "t": int(raw.get("timeNano") or 0),
    }


def check_ok(resp: http.client.HTTPResponse, path: str) -> None:
    if resp.status != 200:
        body = resp.read(300).decode(errors="replace").strip()
        raise http.client.HTTPException(f"GET {path}: HTTP {resp.status}: {body}")


class UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix socket."""

    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Agent:
    def __init__(self, sock_path: str, store: str, beat: float, out: TextIO) -> None:
        self.sock_path, self.store, self.beat, self.out = sock_path, store, beat, out
        self.node = ""
        self.greeted = False
        self.up = False  # is the events stream connected?
        self.connects = 0
        self.since = 0  # timeNano of the last event printed (or of the first connect)
        self.seen: set[tuple[str, str]] = set()  # (id, action) of the events at `since`
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.beater = threading.Thread(target=self.beats, name="beat", daemon=True)

    def emit(self, kind: str, **fields: Any) -> None:
        self.write({"k": kind, "node": self.node, **fields})

    def write(self, obj: dict[str, Any]) -> None:
        line = dumps(obj) + "\n"
        with self.lock:
            try:
                self.out.write(line)
                self.out.flush()
            except OSError:  # nobody reads us any more: useless, let swarm start another
                os._exit(2)

    def request(self, path: str) -> tuple[UnixConnection, http.client.HTTPResponse]:
        conn = UnixConnection(self.sock_path, timeout=10.0)
        try:
            conn.request("GET", API + path)
            resp = conn.getresponse()
            check_ok(resp, path)
        except BaseException:
            conn.close()
            raise
        return conn, resp

    def fetch_node(self) -> str:
        conn, resp = self.request("/info")
        try:
            info = json.loads(resp.read())
        finally:
            conn.close()
        return str((info.get("Swarm") or {}).get("NodeID") or "")

    def follow(self) -> None:
        """Print the events of one stream; returns when the engine ends it, raises on errors."""
        query = "filters=" + quote(event_filters(self.store))
        if self.since:
            query += "&since=" + since_param(self.since)
        mark = time.time_ns()
        conn, resp = self.request("/events?" + query)
        try:
            conn.sock.settimeout(None)  # an idle stream is fine: the engine sends nothing
            self.since = self.since or mark
            self.up = True
            self.connects += 1
            while line := resp.readline():
                if line.strip():
                    self.on_event(json.loads(line))
        finally:
            self.up = False
            conn.close()

    def on_event(self, raw: dict[str, Any]) -> None:
        ev = event_line(self.node, raw)
        key = (ev["id"], ev["action"])
        if ev["t"] == self.since and key in self.seen:
            return  # replayed after a reconnect: printed already
        if ev["t"] != self.since:  # (newer, unless the clock was set back)
            self.since, self.seen = ev["t"], set()
        self.seen.add(key)
        self.write(ev)

    def beats(self) -> None:
        seq = 0
        while not self.stop.wait(self.beat):
            seq += 1
            self.emit("beat", seq=seq, up=self.up)

    def run(self) -> None:
        delay = BACKOFF_MIN
        while True:
            connects = self.connects
            try:
                if not self.greeted:
                    self.node, self.greeted = self.fetch_node(), True
                    self.emit("hello", v=VERSION)
                    self.beater.start()
                self.follow()
                err = "events stream ended"
            except STREAM_ERRORS as exc:
                err = f"{type(exc).__name__}: {exc}"
            if self.connects != connects:  # it had been connected: start the backoff over
                delay = BACKOFF_MIN
            self.emit("down", err=err)
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)


def _terminate(signum: int, frame: object) -> NoReturn:
    raise SystemExit(0)


def main() -> None:
    agent = Agent(
        os.environ.get("COVEY_AGENT_SOCKET") or "/var/run/docker.sock",
        os.environ.get("COVEY_AGENT_STORE", ""),
        float(os.environ.get("COVEY_AGENT_BEAT") or 1.0),
        sys.stdout,
    )
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    try:
        agent.run()
    finally:
        agent.stop.set()
        if agent.beater.is_alive():  # a daemon thread at exit needs libgcc_s (pthread_exit)
            agent.beater.join(1.0)
        agent.emit("bye")


if __name__ == "__main__":
    main()
