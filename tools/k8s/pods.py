"""Checks of every pod and container: security, resources, images, volumes, env references,
probes and GPU scheduling; a container that runs a service also goes through config.py."""

from __future__ import annotations

import re

from tools.service_configs import SERVICES

from .config import check_service_container
from .objects import GPU, Manifests, kind_name, probe_budget, probe_port, quantity

RUN_AS_USER = 10001
GPU_NODE_LABEL = "nvidia.com/gpu.present"
# Loading a model takes minutes: the startup probe must allow at least this long.
MODEL_STARTUP_SECONDS = 300


def holds_model(container: dict) -> bool:
    service = SERVICES.get(container.get("name"))
    return service is not None and service.holds_model


def check_pod(manifests: Manifests, workload: dict, pod: dict) -> None:
    where = kind_name(workload)
    is_job = workload.get("kind") in ("Job", "CronJob")
    security = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            manifests.problem(f"{where}: {flag} must not be set")
    account = pod.get("serviceAccountName")
    if not account or account == "default":
        manifests.problem(f"{where}: needs its own serviceAccountName")
    elif account not in manifests.by_kind.get("ServiceAccount", {}):
        manifests.problem(f"{where}: ServiceAccount {account} is not defined")
    elif manifests.by_kind["ServiceAccount"][account].get("automountServiceAccountToken") is not False:
        manifests.problem(f"{where}: ServiceAccount {account} must set automountServiceAccountToken: false")

    volumes = {volume.get("name"): volume for volume in pod.get("volumes") or []}
    check_volumes(manifests, where, volumes)
    gpu_containers = []
    claim_templates = {
        (t.get("metadata") or {}).get("name") for t in (workload.get("spec") or {}).get("volumeClaimTemplates") or []
    }
    init_containers = [(c, True) for c in pod.get("initContainers") or []]
    for container, init in [*init_containers, *((c, False) for c in pod.get("containers") or [])]:
        cwhere = f"{where} container {container.get('name')}"
        check_security(manifests, cwhere, security, container.get("securityContext") or {})
        check_resources(manifests, cwhere, container)
        check_image(manifests, cwhere, container.get("image"))
        check_mounts(manifests, cwhere, container, volumes, claim_templates)
        check_env_refs(manifests, cwhere, container)
        if GPU in ((container.get("resources") or {}).get("limits") or {}) or GPU in (
            (container.get("resources") or {}).get("requests") or {}
        ):
            gpu_containers.append(container)
        if not init and not is_job:
            check_probes(manifests, cwhere, container)
        if not init and container.get("name") in SERVICES:
            check_service_container(manifests, workload, pod, container, volumes)
    if gpu_containers:
        check_gpu_scheduling(manifests, where, pod)


def check_security(manifests: Manifests, where: str, pod_security: dict, security: dict) -> None:
    def setting(key):
        return security.get(key, pod_security.get(key))

    if setting("runAsNonRoot") is not True:
        manifests.problem(f"{where}: securityContext.runAsNonRoot must be true")
    if setting("runAsUser") != RUN_AS_USER:
        manifests.problem(f"{where}: securityContext.runAsUser must be {RUN_AS_USER}")
    if (setting("seccompProfile") or {}).get("type") != "RuntimeDefault":
        manifests.problem(f"{where}: securityContext.seccompProfile.type must be RuntimeDefault")
    if security.get("allowPrivilegeEscalation") is not False:
        manifests.problem(f"{where}: securityContext.allowPrivilegeEscalation must be false")
    if security.get("readOnlyRootFilesystem") is not True:
        manifests.problem(f"{where}: securityContext.readOnlyRootFilesystem must be true")
    if security.get("privileged"):
        manifests.problem(f"{where}: securityContext.privileged must not be set")
    if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
        manifests.problem(f"{where}: securityContext.capabilities.drop must include ALL")
    if (security.get("capabilities") or {}).get("add"):
        manifests.problem(f"{where}: securityContext.capabilities.add must be empty")


def check_resources(manifests: Manifests, where: str, container: dict) -> None:
    resources = container.get("resources") or {}
    for section in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in (resources.get(section) or {}):
                manifests.problem(f"{where}: resources.{section}.{resource} is not set")
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    for resource in ("cpu", "memory"):
        if resource in requests and resource in limits and quantity(requests[resource]) > quantity(limits[resource]):
            manifests.problem(f"{where}: resources.requests.{resource} exceeds its limit")
    if GPU in requests and requests.get(GPU) != limits.get(GPU):
        manifests.problem(f"{where}: {GPU} must be in resources.limits, and requests (if given) equal to it")


def check_image(manifests: Manifests, where: str, image: str | None) -> None:
    if not image:
        manifests.problem(f"{where}: no image")
        return
    name = image.rsplit("/", 1)[-1]
    if "@" not in name and (":" not in name or name.endswith(":latest")):
        manifests.problem(f"{where}: image {image} must be pinned to a tag other than latest (or a digest)")


