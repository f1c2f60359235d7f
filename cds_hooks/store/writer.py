"""The audit queue: the audit of a hook call is written by a thread, off the request's path.

What waits and what does not (docs/storage.md, "The audit queue"):
* queued: every hook call's audit: the `hook_calls` row of a call without cards (most calls:
  orders no rule is about; failed calls) and, for a call with cards, its `hook_calls` and
  `cards` rows and the `suppression_state` update of the order-select cards it showed. The
  suppression *decision* stays in the request (a read by primary key). One writer thread per
  process writes what is queued in one transaction per batch (at most BATCH_CALLS calls),
  AUDIT_FLUSH_SECONDS after the first call of a batch arrived, or at once when a batch is full
  or someone drains.
* seen at once in this process (`Pending`): the order-select cards a queued call showed count
  for the next order-sign of this process as if written (an overlay the writer clears after
  its commit), and a feedback POST naming a queued card drains the queue before it looks the
  card up.
* seen by other processes and hosts after the flush: until then a select -> sign repeat there
  may show again (a card shown, never one hidden), and feedback they receive for the card is
  stored flagged `known_card` false, then reconciled by this writer when it writes the card
  (feedback.reconcile; the race with it is closed by a lock both take, see there).
* never queued: feedback (one fsynced transaction before its 200).
* bounded: at most AUDIT_QUEUE_SIZE calls wait; when the queue is full the request writes its
  own audit (slower, never dropped). 0 turns the queue off: everything in the request.
* drained: by `Store.close()`, at interpreter exit (atexit) and at gunicorn worker exit
  (gunicorn_conf.worker_exit).
* lost on a crash (SIGKILL, power): at most the calls still queued: AUDIT_QUEUE_SIZE calls
  (with or without cards), in practice the calls of the last AUDIT_FLUSH_SECONDS. Never
  acknowledged feedback.
* WAL checkpoints (SQLite): the writer runs a PASSIVE checkpoint at most every
  CHECKPOINT_SECONDS after a batch, so the checkpoint's fsync does not land in a request
  (db.make_engine's `wal_autocheckpoint` stays as a far backstop that bounds the WAL).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from cds_hooks.store.db import checkpoint, writing

log = logging.getLogger(__name__)

BATCH_CALLS = 200  # calls per write transaction at most
CHECKPOINT_SECONDS = 1.0  # the writer's WAL checkpoints, at most this often (SQLite)


class Pending:
    """What the queued calls of this process showed, until the writer has committed them.

    `shown_at_select(fp)`: the newest order-select card a queued call showed for a fingerprint,
    so this process's next order-sign is decided as if it were written (suppression.decide).
    `holds(uuids)`: a queued card is named (feedback then drains the queue first).
    Why an overlay and not a drain at order-sign: order-sign follows order-select within
    seconds, so a drain there would put the commit (the cost the queue removes) back in most
    order-sign requests; the overlay is two dictionary lookups. Per process: a fork starts empty.
    """

    def __init__(self) -> None:
        self._fresh()

    def _fresh(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._selects: dict[str, tuple[str, datetime]] = {}  # fingerprint -> (card, at)
        self._cards: set[str] = set()

    def _here(self) -> None:
        if self._pid != os.getpid():
            self._fresh()

    def add(self, cards: Iterable[str], selects: Iterable[tuple[str, str]], at: datetime) -> None:
        """Before the call is queued: its card uuids, and (fingerprint, card) shown at select."""
        self._here()
        with self._lock:
            self._cards.update(cards)
            for fp, card in selects:
                earlier = self._selects.get(fp)
                if earlier is None or earlier[1] <= at:
                    self._selects[fp] = (card, at)

    def discard(self, cards: Iterable[str], selects: Iterable[tuple[str, str]]) -> None:
        """After the writer committed them (or gave up): the database answers from now on."""
        self._here()
        with self._lock:
            self._cards.difference_update(cards)
            for fp, card in selects:
                if self._selects.get(fp, ("",))[0] == card:  # not a newer call's card
                    del self._selects[fp]

    def shown_at_select(self, fingerprint: str) -> tuple[str, datetime] | None:
        self._here()
        return self._selects.get(fingerprint)

    def holds(self, uuids: Iterable[str]) -> bool:
        self._here()
        with self._lock:
            return not self._cards.isdisjoint(uuids)

    def __len__(self) -> int:
        return len(self._cards)


class AuditQueue:
    """A bounded queue of audit items and the thread that writes them, per process."""

    def __init__(
        self,
        engine: Engine,
        write: Callable[[Connection, Sequence[Any]], None],
        *,
        size: int = 1000,
        flush_seconds: float = 0.2,
        describe: Callable[[Any], str] = repr,
        written: Callable[[Sequence[Any]], None] = lambda batch: None,
    ):
        self.engine = engine
        self._write = write
        self._written = written  # after each batch is committed (or given up on)
        self._checkpointed = 0.0
        self.size = size
        self.flush_seconds = flush_seconds
        self._describe = describe
        self._fresh()
        _queues.add(self)

    def _fresh(self) -> None:
        # Per process: a fork copies the queue, its lock and no thread. The child starts empty.
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._items: deque[Any] = deque()
        self._queued = self._done = self._wanted = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Any) -> bool:
        """Queue one call's audit; False when it must be written by the caller (full, off)."""
        if self.size <= 0:
            return False
        if self._pid != os.getpid():
            self._fresh()
        with self._cond:
            if self._closed or len(self._items) >= self.size:
                return False
            self._items.append(item)
            self._queued += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="cds-audit", daemon=True)
                self._thread.start()
            if len(self._items) == BATCH_CALLS:
                self._cond.notify_all()
        return True

    def drain(self, timeout: float | None = 30.0) -> bool:
        """Write everything queued so far now; True when it is written (or given up on)."""
        if self._pid != os.getpid() or self._thread is None:
            return True
        with self._cond:
            target = self._queued
            self._wanted = max(self._wanted, target)
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._done >= target, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Drain, then stop the thread; later puts return False (written by the caller)."""
        if self._pid != os.getpid():
            return
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        # The thread ends when the queue is empty (the next put starts another): an idle thread
        # would keep its store, engine and open files alive after the app is dropped.
        while True:
            with self._cond:
                if not self._items:
                    self._thread = None
                    return
                # Gather a batch: wait out the flush interval unless full, drained or closing.
                self._cond.wait_for(
                    lambda: (
                        self._closed or len(self._items) >= BATCH_CALLS or self._wanted > self._done
                    ),
                    self.flush_seconds,
                )
                batch = [self._items.popleft() for _ in range(min(BATCH_CALLS, len(self._items)))]
            try:
                self._write_batch(batch)
            finally:
                try:
                    self._written(batch)
                except Exception:
                    log.exception("clearing the pending audit of %d calls failed", len(batch))
                with self._cond:
                    self._done += len(batch)
                    self._cond.notify_all()

    def _write_batch(self, batch: list[Any]) -> None:
        try:
            with writing(self.engine, durable=False) as conn:
                self._write(conn, batch)
            self._checkpoint()
            return
        except Exception:
            log.warning("writing %d queued audit records at once failed; one by one", len(batch))
        for item in batch:  # a bad record costs itself only
            try:
                with writing(self.engine, durable=False) as conn:
                    self._write(conn, [item])
            except Exception:
                log.exception(
                    "audit of hook call %s failed; its record is lost", self._describe(item)
                )

    def _checkpoint(self) -> None:
        # SQLite: the WAL's pages copied into the database here, not by the request whose commit
        # crosses wal_autocheckpoint (its fsync was a request's p99). PASSIVE: never waits for,
        # nor blocks, readers and writers; another process checkpointing at once is harmless.
        now = time.monotonic()
        if now - self._checkpointed < CHECKPOINT_SECONDS:
            return
        self._checkpointed = now
        try:
            checkpoint(self.engine)
        except Exception:
            log.warning("WAL checkpoint failed; the next batch tries again", exc_info=True)


_queues: weakref.WeakSet[AuditQueue] = weakref.WeakSet()


def drain_all(timeout: float = 30.0) -> None:
    """Write what every queue of this process holds (at exit: atexit, gunicorn worker_exit)."""
    for queue in list(_queues):
        try:
            queue.close(timeout)
        except Exception:
            log.exception("draining the audit queue at exit failed")


atexit.register(drain_all)
