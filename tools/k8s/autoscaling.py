"""Checks of the autoscalers and what they depend on: the targets exist and leave spec.replicas
alone, the generators' Pods metric is one they export (the constants of
services/generator/runner.py) and that prometheus-adapter serves, the target stays below
GENERATOR_MAX_ACTIVE, the codec takes the streams the generator pools can run, and replicated
Deployments have a PodDisruptionBudget."""

from __future__ import annotations

import functools
import re

import yaml

from services.generator.runner import ACTIVE_STREAMS_METRIC, FRAMES_METRIC, QUEUED_STREAMS_METRIC
from tools.service_configs import SERVICES

from .config import service_config
from .objects import Manifests, containers, kind_name, quantity, selector_matches
from .render import K8S, ROOT

ADAPTER_CONFIG = K8S / "components" / "metrics-adapter" / "prometheus-adapter-config.yaml"


def prometheus_name(instrument: str, counter: bool = False) -> str:
    """The name the collector's prometheus exporter gives an OpenTelemetry instrument: dots become
    underscores, counters get `_total`."""
    return instrument.replace(".", "_") + ("_total" if counter else "")


ACTIVE_STREAMS = prometheus_name(ACTIVE_STREAMS_METRIC)
# What the generators export, as Prometheus (and so prometheus-adapter) names it.
GENERATOR_METRICS = frozenset(
    [ACTIVE_STREAMS, prometheus_name(QUEUED_STREAMS_METRIC), prometheus_name(FRAMES_METRIC, counter=True)]
)


@functools.cache
def adapter_rule_patterns() -> tuple[str, ...]:
    """The `name.matches` patterns of prometheus-adapter's rules (k8s/components/metrics-adapter)."""
    config_map = yaml.safe_load(ADAPTER_CONFIG.read_text(encoding="utf-8"))
    rules = yaml.safe_load(config_map["data"]["config.yaml"]).get("rules") or []
    return tuple((rule.get("name") or {}).get("matches", "") for rule in rules)


def check_autoscaling(manifests: Manifests) -> None:
    hpa_min: dict[tuple[str, str], int] = {}
    for name, hpa in manifests.by_kind.get("HorizontalPodAutoscaler", {}).items():
        spec = hpa.get("spec") or {}
        where = f"HorizontalPodAutoscaler/{name}"
        ref = spec.get("scaleTargetRef") or {}
        target = manifests.by_kind.get(ref.get("kind"), {}).get(ref.get("name"))
        if target is None:
            manifests.problem(f"{where}: scaleTargetRef {ref.get('kind')}/{ref.get('name')} is not defined")
            continue
        hpa_min[(ref.get("kind"), ref.get("name"))] = spec.get("minReplicas", 1)
        if "replicas" in (target.get("spec") or {}):
            manifests.problem(
                f"{where}: {kind_name(target)} sets spec.replicas; leave it out so that an apply does "
                f"not undo the autoscaler (and cut streams on pods it removes)"
            )
        if spec.get("minReplicas", 1) > spec.get("maxReplicas", 0):
            manifests.problem(f"{where}: minReplicas exceeds maxReplicas")
        pod = ((target.get("spec") or {}).get("template") or {}).get("spec") or {}
        for metric in spec.get("metrics") or []:
            if metric.get("type") == "Pods":
                check_pods_metric(manifests, where, metric.get("pods") or {}, pod)
            elif metric.get("type") == "Resource":
                resource = (metric.get("resource") or {}).get("name")
                for container in containers(pod, init=False):
                    if resource not in ((container.get("resources") or {}).get("requests") or {}):
                        manifests.problem(
                            f"{where}: scales on {resource} but {kind_name(target)} container "
                            f"{container.get('name')} requests none"
                        )
            elif metric.get("type") in ("Object", "External"):
                manifests.problem(f"{where}: metric type {metric.get('type')} is not served by this setup")
    check_disruption_budgets(manifests, hpa_min)
    check_codec_capacity(
        manifests,
    )


def check_codec_capacity(manifests: Manifests) -> None:
    """Every active generator stream holds a codec stream (the gateway pipes its frames through
    StreamDecode): the codec pods together must take as many streams as the generator pods can
    run at their most replicas, or streams fail with CODEC_AT_CAPACITY under full load."""
    hpa_max = {
        (h.get("spec") or {}).get("scaleTargetRef", {}).get("name"): (h.get("spec") or {}).get("maxReplicas", 1)
        for h in manifests.by_kind.get("HorizontalPodAutoscaler", {}).values()
    }
    generator, codec = SERVICES["generator"], SERVICES["codec"]
    demand = supply = 0
    for workload, _, pod in manifests.workloads:
        name = (workload.get("metadata") or {}).get("name")
        replicas = hpa_max.get(name, (workload.get("spec") or {}).get("replicas", 1))
        for container in containers(pod, init=False):
            if container.get("name") not in (generator.name, codec.name):
                continue
            config = service_config(container)
            if config is None:  # reported by check_service_container
                continue
            if container["name"] == generator.name:
                demand += replicas * config.max_active
            else:
                supply += replicas * config.max_streams
    if demand and supply and supply < demand:
        manifests.problem(
            f"Deployment/codec: its replicas take {supply} streams (replicas x {codec.var('max_streams')}), "
            f"fewer than the generator pools can run ({demand}: replicas, or HPA maxReplicas, "
            f"x {generator.var('max_active')})"
        )


def check_pods_metric(manifests: Manifests, where: str, pods_metric: dict, pod: dict) -> None:
    name = (pods_metric.get("metric") or {}).get("name")
    if name not in GENERATOR_METRICS:
        manifests.problem(
            f"{where}: Pods metric {name} is not one the generators export ({', '.join(sorted(GENERATOR_METRICS))})"
        )
    if not any(pattern and re.search(pattern, name or "") for pattern in adapter_rule_patterns()):
        manifests.problem(
            f"{where}: Pods metric {name} matches no prometheus-adapter rule ({ADAPTER_CONFIG.relative_to(ROOT)})"
        )
    average = (pods_metric.get("target") or {}).get("averageValue")
    if average is None:
        manifests.problem(f"{where}: Pods metric {name} needs target.averageValue")
        return
    if name != ACTIVE_STREAMS:
        return
    generator = SERVICES["generator"]
    for container in containers(pod, init=False):
        config = service_config(container) if container.get("name") == generator.name else None
        if config is not None and quantity(average) >= config.max_active:
            manifests.problem(
                f"{where}: target averageValue {average} active streams must be below "
                f"{generator.var('max_active')} ({config.max_active}), or the pods refuse streams before it scales"
            )


def check_disruption_budgets(manifests: Manifests, hpa_min: dict[tuple[str, str], int]) -> None:
    budgets = list(manifests.by_kind.get("PodDisruptionBudget", {}).values())
    for budget in budgets:
        if not manifests.pods_selected((budget.get("spec") or {}).get("selector")):
            manifests.problem(f"{kind_name(budget)}: selector matches no pods")
    for workload, meta, _ in manifests.workloads:
        if workload.get("kind") != "Deployment":
            continue
        name = workload["metadata"]["name"]
        replicas = max((workload.get("spec") or {}).get("replicas", 1), hpa_min.get(("Deployment", name), 1))
        covered = any(
            selector_matches((b.get("spec") or {}).get("selector"), meta.get("labels") or {}) for b in budgets
        )
        if (replicas > 1 or name == "gateway") and not covered:
            manifests.problem(f"{kind_name(workload)}: {replicas} replicas but no PodDisruptionBudget")
