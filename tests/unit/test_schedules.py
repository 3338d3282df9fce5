"""covey.schedules: fire times in a time zone, the missed-fire policy, and exactly one batch
per fire time (also when the note that it fired was lost); the supervisor killed at the fire
time on a real engine is in tests/engine/test_steering.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from covey import schedules
from covey.errors import SpecError
from covey.store import ScheduleRow, Store

BERLIN = "Europe/Berlin"


def at(text: str, tz: str = "UTC") -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


def test_fire_times_are_wall_clock_times_of_the_schedule_zone() -> None:
    winter = schedules.next_after("0 2 * * *", BERLIN, at("2026-01-10T12:00", BERLIN))
    summer = schedules.next_after("0 2 * * *", BERLIN, at("2026-07-10T12:00", BERLIN))
    assert winter == at("2026-01-11T02:00", BERLIN) == at("2026-01-11T01:00")
    assert summer == at("2026-07-11T02:00", BERLIN) == at("2026-07-11T00:00")


def test_clock_changes_fire_a_fixed_time_once() -> None:
    # spring: 02:30 does not exist on 2026-03-29 in Berlin; cron fires right after the gap
    spring = schedules.next_after("30 2 * * *", BERLIN, at("2026-03-28T12:00", BERLIN))
    assert spring == at("2026-03-29T01:00")  # 03:00 CEST
    # autumn: 02:30 exists twice on 2026-10-25; it fires once, the first time
    first = schedules.next_after("30 2 * * *", BERLIN, at("2026-10-24T12:00", BERLIN))
    again = schedules.next_after("30 2 * * *", BERLIN, first)
    assert first == at("2026-10-25T00:30")
    assert again == at("2026-10-26T01:30")


@pytest.mark.parametrize(
    ("cron", "tz", "what"), [("61 * * * *", "UTC", "--cron"), ("0 2 * * *", "Mars/Olympus", "--tz")]
)
def test_bad_expressions_and_zones_name_their_flag(cron: str, tz: str, what: str) -> None:
    with pytest.raises(SpecError, match=what):
        schedules.check(cron, tz)


def row(**kw: Any) -> ScheduleRow:
    base: dict[str, Any] = {
        "name": "n",
        "cron": "0 * * * *",
        "tz": "UTC",
        "file": "/x.yaml",
        "created": 0.0,
        "paused": False,
        "next_fire": at("2026-01-01T10:00"),
    }
    return ScheduleRow(**{**base, **kw})


def test_the_latest_missed_fire_time_fires_once_and_older_ones_are_skipped() -> None:
    assert schedules.due(row(), at("2026-01-01T09:59")) is None
    assert schedules.due(row(), at("2026-01-01T10:00")) == (at("2026-01-01T10:00"), 0)
    # down from 09:00 to 13:20: 10, 11, 12 and 13 o'clock were missed; 13:00 fires
    assert schedules.due(row(), at("2026-01-01T13:20")) == (at("2026-01-01T13:00"), 3)
    assert schedules.due(row(paused=True), at("2026-01-01T13:20")) is None


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.open(tmp_path / "covey.db") as opened:
        yield opened


def batch_file(tmp_path: Path) -> Path:
    path = tmp_path / "nightly.yaml"
    path.write_text(json.dumps({"jobs": [{"image": "busybox", "command": ["true"]}]}))
    return path


class Work:
    def __init__(self) -> None:
        self.woken = 0

    def set(self) -> None:
        self.woken += 1


async def test_each_fire_time_submits_one_batch_even_if_its_note_was_lost(
    store: Store, tmp_path: Path
) -> None:
    path = batch_file(tmp_path)
    first = at("2026-01-01T10:00")
    assert await store.schedule_add("nightly", "0 * * * *", "UTC", str(path), first)
    assert not await store.schedule_add("nightly", "0 * * * *", "UTC", str(path), first)
    ctx: Any = SimpleNamespace(store=store, new_work=False, work=Work())
    made = await schedules.fire_due(ctx, first + 5)
    assert len(made) == 1 and ctx.new_work and ctx.work.woken == 1
    (fired,) = await store.schedules()
    assert (fired.last_fire, fired.last_batch, fired.next_fire) == (
        first,
        made[0],
        at("2026-01-01T11:00"),
    )
    # a supervisor killed after the submit, before that note: the same fire time again
    await store.schedule_pause("nightly", False, first)  # next_fire back to 10:00
    assert await schedules.fire_due(ctx, first + 7) == []  # the batch made before is kept
    batches = await store.batches()
    assert [b.id for b in batches] == made
    assert batches[0].name == "nightly@2026-01-01T10:00+00:00"


async def test_a_fire_time_whose_file_is_gone_fails_once_and_says_why(
    store: Store, tmp_path: Path
) -> None:
    first = at("2026-01-01T10:00")
    await store.schedule_add("gone", "0 * * * *", "UTC", str(tmp_path / "nope.yaml"), first)
    ctx: Any = SimpleNamespace(store=store, new_work=False, work=Work())
    assert await schedules.fire_due(ctx, first + 1) == []
    (fired,) = await store.schedules()
    assert fired.last_error is not None and "nope.yaml" in fired.last_error
    assert fired.next_fire == at("2026-01-01T11:00")
    assert await store.batches() == []