def check_volumes(manifests: Manifests, where: str, volumes: dict[str, dict]) -> None:
    for name, volume in volumes.items():
        if "configMap" in volume:
            ref = volume["configMap"]
            if not ref.get("optional") and not manifests.exists("ConfigMap", ref.get("name")):
                manifests.problem(f"{where}: volume {name}: ConfigMap {ref.get('name')} is not defined")
        if "secret" in volume:
            ref = volume["secret"]
            if not ref.get("optional") and not manifests.exists("Secret", ref.get("secretName")):
                manifests.problem(f"{where}: volume {name}: Secret {ref.get('secretName')} is not defined")
        if "persistentVolumeClaim" in volume:
            claim = (volume["persistentVolumeClaim"] or {}).get("claimName")
            if not manifests.exists("PersistentVolumeClaim", claim):
                manifests.problem(f"{where}: volume {name}: PersistentVolumeClaim {claim} is not defined")


def check_mounts(
    manifests: Manifests, where: str, container: dict, volumes: dict[str, dict], claim_templates: set
) -> None:
    tmp = False
    for mount in container.get("volumeMounts") or []:
        name = mount.get("name")
        if name not in volumes and name not in claim_templates:
            manifests.problem(f"{where}: volumeMount {name} has no volume")
            continue
        if mount.get("mountPath") == "/tmp" and "emptyDir" in volumes.get(name, {}):
            tmp = True
    if not tmp:
        manifests.problem(f"{where}: needs an emptyDir mounted at /tmp (the root filesystem is read-only)")


def check_env_refs(manifests: Manifests, where: str, container: dict) -> None:
    defined: set[str] = set()
    for item in container.get("env") or []:
        name = item.get("name")
        if "value" not in item and "valueFrom" not in item:
            manifests.problem(f"{where}: env {name} has neither a value nor a valueFrom")
        source = item.get("valueFrom") or {}
        for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            ref = source.get(key)
            if ref and not ref.get("optional") and not manifests.exists(kind, ref.get("name")):
                manifests.problem(f"{where}: env {name}: {kind} {ref.get('name')} is not defined")
            elif ref and ref.get("name") in manifests.by_kind.get(kind, {}):
                obj = manifests.by_kind[kind][ref["name"]]
                keys = set(obj.get("data") or {}) | set(obj.get("stringData") or {})
                if ref.get("key") not in keys and not ref.get("optional"):
                    manifests.problem(f"{where}: env {name}: {kind} {ref['name']} has no key {ref.get('key')}")
        for used in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(item.get("value", ""))):
            if used not in defined:
                manifests.problem(f"{where}: env {name} uses $({used}), which is not defined before it")
        defined.add(name)
    for source in container.get("envFrom") or []:
        for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            ref = source.get(key)
            if ref and not ref.get("optional") and not manifests.exists(kind, ref.get("name")):
                manifests.problem(f"{where}: envFrom: {kind} {ref.get('name')} is not defined")


def check_probes(manifests: Manifests, where: str, container: dict) -> None:
    numbers = {p.get("containerPort") for p in container.get("ports") or []}
    names = {p.get("name") for p in container.get("ports") or []} - {None}
    wanted = ["readinessProbe", "livenessProbe"]
    if holds_model(container):
        wanted.append("startupProbe")
    for kind in wanted:
        if not container.get(kind):
            manifests.problem(f"{where}: no {kind}")
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = container.get(kind)
        if not probe:
            continue
        if not any(isinstance(probe.get(h), dict) for h in ("grpc", "tcpSocket", "httpGet", "exec")):
            manifests.problem(f"{where}: {kind} has no handler (grpc, tcpSocket, httpGet or exec)")
            continue
        port = probe_port(probe)
        if isinstance(probe.get("exec"), dict):
            continue
        if port is None:
            manifests.problem(f"{where}: {kind} has no port")
        elif port not in numbers and port not in names:
            manifests.problem(f"{where}: {kind} port {port} is not a containerPort of the container")
    startup = container.get("startupProbe")
    if holds_model(container) and startup and probe_budget(startup) < MODEL_STARTUP_SECONDS:
        manifests.problem(
            f"{where}: startupProbe allows {probe_budget(startup)} s (failureThreshold x "
            f"periodSeconds); loading a model needs at least {MODEL_STARTUP_SECONDS} s"
        )


def check_gpu_scheduling(manifests: Manifests, where: str, pod: dict) -> None:
    tolerated = any(
        t.get("key") == GPU
        and t.get("effect") in (None, "", "NoSchedule")
        and (t.get("operator") == "Exists" or t.get("operator") in (None, "Equal"))
        for t in pod.get("tolerations") or []
    )
    if not tolerated:
        manifests.problem(f"{where}: requests {GPU} but has no toleration for the {GPU}:NoSchedule taint")
    selects = (pod.get("nodeSelector") or {}).get(GPU_NODE_LABEL) == "true" or bool(
        ((pod.get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    )
    if not selects:
        manifests.problem(
            f"{where}: requests {GPU} but does not select GPU nodes "
            f'(nodeSelector {GPU_NODE_LABEL}: "true" or a required node affinity)'
        )
