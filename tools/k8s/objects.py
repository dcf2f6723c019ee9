"""The rendered objects, indexed for the checks, and small readers of Kubernetes objects."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# Objects the manifests use but do not contain: created by the operator (docs/deploy.md).
EXTERNAL = {
    ("Secret", "gateway-api-keys"),
    ("Secret", "redis-auth"),
    ("Secret", "hf-token"),
    ("PersistentVolumeClaim", "qwentts-models"),
}
POD_WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")
GPU = "nvidia.com/gpu"


class Manifests:
    """The objects of one rendered target by kind and name, and the problems found in them."""

    def __init__(self, objects: list[dict]):
        self.objects = [obj for obj in objects if isinstance(obj, dict)]
        self.problems: list[str] = []
        self.by_kind: dict[str, dict[str, dict]] = {}
        for obj in self.objects:
            self.by_kind.setdefault(obj.get("kind"), {})[(obj.get("metadata") or {}).get("name")] = obj
        self.workloads = list(workloads(self.objects))

    def problem(self, message: str) -> None:
        self.problems.append(message)

    def exists(self, kind: str, name: str) -> bool:
        return name in self.by_kind.get(kind, {}) or (kind, name) in EXTERNAL

    def pods_selected(self, selector: dict | None) -> list[tuple[dict, dict, dict]]:
        return [w for w in self.workloads if selector_matches(selector, w[1].get("labels") or {})]


def kind_name(obj: dict) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def pod_template(obj: dict) -> dict | None:
    if obj.get("kind") in POD_WORKLOADS:
        return (obj.get("spec") or {}).get("template")
    if obj.get("kind") == "CronJob":
        return (((obj.get("spec") or {}).get("jobTemplate") or {}).get("spec") or {}).get("template")
    return None


def workloads(objects: list[dict]) -> Iterator[tuple[dict, dict, dict]]:
    """(workload, pod template metadata, pod spec) of every object that makes pods."""
    for obj in objects:
        template = pod_template(obj)
        if template is not None:
            yield obj, template.get("metadata") or {}, template.get("spec") or {}


def containers(pod: dict, init: bool = True) -> list[dict]:
    return [*(pod.get("initContainers") or [] if init else []), *(pod.get("containers") or [])]


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """A label selector (matchLabels/matchExpressions, or a Service's plain map) against labels.
    An empty or missing selector matches nothing here: none of ours should be empty."""
    if not selector:
        return False
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def container_ports(pod: dict) -> tuple[set[int], set[str]]:
    numbers, names = set(), set()
    for container in containers(pod, init=False):
        for port in container.get("ports") or []:
            if isinstance(port.get("containerPort"), int):
                numbers.add(port["containerPort"])
            if port.get("name"):
                names.add(port["name"])
    return numbers, names


def probe_port(probe: dict) -> int | str | None:
    for handler in ("grpc", "tcpSocket", "httpGet"):
        if isinstance(probe.get(handler), dict):
            return probe[handler].get("port")
    return None


def probe_budget(probe: dict) -> int:
    """Seconds a startup probe allows before the container is restarted."""
    return probe.get("initialDelaySeconds", 0) + probe.get("failureThreshold", 3) * probe.get("periodSeconds", 10)


def quantity(value: Any) -> float:
    """A Kubernetes quantity as a number (enough for the ones used here: 12, 500m, 2Gi)."""
    text = str(value)
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix in sorted(suffixes, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * suffixes[suffix]
    return float(text)


def service_host_port(address: str) -> tuple[str, int | None]:
    """(host, port) of dns:///host:port, host:port, http://host:port, redis://[:pw@]host:port/0."""
    rest = address
    if rest.startswith("dns:"):
        rest = rest.removeprefix("dns:").lstrip("/")
    elif "://" in rest:
        rest = rest.split("://", 1)[1]
    rest = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    host, sep, port = rest.rpartition(":")
    if not sep:
        return rest, None
    return host, int(port) if port.isdigit() else None


def literal_env(container: dict) -> dict[str, str]:
    """The env of a container that has a value in the manifest (not from a Secret or the pod)."""
    return {item.get("name"): str(item["value"]) for item in container.get("env") or [] if "value" in item}
