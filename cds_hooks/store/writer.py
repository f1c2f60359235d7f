"""The audit queue: the audit of a hook call without cards is written by a thread, off its path.

What waits and what does not (docs/storage.md, "The audit queue"):
* queued: the `hook_calls` row of a call that produced no card (most calls: orders no rule is
  about; failed calls). One writer thread per process writes what is queued in one transaction
  per batch (at most BATCH_CALLS calls), AUDIT_FLUSH_SECONDS after the first call of a batch
  arrived, or at once when a batch is full or someone drains.
* in the request: a call with cards (the suppression decision, its audit rows and the in-place
  `suppression_state` update, one transaction), so the next call and feedback sent to any
  process or host find its cards at once; and every feedback POST (fsynced before its 200).
* bounded: at most AUDIT_QUEUE_SIZE calls wait; when the queue is full the request writes its
  own audit (slower, never dropped). 0 turns the queue off.
* drained: by `Store.close()`, at interpreter exit (atexit) and at gunicorn worker exit
  (gunicorn_conf.worker_exit).
* lost on a crash (SIGKILL, power): at most the calls still queued: AUDIT_QUEUE_SIZE, in
  practice the calls of the last AUDIT_FLUSH_SECONDS. Never a card, never feedback.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from cds_hooks.store.db import writing

log = logging.getLogger(__name__)

BATCH_CALLS = 200  # calls per write transaction at most


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
    ):
        self.engine = engine
        self._write = write
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
                with self._cond:
                    self._done += len(batch)
                    self._cond.notify_all()

    def _write_batch(self, batch: list[Any]) -> None:
        try:
            with writing(self.engine, durable=False) as conn:
                self._write(conn, batch)
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


_queues: weakref.WeakSet[AuditQueue] = weakref.WeakSet()


def drain_all(timeout: float = 30.0) -> None:
    """Write what every queue of this process holds (at exit: atexit, gunicorn worker_exit)."""
    for queue in list(_queues):
        try:
            queue.close(timeout)
        except Exception:
            log.exception("draining the audit queue at exit failed")


atexit.register(drain_all)
