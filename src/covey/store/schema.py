"""The store's tables, versioned; each migration runs in the transaction that records it.

Version 1 is the schema of covey 0.1 as it shipped; later versions only add to it, so a
store written by an older covey opens in a newer one (and is refused, with a message, the
other way round).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from covey.errors import StoreError
from covey.store.writer import Tx

SCHEMA_VERSION = 5

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE batches (
        id TEXT PRIMARY KEY,
        name TEXT,
        created REAL NOT NULL,
        idempotency_key TEXT UNIQUE,
        total INTEGER NOT NULL,
        owner TEXT NOT NULL
    );
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        batch_id TEXT NOT NULL REFERENCES batches(id),
        seq INTEGER NOT NULL,
        name TEXT NOT NULL,
        service_base TEXT NOT NULL,
        spec TEXT NOT NULL,
        state TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        runs INTEGER NOT NULL DEFAULT 0,
        losses INTEGER NOT NULL DEFAULT 0,
        not_before REAL,
        exit_code INTEGER,
        error TEXT,
        node TEXT,
        started REAL,
        finished REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_state ON jobs(state, not_before);
    CREATE INDEX jobs_batch ON jobs(batch_id, seq);
    CREATE TABLE attempts (
        id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs(id),
        n INTEGER NOT NULL,
        service TEXT NOT NULL,
        mode TEXT NOT NULL,
        engine_id TEXT,
        phase TEXT NOT NULL,
        outcome TEXT,
        exit_code INTEGER,
        error TEXT,
        node TEXT,
        created REAL NOT NULL,
        started REAL,
        ended REAL,
        stop_reason TEXT,
        logs_saved INTEGER NOT NULL DEFAULT 0,
        removed INTEGER NOT NULL DEFAULT 0,
        UNIQUE (job_id, n)
    );
    CREATE INDEX attempts_open ON attempts(removed, phase);
    CREATE TABLE transitions (
        id INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL,
        attempt_id TEXT,
        state TEXT NOT NULL,
        at REAL NOT NULL,
        source TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX transitions_job ON transitions(job_id, id);
    CREATE TABLE logs (
        attempt_id TEXT NOT NULL,
        stream TEXT NOT NULL,
        data BLOB NOT NULL,
        size INTEGER NOT NULL,
        truncated INTEGER NOT NULL,
        PRIMARY KEY (attempt_id, stream)
    );
    """,
    # 2: who holds work (so nothing is owned by a process that no longer exists), logs that
    # say whether the engine gave all of them, and an index for retention by age. A v1
    # foreground batch with unfinished jobs has no holder to hand it over: the queue's now.
    2: """
    CREATE TABLE holders (
        id TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        proc_started REAL NOT NULL,
        since REAL NOT NULL,
        heartbeat REAL NOT NULL
    );
    ALTER TABLE batches ADD COLUMN holder TEXT;
    CREATE INDEX batches_holder ON batches(holder) WHERE holder IS NOT NULL;
    ALTER TABLE logs ADD COLUMN complete INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX jobs_finished ON jobs(finished) WHERE finished IS NOT NULL;
    UPDATE batches SET owner='queue' WHERE owner='run' AND EXISTS (SELECT 1 FROM jobs
        WHERE jobs.batch_id=batches.id AND jobs.state NOT IN
        ('succeeded','failed','timed_out','rejected','lost','cancelled'));
    """,
    # 3: pipelines. A batch's stages (a fan-out over another stage's output keeps its
    # template until its items are known), what each stage needs, and per job its stage, its
    # instance number and ``done``: ended with its result (logs) recorded, which is what a
    # dependent waits for. Jobs of flat batches have no stage and never read ``done``. A
    # batch cancelled as a whole makes no more fan-outs. ``outputs``: a job's stdout shared as
    # a swarm config ahead of the jobs that read it (covey.sharer), until its batch is over.
    3: """
    CREATE TABLE stages (
        batch_id TEXT NOT NULL REFERENCES batches(id),
        name TEXT NOT NULL,
        seq INTEGER NOT NULL,
        template TEXT,
        items_from TEXT,
        size INTEGER,
        skipped TEXT,
        PRIMARY KEY (batch_id, name)
    );
    CREATE TABLE needs (
        batch_id TEXT NOT NULL,
        stage TEXT NOT NULL,
        need TEXT NOT NULL,
        condition TEXT NOT NULL,
        inputs INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (batch_id, stage, need)
    );
    CREATE INDEX needs_need ON needs(batch_id, need);
    ALTER TABLE batches ADD COLUMN cancelled INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN stage TEXT;
    ALTER TABLE jobs ADD COLUMN idx INTEGER;
    ALTER TABLE jobs ADD COLUMN done INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX jobs_stage ON jobs(batch_id, stage, done, state) WHERE stage IS NOT NULL;
    CREATE INDEX jobs_stage_idx ON jobs(batch_id, stage, idx) WHERE stage IS NOT NULL;
    CREATE TABLE outputs (
        attempt_id TEXT PRIMARY KEY,
        batch_id TEXT NOT NULL,
        config_id TEXT NOT NULL
    );
    CREATE INDEX outputs_batch ON outputs(batch_id)
    """,
    # 4: images. Each image of a batch pinned to one digest (or why it runs unpinned), asked
    # once per batch so retries and later fan-outs run the same program (covey.images); per
    # attempt the reference it ran, and since when its node has been pulling the image.
    4: """
    CREATE TABLE images (
        batch_id TEXT NOT NULL,
        image TEXT NOT NULL,
        digest TEXT,
        note TEXT,
        resolved REAL NOT NULL,
        PRIMARY KEY (batch_id, image)
    );
    ALTER TABLE attempts ADD COLUMN image TEXT;
    ALTER TABLE attempts ADD COLUMN pulling REAL
    """,
    # 5: steering. A batch's own concurrency cap and whether its admissions are paused
    # (``covey throttle``/``pause``/``resume``, read by whichever process runs it), and per
    # job its priority; due jobs are read highest priority first, oldest first within one,
    # from an index that holds only the due ones. Schedules: a batch file submitted by the
    # supervisor at each fire time of a cron expression (covey.schedules).
    5: """
    ALTER TABLE batches ADD COLUMN max_concurrent INTEGER;
    ALTER TABLE batches ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX jobs_due ON jobs(priority DESC, created, seq)
        WHERE state IN ('queued', 'retrying') AND cancel_requested=0;
    CREATE TABLE schedules (
        name TEXT PRIMARY KEY,
        cron TEXT NOT NULL,
        tz TEXT NOT NULL,
        file TEXT NOT NULL,
        created REAL NOT NULL,
        paused INTEGER NOT NULL DEFAULT 0,
        next_fire REAL NOT NULL,
        last_fire REAL,
        last_batch TEXT,
        last_error TEXT
    )
    """,
}


async def version(tx: Tx, path: Path) -> int:
    """The schema version of an open store (0: empty file); refuses foreign databases."""
    if await tx.one("SELECT name FROM sqlite_master WHERE type='table' AND name='meta'"):
        row = await tx.one("SELECT value FROM meta WHERE key='schema'")
        found = int(row[0]) if row else 0
    else:
        tables = await tx.one("SELECT count(*) FROM sqlite_master")
        if tables and tables[0]:
            raise StoreError(f"{path} holds another program's database")
        found = 0
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {found}, newer than this covey ({SCHEMA_VERSION}):"
            " upgrade covey"
        )
    return found


async def migrate(tx: Tx, path: Path) -> None:
    """Bring the store to :data:`SCHEMA_VERSION` (inside the caller's write transaction)."""
    current = await version(tx, path)
    for step in range(current + 1, SCHEMA_VERSION + 1):
        for statement in filter(str.strip, MIGRATIONS[step].split(";")):
            await tx.run(statement)
        if step == 1:
            await tx.run(
                "INSERT INTO meta(key, value) VALUES ('store_id', ?)", (secrets.token_hex(6),)
            )
        await tx.run(
            "INSERT INTO meta(key, value) VALUES ('schema', ?)"
            " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (str(step),),
        )
