"""What schemas cannot check: the manifests against each other and against the services' own
config classes. Every problem is one line naming the object, the container and the field."""

from __future__ import annotations

from collections.abc import Iterable

from .autoscaling import check_autoscaling
from .cluster import check_network_policies, check_selectors, check_services
from .objects import Manifests
from .pods import check_pod


def check(objects: Iterable[dict]) -> list[str]:
    """Every problem found in one rendered target's objects (empty: fine)."""
    manifests = Manifests(list(objects))
    for workload, _, pod in manifests.workloads:
        check_pod(manifests, workload, pod)
    check_selectors(manifests)
    check_services(manifests)
    check_network_policies(manifests)
    check_autoscaling(manifests)
    return manifests.problems
