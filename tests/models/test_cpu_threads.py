"""Thread pool sizing for model processes (models/cpu_threads.py), on fake cgroup trees."""

from __future__ import annotations

import pytest
import torch

from models import cpu_threads
from models.cpu_threads import cpu_allotment, cpu_quota, use_cpu_allotment


def cgroup_v2(root, cpu_max: str):
    root.mkdir()
    (root / "cpu.max").write_text(cpu_max + "\n")
    return root


def cgroup_v1(root, quota: int, period: int = 100000):
    (root / "cpu").mkdir(parents=True)
    (root / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text(f"{period}\n")
    return root


@pytest.fixture
def node_of_64_cpus(monkeypatch):
    monkeypatch.setattr(cpu_threads.os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_cpu_quota_reads_cgroup_v2_and_v1(tmp_path):
    assert cpu_quota(cgroup_v2(tmp_path / "a", "400000 100000")) == 4.0
    assert cpu_quota(cgroup_v2(tmp_path / "b", "max 100000")) is None
    assert cpu_quota(cgroup_v1(tmp_path / "c", 250000)) == 2.5
    assert cpu_quota(cgroup_v1(tmp_path / "d", -1)) is None
    assert cpu_quota(tmp_path / "nothing") is None


def test_the_pool_follows_the_quota_not_the_node(tmp_path, node_of_64_cpus):
    assert cpu_allotment(cgroup_v2(tmp_path / "a", "150000 100000")) == 2  # 1.5 CPUs: two threads
    assert cpu_allotment(cgroup_v1(tmp_path / "b", 50000)) == 1
    assert cpu_allotment(tmp_path / "unlimited") == 64
    assert use_cpu_allotment(cgroup_v1(tmp_path / "c", 400000)) == 4
    assert torch.get_num_threads() == 4


def test_omp_num_threads_wins(tmp_path, node_of_64_cpus, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    torch.set_num_threads(3)
    assert use_cpu_allotment(cgroup_v1(tmp_path, 800000)) == 3
    assert torch.get_num_threads() == 3
