"""gunicorn settings for `cds-hooks serve` (also `gunicorn -c python:cds_hooks.gunicorn_conf`).

Sized by measurement (docs/performance.md): a hook call is CPU-bound (JSON parse, rules) while it
holds the GIL, and I/O-bound while it waits on the EHR's FHIR server. So one worker process per
core for CPU, a few threads per worker so that FHIR waits and slow clients do not idle a core.
"""

from __future__ import annotations

import gc
import math
import os
from typing import Any

from cds_hooks.commands.serve import DEFAULT_THREADS  # one value for both launchers

# A request body of 1,000 resources makes ~250,000 containers; the default gen-0 threshold (700)
# runs the collector hundreds of times per call, and each full collection walks the whole heap.
# Measured on 1,000 / 10,000 resources: see docs/performance.md ("garbage collector").
GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    """Freeze what start-up built (knowledge, schemas, modules) and collect less often.

    Frozen objects are never scanned again (and, before fork, their pages stay shared between
    workers); the parsed request is acyclic and freed by reference counting, so the collector has
    little to find in it.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def default_workers() -> int:
    """One process per core: the hook path is CPU-bound while it holds the GIL."""
    return max(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2)


def timeouts(deadline: float) -> dict[str, int]:
    """Worker timeout a little past the call deadline: a call that keeps its deadline is never
    killed, a stuck worker is replaced soon after."""
    limit = math.ceil(deadline) + 5  # parse and answer a body of MAX_BODY_BYTES after the deadline
    return {"timeout": limit, "graceful_timeout": limit}


def settings(deadline: float) -> dict[str, Any]:
    """gunicorn settings for an app whose FHIR deadline is `deadline` (CLI flags override them)."""
    return {
        "worker_class": "gthread",
        "workers": default_workers(),
        "threads": DEFAULT_THREADS,
        # EHRs call the same service over and over: keep their connections open between calls,
        # longer than common proxies' idle timeout (60 s) so that the proxy closes first.
        "keepalive": 75,
        # Build the app once in the master: start-up errors stop the server before any fork, and
        # the knowledge is shared copy-on-write by the workers.
        "preload_app": True,
        "accesslog": None,  # the app logs each hook call itself (observability)
        # No gunicornc control socket: unused, and two servers of one user would share its path.
        "control_socket_disable": True,
        **timeouts(deadline),
    }


# Module-level names, so that this file works as `gunicorn -c python:cds_hooks.gunicorn_conf`.
def _deadline() -> float:
    from cds_hooks import settings as settings_module

    return settings_module.load().fhir.deadline_seconds


wsgi_app = "cds_hooks.app:create_app()"
bind = [os.environ.get("CDS_BIND", "127.0.0.1:8080")]
globals().update(settings(_deadline()))


def pre_fork(server: Any, worker: Any) -> None:
    tune_gc()  # in the master after preload: the app's objects are frozen before each fork


def post_fork(server: Any, worker: Any) -> None:
    gc.set_threshold(*GC_THRESHOLDS)
