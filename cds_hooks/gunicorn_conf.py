"""gunicorn settings for `cds-hooks serve` (also `gunicorn -c python:cds_hooks.gunicorn_conf`).

Sized by measurement (docs/performance.md): a hook call is CPU-bound (JSON parse, rules) while it
holds the GIL, and I/O-bound while it waits on the EHR's FHIR server. So one worker process per
core for CPU, a few threads per worker so that FHIR waits and slow clients do not idle a core.
"""

from __future__ import annotations

import gc
import math
import os
from collections.abc import Callable
from pathlib import Path
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


CGROUP_ROOT = "/sys/fs/cgroup"


def cgroup_cpu_limit(
    root: str = CGROUP_ROOT, proc_cgroup: str = "/proc/self/cgroup"
) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 1.5), or None when there is none.

    cgroup v2: `cpu.max` ("<quota> <period>" or "max <period>") of the process's own cgroup and
    each ancestor up to the mount (a container sees its own cgroup as the root); the smallest
    wins. cgroup v1: cpu.cfs_quota_us / cpu.cfs_period_us (-1: no quota). Unreadable: None.
    """
    own = {"v2": "/", "v1": "/"}
    try:
        for line in Path(proc_cgroup).read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                own["v2"] = path
            elif "cpu" in controllers.split(","):
                own["v1"] = path
    except (OSError, ValueError):
        pass
    limits: list[float] = []
    for folder in _self_and_ancestors(Path(root), own["v2"]):
        pair = _read(folder / "cpu.max").split()
        if len(pair) == 2 and pair[0] != "max":
            limits.append(_ratio(pair[0], pair[1]))
    for base in (Path(root) / "cpu", Path(root) / "cpu,cpuacct"):
        for folder in _self_and_ancestors(base, own["v1"]):
            quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
            if quota and period and not quota.startswith("-"):
                limits.append(_ratio(quota, period))
    limits = [limit for limit in limits if limit > 0]
    return min(limits) if limits else None


def _self_and_ancestors(root: Path, path: str) -> list[Path]:
    parts = [part for part in path.split("/") if part and part != ".."]
    return [root.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _read(file: Path) -> str:
    try:
        return file.read_text().strip()
    except OSError:
        return ""


def _ratio(quota: str, period: str) -> float:
    try:
        return int(quota) / int(period) if int(period) > 0 else 0.0
    except ValueError:
        return 0.0


def default_workers(root: str = CGROUP_ROOT, proc_cgroup: str = "/proc/self/cgroup") -> int:
    """One process per CPU this process may use: its CPU affinity, capped by its cgroup's CPU
    quota (a container limited to 1.5 CPUs on a 64-core host gets 2, not 64). The hook path is
    CPU-bound while it holds the GIL, so workers past the quota only add memory and contention;
    threads (below) cover the waits."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cgroup_cpu_limit(root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus or 1, math.ceil(quota))
    return max(1, cpus or 1)


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


def bind_check(allow_unauthenticated: bool = False, announce: bool = True) -> Callable[[Any], None]:
    """gunicorn's `on_starting` hook: the serve command's bind policy for every bind address.

    Runs in the master before any socket is bound, so `gunicorn -c python:cds_hooks.gunicorn_conf
    -b 0.0.0.0:8000` without issuers stops there, as `cds-hooks serve --host 0.0.0.0` does.
    `announce=False`: the caller (`cds-hooks serve`) has already told the operator.
    """

    def on_starting(server: Any) -> None:
        from cds_hooks import settings as settings_module
        from cds_hooks.commands.serve import BindRefused, check_gunicorn_binds

        try:
            notices = check_gunicorn_binds(
                list(server.cfg.bind), settings_module.load(), allow_unauthenticated
            )
        except BindRefused as refused:
            raise RuntimeError(f"cds-hooks: {refused}") from None  # gunicorn: message, exit 1
        for notice in dict.fromkeys(notices) if announce else ():
            server.log.info("cds-hooks: %s", notice)

    return on_starting


def _check_then_preload(server: Any) -> None:
    """`gunicorn -c python:cds_hooks.gunicorn_conf`: the bind policy, then the app built once.

    gunicorn preloads (`preload_app`) before its first hook, so a refused bind would already
    have opened the database; here the master builds the app itself once the binds pass, and the
    forked workers use that one (gunicorn keeps the loaded app), as `cds-hooks serve` does.
    """
    bind_check()(server)
    server.app.wsgi()


on_starting = _check_then_preload
preload_app = False  # done by on_starting, after the bind check


def pre_fork(server: Any, worker: Any) -> None:
    tune_gc()  # in the master after preload: the app's objects are frozen before each fork


def post_fork(server: Any, worker: Any) -> None:
    gc.set_threshold(*GC_THRESHOLDS)


def worker_exit(server: Any, worker: Any) -> None:
    from cds_hooks.store.writer import drain_all

    drain_all()  # in the worker: its queued audit is written before it goes (docs/storage.md)


def child_exit(server: Any, worker: Any) -> None:
    from cds_hooks.observability import worker_exited

    worker_exited(worker.pid)
