"""Recovery from the journal, under a mock clock and a chosen wall-clock time for each start."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from runtime_harness import Running

from acwd.core.config import Settings
from acwd.core.errors import DomainError, ErrorCode
from acwd.core.views import Wrapup
from acwd.runtime.journal import Journal, JournalRefused
from acwd.runtime.node import Node

pytestmark = pytest.mark.anyio
T0 = 1_800_000_000.0


def make(path: Path, **extra: Any) -> Callable[[float], Node]:
    data = {"journal": {"path": str(path), "commit_interval_ms": 0}, **extra}
    settings = Settings.from_dict(data)
    return lambda wall: Node(settings, Journal(settings.journal, inline=True), wall=wall)


@asynccontextmanager
async def started(node: Node) -> AsyncIterator[Running]:
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        running = Running(node)
        await running.settle()
        yield running
        tg.cancel_scope.cancel()


async def in_acw(node: Node, work_id: str = "w1") -> float:
    await node.login("alice", None)
    await node.submit(work_id, "default")
    await anyio.sleep(0)
    await node.accept(work_id)
    leg = await node.end(work_id)
    deadline: float = leg.acw.deadline
    return deadline


async def test_acw_that_expired_while_down_ends_at_start_with_exact_seconds(tmp_path: Path) -> None:
    new = make(tmp_path / "j.db")
    async with started(new(T0)) as first:
        deadline = await in_acw(first.node)
        started_at = first.node.agent_view("alice").legs[0].acw.started_at
    async with started(new(T0 + 3600)) as second:
        records = await second.node.journal.wrapups_of("w1")
        assert [r.reason for r in records] == ["timeout"]
        assert records[0].acw_ended_at == deadline
        assert records[0].acw_seconds == pytest.approx(deadline - started_at)
        assert second.node.work_view("w1").state == "completed"


async def test_acw_still_running_keeps_its_deadline(tmp_path: Path) -> None:
    new = make(tmp_path / "j.db")
    async with started(new(T0)) as first:
        deadline = await in_acw(first.node)
    async with started(new(T0 + 30)) as second:
        node = second.node
        view = node.agent_view("alice")
        assert view.state == "acw" and view.legs[0].acw.deadline == deadline
        await anyio.sleep(deadline - node.clock.now() - 0.001)
        await second.settle()
        assert node.agent_view("alice").state == "acw"
        await anyio.sleep(0.002)
        await second.settle()
        assert node.agent_view("alice").legs == ()
        assert [r.acw_ended_at for r in await node.journal.wrapups_of("w1")] == [deadline]


async def test_offer_in_flight_goes_back_keeping_its_place(tmp_path: Path) -> None:
    new = make(tmp_path / "j.db")
    async with started(new(T0)) as first:
        await first.node.submit("old", "default")
        await anyio.sleep(1)
        await first.node.login("alice", None)
        await first.settle()
        assert first.node.work_view("old").state == "offered"
        await first.node.submit("new", "default")
    async with started(new(T0 + 5)) as second:
        node = second.node
        assert node.work_view("old").state == "queued"
        assert node.work_view("old").enqueued_at == T0
        assert node.agent_view("alice").legs == ()
        await node.login("bob", None)
        await second.settle()
        assert node.work_view("old").agent_id == "bob"  # first in line still
        assert node.work_view("new").state == "queued"


async def test_pending_status_and_forced_disposition_survive(tmp_path: Path) -> None:
    new = make(
        tmp_path / "j.db",
        defaults={"acw_mode": "forced", "acw_seconds": 60.0, "disconnect_grace_s": 600.0},
    )
    async with started(new(T0)) as first:
        deadline = await in_acw(first.node)
        await first.node.set_status("alice", "away", "lunch")
        await first.node.acw_complete("w1", Wrapup(disposition="sold", notes="n"))
    async with started(new(T0 + 10)) as second:
        node = second.node
        view = node.agent_view("alice")
        assert (view.state, view.pending_status) == ("acw", "away")
        await anyio.sleep(deadline - node.clock.now() + 0.001)
        await second.settle()
        [record] = await node.journal.wrapups_of("w1")
        assert (record.disposition, record.notes, record.reason) == ("sold", "n", "timeout")
        view = node.agent_view("alice")
        assert (view.status, view.reason) == ("away", "lunch")


async def test_transfer_in_progress_survives(tmp_path: Path) -> None:
    queues = {"default": {}, "billing": {}}
    new = make(tmp_path / "j.db", queues=queues)
    async with started(new(T0)) as first:
        node = first.node
        await node.login("alice", None, queues=["default"])
        await node.submit("w1", "default")
        await anyio.sleep(0)
        await node.accept("w1")
        await node.transfer("w1", "billing")
    async with started(new(T0 + 5)) as second:
        node = second.node
        item = node.work_view("w1")
        assert (item.queue, item.state, item.enqueued_at) == ("billing", "queued", T0)
        assert node.agent_view("alice").legs[0].state == "wrapping"
        await node.login("bob", None, queues=["billing"])
        await second.settle()
        assert node.work_view("w1").agent_id == "bob"


async def test_disconnect_grace_counts_from_the_restart(tmp_path: Path) -> None:
    new = make(tmp_path / "j.db")
    async with started(new(T0)) as first:
        await first.node.login("alice", None)
    async with started(new(T0 + 1000)) as second:
        node = second.node
        assert node.agent_view("alice").connected is False
        await anyio.sleep(29.9)
        assert node.agent_view("alice").state == "available"
        await anyio.sleep(0.2)
        assert node.agent_view("alice").state == "offline"


async def test_corrupt_and_newer_journals_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JournalRefused, match="Restore it from a backup"):
        Journal(Settings.from_dict({"journal": {"path": str(bad)}}).journal).open()
    newer = tmp_path / "newer.db"
    journal = Journal(Settings.from_dict({"journal": {"path": str(newer)}}).journal)
    journal.open()
    assert journal._db is not None
    journal._db.execute("UPDATE schema_version SET version = 99")
    journal.close()
    with pytest.raises(JournalRefused, match="newer than this acwd knows"):
        journal.open()


async def test_failing_writes_fail_requests_and_recover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    new = make(tmp_path / "j.db")
    node = new(T0)
    async with started(node) as running:
        await node.login("alice", None)
        journal = node.journal
        real_write = journal._write

        def full_disk(*rows: Any) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(journal, "_write", full_disk)
        with pytest.raises(DomainError) as refused:
            await node.submit("w1", "default")
        assert refused.value.code is ErrorCode.INTERNAL
        assert "disk is full" in refused.value.message
        assert journal.failing is not None
        assert node.agent_view("alice").agent_id == "alice"  # reads still served
        monkeypatch.setattr(journal, "_write", real_write)
        await node.submit("w2", "default")
        await running.settle()
        assert journal.failing is None
    async with started(new(T0 + 1)) as second:
        # w1 was never acknowledged, yet the retry stored it: nothing is lost either way.
        assert {second.node.work_view(w).work_id for w in ("w1", "w2")} == {"w1", "w2"}
