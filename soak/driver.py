"""Run the soak: a private engine, 300 jobs through ``covey supervise``, faults, the audit.

Everything covey does here it does as the processes operators run (``covey submit``,
``supervise``, ``cancel``, ``wait``); the supervisor talks to the engine through
:class:`~soak.proxy.EventCutter`, which is how its event stream gets cut.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TextIO

from soak.checks import FAIL_EXIT, LOST_RETRIES, TERMINAL, Cancel, Verdict, audit
from soak.proxy import EventCutter

REPO = Path(__file__).resolve().parent.parent
ENGINE_SH = REPO / "scripts" / "engine.sh"
IMAGE = "covey-test/busybox:latest"
BATCHES = 3


def log(msg: str) -> None:
    print(f"soak {time.strftime('%H:%M:%S')} {msg}", flush=True)


def keep_engine() -> bool:
    return os.environ.get("COVEY_KEEP_ENGINE", "") not in ("", "0")


def engine(command: str, name: str, timeout: float = 900) -> str:
    """``scripts/engine.sh COMMAND --name NAME``; its stdout (errors carry its stderr)."""
    done = subprocess.run(
        ["bash", str(ENGINE_SH), command, "--name", name],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"engine.sh {command} --name {name} failed:\n{done.stderr[-3000:]}")
    return done.stdout


# -- the workload --------------------------------------------------------------------------


def workload(rng: random.Random, n: int, share: Path) -> tuple[dict[str, str], list[Path]]:
    """``n`` jobs in BATCHES batch files; returns kinds by job name and the files."""
    kinds: dict[str, str] = {}
    batches: list[list[dict[str, Any]]] = [[] for _ in range(BATCHES)]
    for i in range(n):
        kind = rng.choices(["ok", "flaky", "fail"], weights=[70, 18, 12])[0]
        name = f"{kind}-{i:03d}"
        kinds[name] = kind
        ran = f'echo "{name} $SVC $HOSTNAME" >> /soak/runs.log; sleep {rng.uniform(0, 3):.1f}'
        tail = {
            "ok": "",
            "flaky": f"; [ -e /soak/flags/{name} ] && exit 0; touch /soak/flags/{name}; exit 3",
            "fail": f"; exit {FAIL_EXIT}",
        }[kind]
        job: dict[str, Any] = {"name": name, "command": ["sh", "-c", ran + tail]}
        if kind != "ok":
            job["retry"] = {"attempts": 2, "backoff": "1s"}
        batches[i * BATCHES // n].append(job)
    (share / "flags").mkdir(parents=True, exist_ok=True)
    defaults = {
        "image": IMAGE,
        "volumes": [f"{share}:/soak"],
        "environment": {"SVC": "{{.Service.Name}}"},  # swarm fills in the attempt's service
    }
    files = []
    for b, jobs in enumerate(batches, 1):
        path = share.parent / f"batch-{b}.yaml"
        path.write_text(json.dumps({"defaults": defaults, "jobs": jobs}, indent=1))  # JSON is YAML
        files.append(path)
    return kinds, files


# -- covey as processes ----------------------------------------------------------------------


class Supervisor:
    """``covey supervise`` through the proxy; killed and started again, logs kept per run."""

    def __init__(self, soak: Soak) -> None:
        self.soak = soak
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: TextIO | None = None

    def start(self) -> None:
        self.close_log()
        self.runs += 1
        self._log = (self.soak.dir / f"supervise-{self.runs}.log").open("w")
        self.proc = subprocess.Popen(
            self.soak.argv("--debug", "supervise"),
            env={**self.soak.environ, "DOCKER_HOST": self.soak.proxy.docker_host},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def check_alive(self) -> None:
        """A supervisor that exited by itself is a finding; start another one."""
        if self.proc is not None and self.proc.poll() is not None:
            self.soak.verdict.bad(
                f"supervise run {self.runs} exited by itself with code {self.proc.returncode}"
                f" (log: supervise-{self.runs}.log)"
            )
            self.start()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def term(self, timeout: float = 30.0) -> tuple[int | None, float]:
        """SIGTERM; (exit code or None if it had to be killed, seconds it took)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            code = None
        self.close_log()
        return code, time.monotonic() - started

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.term(20)
        self.close_log()

    def tracebacks(self) -> list[str]:
        return [
            f"supervise-{n}.log"
            for n in range(1, self.runs + 1)
            if "Traceback" in (self.soak.dir / f"supervise-{n}.log").read_text(errors="replace")
        ]


