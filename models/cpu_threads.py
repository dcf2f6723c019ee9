"""How many threads torch's CPU kernels use in a process that serves a model: the CPUs it may use.

torch starts one thread per CPU in the process's affinity mask. In a container with a CPU limit
(a CFS quota: what Kubernetes sets for `resources.limits.cpu`, unless its static CPU manager pins
the pod) the mask still holds every CPU of the node, so a codec limited to 4 CPUs on a 64-CPU node
would run 64 threads, the quota would stall them all in turn, and each parallel region would wait
for the slowest. `use_cpu_allotment` sizes the pool to the quota (rounded up) or the mask, whichever
is smaller. OMP_NUM_THREADS, where set, wins: torch already honours it.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CGROUP = Path("/sys/fs/cgroup")


def cpu_quota(cgroup: Path = CGROUP) -> float | None:
    """CPUs' worth of time per period this process's cgroup may use, or None where unlimited:
    cgroup v2's cpu.max ("400000 100000", or "max 100000"), else v1's cfs_quota_us (-1: none)."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 else quota / period


def cpu_allotment(cgroup: Path = CGROUP) -> int:
    """The threads this process can keep busy: its CPUs, or fewer where a quota caps them."""
    cpus = len(os.sched_getaffinity(0))
    quota = cpu_quota(cgroup)
    return cpus if quota is None else max(1, min(cpus, math.ceil(quota)))


def use_cpu_allotment(cgroup: Path = CGROUP) -> int:
    """Size torch's CPU thread pool to `cpu_allotment` (unless OMP_NUM_THREADS says otherwise);
    call before the model loads. Returns the threads torch will use."""
    if os.environ.get("OMP_NUM_THREADS"):
        threads = torch.get_num_threads()
        log.info("%d CPU threads (OMP_NUM_THREADS)", threads)
        return threads
    threads = cpu_allotment(cgroup)
    torch.set_num_threads(threads)
    log.info("%d CPU threads (%d CPUs, quota %s)", threads, len(os.sched_getaffinity(0)), cpu_quota(cgroup))
    return threads
