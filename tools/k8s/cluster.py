"""Checks of the objects against each other: selectors match their pods, Services reach a port of
the pods they select (named grpc for a gRPC service), and network policies let every Service port
in behind a default deny."""

from __future__ import annotations

from typing import Any

from tools.service_configs import SERVICES

from .objects import Manifests, container_ports, containers, kind_name, selector_matches


def check_selectors(manifests: Manifests) -> None:
    for workload, meta, _ in manifests.workloads:
        selector = (workload.get("spec") or {}).get("selector")
        if workload.get("kind") in ("Job", "CronJob"):
            continue
        if not selector_matches(selector, meta.get("labels") or {}):
            manifests.problem(f"{kind_name(workload)}: spec.selector does not match its pod template's labels")


def check_services(manifests: Manifests) -> None:
    for name, service in manifests.by_kind.get("Service", {}).items():
        spec = service.get("spec") or {}
        where = f"Service/{name}"
        selected = manifests.pods_selected(spec.get("selector"))
        if not selected:
            manifests.problem(f"{where}: selector {spec.get('selector')} matches no Deployment/StatefulSet pods")
            continue
        runs_service = any(
            c.get("name") in SERVICES and SERVICES[c["name"]].protocol == "grpc"
            for _, _, pod in selected
            for c in containers(pod, False)
        )
        for port in spec.get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            for workload, _, pod in selected:
                numbers, names = container_ports(pod)
                if target not in numbers and target not in names:
                    manifests.problem(f"{where}: targetPort {target} is not a containerPort of {kind_name(workload)}")
            if runs_service and port.get("name") != "grpc":
                manifests.problem(f"{where}: the port of a gRPC service must be named grpc (got {port.get('name')})")


def check_network_policies(manifests: Manifests) -> None:
    policies = list(manifests.by_kind.get("NetworkPolicy", {}).values())
    default_deny = any(
        (p.get("spec") or {}).get("podSelector") == {}
        and "Ingress" in ((p.get("spec") or {}).get("policyTypes") or [])
        and not (p.get("spec") or {}).get("ingress")
        for p in policies
    )
    if not policies:
        return
    if not default_deny:
        manifests.problem("NetworkPolicy: no default deny of ingress (podSelector: {}, policyTypes: [Ingress])")
    for policy in policies:
        selector = (policy.get("spec") or {}).get("podSelector")
        if selector and not manifests.pods_selected(selector):
            manifests.problem(f"{kind_name(policy)}: podSelector {selector} matches no pods")
    # Every Service port must be let in by some policy, or nothing can reach it.
    for name, service in manifests.by_kind.get("Service", {}).items():
        spec = service.get("spec") or {}
        for workload, meta, pod in manifests.pods_selected(spec.get("selector")):
            by_name = {
                p.get("name"): p.get("containerPort") for c in containers(pod, False) for p in c.get("ports") or []
            }
            for port in spec.get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                number = by_name.get(target, target)
                if number is None:
                    continue  # a port that does not resolve is reported by check_services
                if not ingress_allowed(manifests, meta.get("labels") or {}, number, target):
                    manifests.problem(
                        f"Service/{name}: no NetworkPolicy lets traffic in to {kind_name(workload)} on port {number}"
                    )


def ingress_allowed(manifests: Manifests, labels: dict, number: Any, name: Any) -> bool:
    for policy in manifests.by_kind.get("NetworkPolicy", {}).values():
        spec = policy.get("spec") or {}
        selector = spec.get("podSelector")
        if selector != {} and not selector_matches(selector, labels):
            continue
        for rule in spec.get("ingress") or []:
            ports = rule.get("ports")
            if not ports or any(p.get("port") in (number, name) for p in ports):
                return True
    return False