@dataclass
class Faults:
    kills: list[int] = field(default_factory=list)  # live jobs at each kill
    live_at: dict[str, int] = field(default_factory=dict)  # live jobs at the restart, the cut
    restart_seconds: float | None = None
    cut_streams: int = 0
    resubscribed_after: float | None = None
    cancels: list[Cancel] = field(default_factory=list)


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path, host: str) -> None:
        self.args = args
        self.dir = workdir
        self.db = workdir / "covey.db"
        self.share = workdir / "share"
        self.share.mkdir()
        self.rng = random.Random(args.seed)
        self.environ = {k: v for k, v in os.environ.items() if k != "COVEY_DB"}
        self.environ["DOCKER_HOST"] = host
        sock = Path(host.removeprefix("unix://"))
        self.proxy = EventCutter(workdir / "proxy.sock", sock)
        self.sup = Supervisor(self)
        self.verdict = Verdict()
        self.faults = Faults()
        self.files: list[Path] = []
        self.batches: list[str] = []
        self.job_ids: list[str] = []
        self.term: tuple[int | None, float] = (None, 0.0)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "covey", "--db", str(self.db), *args]

    def covey(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        """A covey command; one that hangs is killed and reported as exit code -9."""
        argv = self.argv(*args)
        try:
            return subprocess.run(
                argv,
                env=self.environ,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            err = f"covey {' '.join(args)}: still running after {timeout:g}s, killed"
            return subprocess.CompletedProcess(argv, -9, str(exc.stdout or ""), err)

    def docker(self, *args: str) -> list[str]:
        out = subprocess.run(
            ["docker", *args],
            env=self.environ,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        return out.split()

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)) as conn:
            conn.row_factory = sqlite3.Row
            return list(conn.execute(sql, args).fetchall())

    def live_jobs(self) -> list[sqlite3.Row]:
        marks = ",".join("?" * len(TERMINAL))
        sql = f"SELECT id, name, state FROM jobs WHERE state NOT IN ({marks})"
        return self.query(sql, (*TERMINAL,))

    def submit(self, path: Path) -> None:
        done = self.covey("submit", "--json", "-f", str(path))
        if done.returncode != 0:
            raise RuntimeError(f"covey submit -f {path} exited {done.returncode}: {done.stderr}")
        doc = json.loads(done.stdout)
        self.batches.append(doc["batch"])
        self.job_ids += doc["jobs"]
        log(f"submitted {len(doc['jobs'])} jobs as batch {doc['batch']}")

    # -- faults ------------------------------------------------------------------------------

    def kill(self) -> None:
        self.sup.check_alive()
        live = len(self.live_jobs())
        self.sup.kill9()
        self.faults.kills.append(live)
        log(f"kill -9 #{len(self.faults.kills)} of the supervisor ({live} jobs not ended)")
        time.sleep(self.rng.uniform(0.0, 1.5))
        self.sup.start()

    def restart_dockerd(self) -> None:
        self.sup.check_alive()
        self.faults.live_at["restart"] = len(self.live_jobs())
        log(f"restarting dockerd ({self.faults.live_at['restart']} jobs not ended)")
        started = time.monotonic()
        engine("restart-dockerd", self.args.engine, timeout=240)
        self.faults.restart_seconds = time.monotonic() - started
        log(f"dockerd back after {self.faults.restart_seconds:.1f}s")
        self.sup.check_alive()

    def cut_events(self) -> None:
        self.sup.check_alive()
        if not _until(lambda: self.proxy.open_streams() > 0, 30):
            self.verdict.bad("the supervisor had no event stream open for 30 s: nothing to cut")
            return
        self.faults.live_at["cut"] = len(self.live_jobs())
        cut_at = time.monotonic()
        self.faults.cut_streams = self.proxy.cut()
        log(f"cut {self.faults.cut_streams} event stream(s)")

        def again() -> list[float]:
            return [t for t in self.proxy.events_requests if t > cut_at]

        if _until(lambda: bool(again()) and self.proxy.open_streams() > 0, 30):
            self.faults.resubscribed_after = again()[0] - cut_at
            log(f"the supervisor resubscribed after {self.faults.resubscribed_after:.2f}s")
        elif self.sup.proc is not None and self.sup.proc.poll() is None:
            self.verdict.bad("the supervisor did not resubscribe to events within 30 s of the cut")
        self.sup.check_alive()

    def cancel(self) -> None:
        """Cancel a job that is retrying, or running and may fail (the races), or live, or any."""
        live = self.live_jobs()
        groups = [
            [r["id"] for r in live if r["state"] == "retrying"],
            [r["id"] for r in live if r["state"] == "running" and r["name"][:2] in ("fa", "fl")],
            [r["id"] for r in live],
            self.job_ids,
        ]
        pick = self.rng.choices(range(4), weights=[3, 3, 2, 1])[0]
        target = self.rng.choice(next(g for g in groups[pick:] if g))
        started = time.time()
        done = self.covey("cancel", target)
        out = (done.stdout + done.stderr).strip()
        cancel = Cancel(target, started, time.time(), done.returncode, out)
        self.faults.cancels.append(cancel)
        log(f"covey cancel {target} ({cancel.returned - started:.1f}s): {out}")

    def run_faults(self) -> None:
        plan = ["kill"] * self.args.kills + ["restart", "cut"] + ["cancel"] * self.args.cancels
        self.rng.shuffle(plan)
        gaps = {"kill": (0.3, 6.0), "restart": (1.0, 4.0), "cut": (1.0, 4.0), "cancel": (0, 1.5)}
        actions = {
            "kill": self.kill,
            "restart": self.restart_dockerd,
            "cut": self.cut_events,
            "cancel": self.cancel,
        }
        for step, what in enumerate(plan):
            if step in {len(plan) // 4, len(plan) // 2}:  # the later batches arrive meanwhile
                self.submit(self.files[len(self.batches)])
            time.sleep(self.rng.uniform(*gaps[what]))
            actions[what]()

    # -- the whole run -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        t0 = time.monotonic()
        kinds, self.files = workload(self.rng, self.args.jobs, self.share)
        if self.covey("ls").returncode != 0:  # creates the store
            raise RuntimeError("covey ls failed on a new store")
        store_id = str(self.query("SELECT value FROM meta WHERE key='store_id'")[0][0])
        self.submit(self.files[0])
        self.sup.start()
        self.run_faults()
        while len(self.batches) < BATCHES:
            self.submit(self.files[len(self.batches)])
        faults_done = time.monotonic() - t0
        self.sup.check_alive()
        self.finish(store_id, t0)
        verdict = audit(self.db, self.share / "runs.log", kinds, self.faults.cancels)
        self.verdict.violations += verdict.violations
        return self.summary(verdict, store_id, faults_done, time.monotonic() - t0)

    def finish(self, store_id: str, t0: float) -> None:
        """Let a last supervisor finish everything; the engine must end up clean."""
        timeout = max(30.0, self.args.budget - (time.monotonic() - t0))
        log(f"faults done; waiting for every job (at most {timeout:.0f}s)")
        done = self.covey(
            "wait", *self.batches, "--timeout", f"{timeout:.0f}", timeout=timeout + 60
        )
        if done.returncode not in (0, 1):
            stuck = [dict(r) for r in self.query(
                "SELECT id, name, state, attempts, cancel_requested, error FROM jobs WHERE state"
                f" NOT IN ({','.join('?' * len(TERMINAL))})", (*TERMINAL,))]  # fmt: skip
            self.verdict.bad(
                f"covey wait exited {done.returncode} ({done.stderr.strip()[-300:]});"
                f" not ended: {stuck}"
            )
        label = f"label=covey.store={store_id}"
        settled = _until(
            lambda: (
                not self.query("SELECT 1 FROM attempts WHERE removed=0 LIMIT 1")
                and not self.docker("service", "ls", "-q", "--filter", label)
            ),
            45,
        )
        gone = _until(lambda: not self.docker("ps", "-aq", "--filter", label), 45)
        if not settled or not gone:
            services = self.docker("service", "ls", "--filter", label, "--format", "{{.Name}}")
            containers = self.docker("ps", "-a", "--filter", label, "--format", "{{.Names}}")
            self.verdict.bad(f"left on the engine: services {services}, containers {containers}")
        code, took = self.sup.term()
        self.term = (code, took)
        if code != 0:
            self.verdict.bad(f"the last supervisor exited {code} on SIGTERM after {took:.1f}s")
        for name in self.sup.tracebacks():
            self.verdict.bad(f"a traceback in {name}")

    def summary(
        self, verdict: Verdict, store_id: str, faults_s: float, wall: float
    ) -> dict[str, Any]:
        f = self.faults
        return {
            "result": "FAIL" if self.verdict.violations else "PASS",
            "seed": self.args.seed,
            "store": store_id,
            "jobs": verdict.counts["jobs"],
            "batches": len(self.batches),
            "states": dict(verdict.states.most_common()),
            "kills": len(f.kills),
            "live_jobs_at_kills": f.kills,
            "live_jobs_at": f.live_at,
            "dockerd_restarts": int(f.restart_seconds is not None),
            "dockerd_restart_seconds": round(f.restart_seconds or 0, 1),
            "event_streams_cut": f.cut_streams,
            "resubscribed_after_seconds": round(f.resubscribed_after or -1, 2),
            "cancels": len(f.cancels),
            "slowest_cancel_seconds": round(
                max((c.returned - c.started for c in f.cancels), default=0), 1
            ),
            "cancelled_on_request": verdict.counts["cancelled on request"],
            "attempts": verdict.counts["attempts"],
            "lost": verdict.counts["lost attempts"],
            "lost_that_had_run": verdict.counts["lost attempts that had run"],
            "reruns_after_lost": verdict.counts["re-runs after a lost attempt"],
            "reruns_after_failure": verdict.counts["re-runs after a failure"],
            "duplicates": verdict.counts["duplicates"],
            "jobs_given_up_after_losses": verdict.counts["jobs given up after losses"],
            "side_effect_lines": verdict.counts["side-effect lines"],
            "supervisor_runs": self.sup.runs,
            "last_supervisor_sigterm": {"exit": self.term[0], "seconds": round(self.term[1], 1)},
            "faults_seconds": round(faults_s, 1),
            "wall_seconds": round(wall, 1),
            "violations": self.verdict.violations,
        }


def _until(check: Callable[[], object], timeout: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def report(doc: dict[str, Any], engine_up: float) -> None:
    states = ", ".join(f"{n} {s}" for s, n in doc["states"].items())
    lines = [
        f"covey soak: {doc['result']}   (seed {doc['seed']}, store {doc['store']})",
        f"  jobs          {doc['jobs']} in {doc['batches']} batches: {states}",
        f"  kills         {doc['kills']} kill -9 of the supervisor"
        f" (jobs not ended at each: {doc['live_jobs_at_kills']}); {doc['supervisor_runs']} runs",
        f"  dockerd       {doc['dockerd_restarts']} restart ({doc['dockerd_restart_seconds']}s,"
        f" {doc['live_jobs_at'].get('restart')} jobs not ended)",
        f"  event stream  {doc['event_streams_cut']} cut ({doc['live_jobs_at'].get('cut')} jobs not"
        f" ended), resubscribed after {doc['resubscribed_after_seconds']}s",
        f"  cancels       {doc['cancels']} `covey cancel JOB`,"
        f" {doc['cancelled_on_request']} job(s) ended cancelled"
        f" (slowest took {doc['slowest_cancel_seconds']}s)",
        f"  attempts      {doc['attempts']}; lost {doc['lost']} ({doc['lost_that_had_run']} of"
        f" them had run); re-runs after lost {doc['reruns_after_lost']}, after a failure"
        f" {doc['reruns_after_failure']}",
        f"  duplicates    {doc['duplicates']} (runs not explained by a lost attempt or a retry);"
        f" jobs given up after {LOST_RETRIES + 1} losses: {doc['jobs_given_up_after_losses']}",
        f"  side effects  {doc['side_effect_lines']} lines",
        f"  last SIGTERM  exit {doc['last_supervisor_sigterm']['exit']}"
        f" in {doc['last_supervisor_sigterm']['seconds']}s",
        f"  wall time     {doc['wall_seconds']}s (faults {doc['faults_seconds']}s;"
        f" engine up {engine_up:.1f}s before)",
    ]
    if doc["violations"]:
        lines.append(f"  VIOLATIONS    {len(doc['violations'])}:")
        lines += [f"    - {v}" for v in doc["violations"][:60]]
    print("\n".join(lines), flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=300)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--cancels", type=int, default=12)
    p.add_argument("--seed", type=int, default=int(os.environ.get("COVEY_SOAK_SEED") or 0))
    p.add_argument("--budget", type=float, default=420, help="seconds until the jobs must end")
    p.add_argument("--engine", default="soak", help="engine.sh name (default soak)")
    p.add_argument("--workdir", type=Path, help="keep everything here (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work dir even on success")
    args = p.parse_args(argv)
    args.seed = args.seed or random.SystemRandom().randrange(1, 1_000_000)
    return args


def _raise_interrupt(*_: object) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=False)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="covey-soak-"))
    log(f"seed {args.seed}; work dir {workdir}; starting engine {args.engine}")
    ok = False
    try:
        with ExitStack() as stack:
            t0 = time.monotonic()
            try:
                host = engine("up", args.engine).strip().removeprefix("export DOCKER_HOST=")
            finally:  # down even if up failed half-way
                if not keep_engine():
                    stack.callback(engine, "down", args.engine, 180)
            engine_up = time.monotonic() - t0
            soak = Soak(args, workdir, host)
            stack.enter_context(soak.proxy)
            stack.callback(soak.sup.stop)
            doc = soak.run()
            (workdir / "summary.json").write_text(json.dumps(doc, indent=1))
            report(doc, engine_up)
            ok = doc["result"] == "PASS"
    except KeyboardInterrupt:
        print("soak: interrupted; the engine and the supervisor are stopped", file=sys.stderr)
        return 130
    finally:
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"soak: the store, supervisor logs and runs.log are kept in {workdir}")
    return 0 if ok else 1
