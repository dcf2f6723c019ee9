"""Checks of the containers that run a service against the service's own config class
(services/<name>/service.py, found through tools/service_configs.py): every variable is one of its
settings and loads, the ports and probes are its port, the drain and grace fit the pod's
termination grace period, and the addresses it is given name Services of these manifests."""

from __future__ import annotations

import dataclasses
import ipaddress
import tempfile
from pathlib import Path

from services.gateway.routing import read_routes
from shared.config import ConfigError, load_config
from tools.service_configs import SERVICES, Service

from .objects import (
    GPU,
    Manifests,
    containers,
    kind_name,
    literal_env,
    probe_budget,
    selector_matches,
    service_host_port,
)

# Variables a service container may set besides its config class's: the downward API values
# that OTEL_RESOURCE_ATTRIBUTES is built from, and OpenTelemetry SDK settings.
EXTRA_ENV = {"POD_NAME", "POD_NAMESPACE", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_METRIC_EXPORT_INTERVAL"}
LISTEN_ALL = {"0.0.0.0", "::", "[::]"}


def service_config(container: dict):
    """The config that a service container's env values give (its defaults for the rest); None
    when it does not load (check_service_container says why)."""
    try:
        return load_config(SERVICES[container["name"]].config_class(), literal_env(container))
    except ConfigError:
        return None


def required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def check_service_container(manifests: Manifests, workload: dict, pod: dict, container: dict, volumes: dict) -> None:
    service = SERVICES[container["name"]]
    where = f"{kind_name(workload)} container {service.name}"
    cls = service.config_class()
    specs = service.env_fields()
    environ: dict[str, str] = {}
    from_elsewhere: set[str] = set()
    for item in container.get("env") or []:
        name = item.get("name")
        if name not in specs and name not in EXTRA_ENV:
            manifests.problem(
                f"{where}: env {name} is not a setting of {cls.__name__} "
                f"({service.module}.service) nor an OpenTelemetry one"
            )
        if "value" in item:
            environ[name] = str(item["value"])
        else:
            from_elsewhere.add(name)  # a Secret's value: only the Secret knows it
    if container.get("envFrom"):
        manifests.problem(f"{where}: envFrom hides which variables are set; list them in env")
    for var, field in specs.items():
        if required(field) and var not in environ and var not in from_elsewhere:
            manifests.problem(f"{where}: required env {var} is not set")
    host = environ.get(service.var("host"))
    if host not in LISTEN_ALL:
        manifests.problem(
            f"{where}: env {service.var('host')} must be 0.0.0.0 (got {host!r}; the default 127.0.0.1 "
            f"is unreachable from other pods and from the kubelet's probes)"
        )
    try:
        config = load_config(cls, environ)
    except ConfigError as error:
        for problem in error.problems:
            if problem.value is not None:  # an unset required variable is reported above
                manifests.problem(f"{where}: env {problem}")
        return

    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
    protocol = service.protocol
    port_var = service.var("port")
    if ports.get(protocol) != config.port:
        manifests.problem(
            f"{where}: the containerPort named {protocol} ({ports.get(protocol)}) is not {port_var} ({config.port})"
        )
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = container.get(kind) or {}
        if probe and protocol == "http":
            port = (probe.get("httpGet") or {}).get("port")
            if ports.get(port, port) != config.port:  # a port's name, or its number
                manifests.problem(f"{where}: {kind} should be an httpGet probe on {port_var} ({config.port})")
        elif probe and not isinstance(probe.get("grpc"), dict):
            manifests.problem(
                f"{where}: {kind} should be a native gRPC probe (grpc.health.v1 reports NOT_SERVING during the drain)"
            )
        elif probe and probe["grpc"].get("port") != config.port:
            manifests.problem(
                f"{where}: {kind} grpc.port {probe['grpc'].get('port')} is not {port_var} ({config.port})"
            )
    grace_period = pod.get("terminationGracePeriodSeconds", 30)
    if grace_period <= config.drain_seconds + config.grace_seconds:
        manifests.problem(
            f"{where}: terminationGracePeriodSeconds ({grace_period}) must exceed {service.var('drain_seconds')} "
            f"+ {service.var('grace_seconds')} ({config.drain_seconds:g} + {config.grace_seconds:g}), or the "
            f"kubelet kills streams the server is still finishing"
        )
    if not config.otlp_endpoint:
        manifests.problem(f"{where}: {service.var('otlp_endpoint')} is not set (traces and metrics go nowhere)")
    else:
        check_address(manifests, where, service.var("otlp_endpoint"), config.otlp_endpoint)

    mounts = container.get("volumeMounts") or []
    if service.holds_model:
        checkpoint = str(config.checkpoint)
        if not any(checkpoint.startswith(m.get("mountPath", "").rstrip("/") + "/") for m in mounts):
            manifests.problem(f"{where}: {service.var('checkpoint')} {checkpoint} is not on a mounted volume")
        device = config.device
        has_gpu = GPU in ((container.get("resources") or {}).get("limits") or {})
        if device == "cuda" and not has_gpu:
            manifests.problem(f"{where}: {service.var('device')} is cuda but the container has no {GPU} limit")
        if device != "cuda" and has_gpu:
            manifests.problem(f"{where}: the container has a {GPU} limit but {service.var('device')} is {device}")
    if service.name == "gateway":
        check_gateway(manifests, service, where, config, container, volumes)
        startup = container.get("startupProbe")
        if startup and probe_budget(startup) < config.discovery_timeout_seconds:
            manifests.problem(
                f"{where}: startupProbe allows {probe_budget(startup)} s, less than "
                f"{service.var('discovery_timeout_seconds')} ({config.discovery_timeout_seconds:g})"
            )
    if service.name == "registry":
        check_address(manifests, where, service.var("redis_url"), config.redis_url)
    if service.name == "web":
        check_address(manifests, where, service.var("gateway_address"), config.gateway_address)


def check_gateway(manifests: Manifests, service: Service, where: str, config, container: dict, volumes: dict) -> None:
    check_address(manifests, where, service.var("codec_address"), config.codec_address)
    if config.registry_address:
        check_address(manifests, where, service.var("registry_address"), config.registry_address)
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
        config_map = manifests.by_kind.get("ConfigMap", {}).get(volume["configMap"].get("name"))
        if config_map is not None and key in (config_map.get("data") or {}):
            text = config_map["data"][key]
    if text is None:
        manifests.problem(
            f"{where}: {service.var('routes_file')} {routes} is not a key of a ConfigMap mounted in the container"
        )
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "routes.toml"
        path.write_text(text, encoding="utf-8")
        try:
            addresses = read_routes(path)
        except ConfigError as error:
            manifests.problem(f"{where}: the routes file ({routes}) is invalid: {error}")
            return
    routed = set()
    for address in addresses:
        service = check_address(manifests, where, f"routes file address {address}", address)
        if service is not None:
            routed.add(service)
    # Every generator pool must be reachable through the routes file.
    for workload, meta, pod in manifests.workloads:
        if not any(c.get("name") == "generator" for c in containers(pod, init=False)):
            continue
        services = {
            name
            for name, svc in manifests.by_kind.get("Service", {}).items()
            if selector_matches((svc.get("spec") or {}).get("selector"), meta.get("labels") or {})
        }
        if not services & routed:
            manifests.problem(
                f"{kind_name(workload)}: no Service of this generator pool is in the gateway's routes file"
            )


def check_address(manifests: Manifests, where: str, what: str, address: str) -> str | None:
    """The Service an in-cluster address names, checked to exist with that port; None if not."""
    host, port = service_host_port(address)
    try:
        ipaddress.ip_address(host.strip("[]"))
        is_ip = True
    except ValueError:
        is_ip = False
    if is_ip or host == "localhost":
        manifests.problem(f"{where}: {what} ({address}) points at an IP address, not a Service")
        return None
    name = host.split(".")[0]
    service = manifests.by_kind.get("Service", {}).get(name)
    if service is None:
        manifests.problem(f"{where}: {what} ({address}) names Service {name}, which is not defined")
        return None
    spec = service.get("spec") or {}
    if port not in {p.get("port") for p in spec.get("ports") or []}:
        manifests.problem(f"{where}: {what} ({address}): Service {name} has no port {port}")
    if address.startswith("dns:") and spec.get("clusterIP") != "None":
        manifests.problem(
            f"{where}: {what} ({address}): Service {name} must be headless (clusterIP: None) "
            f"for the gateway's round-robin channel to see every pod"
        )
    return name
