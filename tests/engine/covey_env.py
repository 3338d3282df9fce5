"""A store of one test on the shared engine, and covey processes run against it.

The supervisor is a subprocess (``python -m covey --db DB supervise``) that tests kill -9,
SIGTERM, or leave running; producers and operators are ``covey`` processes. Checks read the
store file (SQLite, read-only use) and the engine itself, whose event stream counts every
container created per attempt: "nothing ran twice" is measured by the engine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any, TextIO

import covey.states

TERMINAL = {s.value for s in covey.states.TERMINAL}


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Supervisor:
    """``covey supervise`` as a process that can be killed and started again."""

    def __init__(self, env: CoveyEnv, args: tuple[str, ...]) -> None:
        self.env = env
        self.args = args
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: TextIO | None = None
        self.start()

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.close_log()
        self.runs += 1
        self._log = (self.env.tmp / f"supervise-{self.runs}.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "covey", "--db", str(self.env.db), "supervise", *self.args],
            env=self.env.environ,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill9(self) -> None:
        assert self.proc is not None
        assert self.proc.poll() is None, f"the supervisor died by itself:\n{self.logs()}"
        self.proc.kill()
        self.proc.wait(10)

    def term(self, timeout: float = 30.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds it took)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - started

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        return "\n".join(
            f"--- supervise run {n} ---\n"
            + (self.env.tmp / f"supervise-{n}.log").read_text(errors="replace")
            for n in range(1, self.runs + 1)
        )

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.close_log()


class Creates:
    """The engine's own record of container creations for one store (``docker events``)."""

    def __init__(self, env: CoveyEnv) -> None:
        self.path = env.tmp / "creates.jsonl"
        self._out = self.path.open("w")
        self.proc = subprocess.Popen(
            [
                "docker", "events",
                "--since", str(int(env.t0) - 1),
                "--filter", "type=container",
                "--filter", "event=create",
                "--filter", f"label=covey.store={env.store_id}",
                "--format", "{{json .}}",
            ],
            env=env.environ,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def per_attempt(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for line in self.path.read_text().splitlines():
            if line.strip():
                attrs = json.loads(line)["Actor"]["Attributes"]
                counts[attrs.get("covey.attempt", "?")] += 1
        return counts

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self._out.close()


class CoveyEnv:
    """One test's store on the shared engine: covey processes, store reads, engine reads."""

    def __init__(self, host: str, tmp: Path) -> None:
        self.host = host
        self.tmp = tmp
        self.db = tmp / "covey.db"
        self.t0 = time.time()
        self.environ = {k: v for k, v in os.environ.items() if k != "COVEY_DB"}
        self.environ["DOCKER_HOST"] = host
        self.supervisors: list[Supervisor] = []
        self.watchers: list[Creates] = []
        self.children: list[subprocess.Popen[str]] = []

    # -- processes --------------------------------------------------------------------------

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "covey", "--db", str(self.db), *args]

    def covey(
        self, *args: str, timeout: float = 60.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.argv(*args),
            env=self.environ,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"covey {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            self.argv(*args),
            env=self.environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.children.append(proc)
        return proc

    def together(self, *calls: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
        """Run several covey commands at the same time; each must exit 0 unless it is a wait."""
        procs = [(args, self.spawn(*args)) for args in calls]
        done = []
        for args, proc in procs:
            out, err = proc.communicate(timeout=90)
            assert proc.returncode == 0 or args[0] == "wait", (args, proc.returncode, err)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
        return done

    def submit(self, *args: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.covey("submit", "--json", *args).stdout)
        return doc

    def supervise(self, *args: str) -> Supervisor:
        sup = Supervisor(self, args)
        self.supervisors.append(sup)
        return sup

    def creates(self) -> Creates:
        watcher = Creates(self)
        self.watchers.append(watcher)
        return watcher

    def batch_file(self, name: str, jobs: list[dict[str, Any]]) -> str:
        path = self.tmp / name
        path.write_text(json.dumps({"jobs": jobs}, indent=1))  # JSON is YAML
        return str(path)

    # -- the store (read-only use) -------------------------------------------------------------

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with closing(sqlite3.connect(self.db, timeout=30)) as conn:
            conn.row_factory = sqlite3.Row
            return list(conn.execute(sql, args).fetchall())

    def query_when_ready(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """``query``, or nothing while the store is not there yet or still being created (a
        covey process just started: the file exists before its tables do)."""
        if not self.db.exists():
            return []
        try:
            return self.query(sql, args)
        except sqlite3.OperationalError:
            return []

    @property
    def store_id(self) -> str:
        return str(self.query("SELECT value FROM meta WHERE key='store_id'")[0][0])

    def jobs(self, batch: str | None = None) -> dict[str, sqlite3.Row]:
        """Jobs by name (names are unique within these tests)."""
        rows = self.query(
            "SELECT * FROM jobs" + (" WHERE batch_id=?" if batch else ""), (batch,) if batch else ()
        )
        return {r["name"]: r for r in rows}

    def states(self, batch: str | None = None) -> Counter[str]:
        return Counter(r["state"] for r in self.jobs(batch).values())

    def attempts(self, job_id: str) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM attempts WHERE job_id=? ORDER BY n", (job_id,))

    def logs(self, attempt_id: str) -> dict[str, bytes]:
        rows = self.query("SELECT stream, data FROM logs WHERE attempt_id=?", (attempt_id,))
        return {r["stream"]: bytes(r["data"]) for r in rows}

    def settled(self, batch: str | None = None) -> bool:
        """Every job ended and every attempt cleaned up (logs saved, engine object removed)."""
        where = " WHERE batch_id=?" if batch else ""
        args = (batch,) if batch else ()
        jobs = self.query("SELECT id, state FROM jobs" + where, args)
        if not jobs or any(r["state"] not in TERMINAL for r in jobs):
            return False
        open_ = self.query(
            "SELECT count(*) FROM attempts WHERE removed=0 AND job_id IN"
            " (SELECT id FROM jobs" + where + ")",
            args,
        )
        return int(open_[0][0]) == 0

    def wait_settled(self, batch: str | None = None, timeout: float = 60.0) -> None:
        wait_for(f"batch {batch or '(all)'} to settle", lambda: self.settled(batch), timeout)

    # -- the engine -----------------------------------------------------------------------------

    def services(self) -> list[str]:
        """This store's services, as the engine lists them."""
        out = subprocess.run(
            ["docker", "service", "ls", "-q", "--filter", f"label=covey.store={self.store_id}"],
            env=self.environ,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        return out.split()

    def close(self) -> None:
        for sup in self.supervisors:
            sup.stop()
        for proc in self.children:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)
        for watcher in self.watchers:
            watcher.close()
        if self.db.exists():  # leave the engine clean for the next test
            for ident in self.services():
                subprocess.run(
                    ["docker", "service", "rm", ident],
                    env=self.environ,
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
            configs = subprocess.run(
                ["docker", "config", "ls", "-q", "--filter", f"label=covey.store={self.store_id}"],
                env=self.environ, capture_output=True, text=True, timeout=30, check=False,
            ).stdout.split()  # fmt: skip
            if configs:  # inputs and shared outputs a failed test left
                subprocess.run(
                    ["docker", "config", "rm", *configs],
                    env=self.environ, capture_output=True, timeout=30, check=False,
                )  # fmt: skip
