"""Leases: which instance does which piece of work, with PostgreSQL as the coordinator.

Every piece of work that must happen in one place at a time is a named lease:
``source:<name>`` (polling or subscribing to a source) and ``topic:<name>`` (a topic's
detector). An instance renews what it holds every third of the lease period and takes
what is free or expired, up to its fair share (the pieces divided among the instances
seen alive, rounded up); past its share it lets go of the surplus, so a second instance
that starts gets half of the work within a period. A killed instance's leases expire
after one period and are taken over.

Each acquisition bumps the lease's ``epoch``. Work commits through :meth:`Leases.fence`
in its own transaction: the lease row is locked (``FOR UPDATE``) and must still be
this instance's, at the epoch it was acquired at, and unexpired; otherwise the
transaction is refused and nothing it wrote lands (:class:`LeaseLost`). So an instance
that paused past its lease (a long GC, a frozen VM) cannot commit over its successor.

Times are the instances' wall clocks: keep them in sync (NTP) to well within a period.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import uuid
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from monitor.clock import Clock, SystemClock
from monitor.store import Store, instances, leases

log = logging.getLogger("stormwatch")

PERIOD = 30.0  # seconds a lease lasts unless renewed


class LeaseLost(Exception):
    """The work's lease is no longer this instance's: its transaction is refused."""


def instance_name() -> str:
    """``host:pid:random``: unique per process, readable in ``status`` and in logs."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Leases:
    def __init__(self, store: Store, names: Iterable[str], *, holder: str | None = None,
                 period: float = PERIOD, clock: Clock | None = None) -> None:
        self.store = store
        self.names = sorted(set(names))
        self.holder = holder or instance_name()
        self.period = period
        self.clock = clock or SystemClock()
        self.held: dict[str, int] = {}  # name -> the epoch it was acquired at
        self._rows: set[str] = set()    # lease rows known to exist
        self._started = self.clock.now()

    # -- the keeper's round ------------------------------------------------------------
    def keep(self) -> dict[str, int]:
        """One round: heartbeat, renew, let go of the surplus, take up to the fair share.
        Returns what is held now (name -> epoch). A database fault leaves the local view
        as it was; leases not renewed in time are simply lost (and fenced)."""
        now = self.clock.now()
        with self.store.transaction() as conn:
            values = {"seen_at": now}
            conn.execute(self.store.upsert(instances).values(
                name=self.holder, host=socket.gethostname(), pid=os.getpid(),
                started_at=self._started, **values).on_conflict_do_update(
                index_elements=["name"], set_=values))
            alive = conn.execute(sa.select(sa.func.count()).select_from(instances).where(
                instances.c.seen_at >= now - self.period)).scalar_one()
            new = [n for n in self.names if n not in self._rows]
            if new:  # a row per lease, once
                conn.execute(self.store.upsert(leases).on_conflict_do_nothing(
                    index_elements=["name"]), [{"name": n, "holder": None, "expires_at": 0.0,
                                                "epoch": 0} for n in new])
                self._rows.update(new)
        share = math.ceil(len(self.names) / max(1, alive))
        held: dict[str, int] = {}
        for name, epoch in sorted(self.held.items()):
            if self._renew(name, epoch, now):
                held[name] = epoch
            else:
                log.warning("lost the lease on %s (another instance has it now)", name)
        for name in sorted(held)[share:]:  # surplus: another instance came
            self._release(name, held.pop(name))
            log.info("left %s to another instance", name)
        for name in self.names:
            if len(held) >= share:
                break
            if name not in held:
                epoch = self._acquire(name, now)
                if epoch is not None:
                    held[name] = epoch
                    log.info("took %s (epoch %d)", name, epoch)
        self.held = held
        return dict(held)

    def _renew(self, name: str, epoch: int, now: float) -> bool:
        with self.store.transaction() as conn:
            done = conn.execute(leases.update().where(
                leases.c.name == name, leases.c.holder == self.holder,
                leases.c.epoch == epoch, leases.c.expires_at >= now)
                .values(expires_at=now + self.period))
            return bool(done.rowcount)

    def _acquire(self, name: str, now: float) -> int | None:
        with self.store.transaction() as conn:
            epoch = conn.execute(leases.update().where(
                leases.c.name == name,
                sa.or_(leases.c.holder.is_(None), leases.c.expires_at < now))
                .values(holder=self.holder, expires_at=now + self.period,
                        epoch=leases.c.epoch + 1).returning(leases.c.epoch)).scalar()
            return int(epoch) if epoch is not None else None

    def _release(self, name: str, epoch: int) -> None:
        with self.store.transaction() as conn:
            conn.execute(leases.update().where(
                leases.c.name == name, leases.c.holder == self.holder,
                leases.c.epoch == epoch).values(holder=None, expires_at=0.0))

    def release_all(self) -> None:
        """On a clean stop: everything goes back at once (a successor need not wait)."""
        for name, epoch in list(self.held.items()):
            try:
                self._release(name, epoch)
            except Exception as e:  # noqa: BLE001 - they expire anyway
                log.warning("could not hand back %s: %s", name, e)
        self.held = {}
        try:
            with self.store.transaction() as conn:
                conn.execute(instances.delete().where(instances.c.name == self.holder))
        except Exception:  # noqa: BLE001 - it ages out anyway
            pass

    # -- fencing ---------------------------------------------------------------------
    def holds(self, name: str) -> bool:
        return name in self.held

    def fence(self, conn: Connection, name: str, epoch: int | None = None) -> None:
        """In the transaction that commits work of ``name``: refuse it (LeaseLost) unless
        this instance still holds the lease, at ``epoch`` (default: as held now)."""
        if epoch is None:
            epoch = self.held.get(name)
        row = conn.execute(sa.select(leases.c.holder, leases.c.epoch, leases.c.expires_at)
                           .where(leases.c.name == name).with_for_update()).first()
        if (epoch is None or row is None or row.holder != self.holder or row.epoch != epoch
                or row.expires_at < self.clock.now()):
            self.held.pop(name, None)
            raise LeaseLost(f"{name} is no longer this instance's")
