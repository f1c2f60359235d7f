"""Worker defaults: the CPUs the process may use, capped by its cgroup's CPU quota (fake files)."""

from __future__ import annotations

import os

import pytest

from cds_hooks import gunicorn_conf
from cds_hooks.gunicorn_conf import cgroup_cpu_limit, default_workers

CPUS = len(os.sched_getaffinity(0))


def fake_cgroup(tmp_path, own: str = "/", **files: str):
    """A cgroup mount under tmp_path/cg and a /proc/self/cgroup naming `own` (cgroup v2)."""
    root = tmp_path / "cg"
    for relative, content in files.items():
        file = root / relative.replace("__", "/")
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(content)
    root.mkdir(exist_ok=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::{own}\n")
    return str(root), str(proc)


@pytest.mark.parametrize(
    ("cpu_max", "limit"),
    [("150000 100000\n", 1.5), ("100000 100000", 1.0), ("50000 100000", 0.5), ("max 100000", None)],
)
def test_the_cgroup_v2_quota_is_read_in_cpus(tmp_path, cpu_max, limit):
    root, proc = fake_cgroup(tmp_path, **{"cpu.max": cpu_max})
    assert cgroup_cpu_limit(root, proc) == limit


def test_workers_follow_the_quota_rounded_up_but_never_pass_the_cpus_we_may_use(tmp_path):
    root, proc = fake_cgroup(tmp_path, **{"cpu.max": "50000 100000"})
    assert default_workers(root, proc) == 1  # half a CPU: one worker (threads cover the waits)
    root, proc = fake_cgroup(tmp_path / "b", **{"cpu.max": f"{CPUS * 100000 - 50000} 100000"})
    assert default_workers(root, proc) == CPUS  # 1.5 of 2 CPUs -> 2
    root, proc = fake_cgroup(tmp_path / "c", **{"cpu.max": f"{64 * 100000} 100000"})
    assert default_workers(root, proc) == CPUS  # a quota of 64 CPUs does not make 64 workers
    root, proc = fake_cgroup(tmp_path / "d", **{"cpu.max": "max 100000"})
    assert default_workers(root, proc) == CPUS


def test_the_smallest_quota_of_the_process_cgroup_and_its_ancestors_wins(tmp_path):
    root, proc = fake_cgroup(
        tmp_path,
        own="/system.slice/cds.service",
        **{
            "system.slice__cpu.max": "100000 100000",
            "system.slice__cds.service__cpu.max": "max 100000",
        },
    )
    assert cgroup_cpu_limit(root, proc) == 1.0
    assert default_workers(root, proc) == 1


def test_cgroup_v1_cfs_quota(tmp_path):
    root = tmp_path / "cg"
    (root / "cpu" / "docker" / "abc").mkdir(parents=True)
    (root / "cpu" / "docker" / "abc" / "cpu.cfs_quota_us").write_text("250000\n")
    (root / "cpu" / "docker" / "abc" / "cpu.cfs_period_us").write_text("100000\n")
    (root / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    assert cgroup_cpu_limit(str(root), str(proc)) == 2.5


def test_no_cgroup_files_means_no_quota(tmp_path):
    assert cgroup_cpu_limit(str(tmp_path / "none"), str(tmp_path / "none")) is None
    assert default_workers(str(tmp_path / "none"), str(tmp_path / "none")) == CPUS


def test_serve_and_the_gunicorn_settings_use_the_default(monkeypatch):
    monkeypatch.setattr(gunicorn_conf, "default_workers", lambda *a, **k: 3)
    assert gunicorn_conf.settings(2.5)["workers"] == 3
