"""tools/service_configs.py, the table the deployment checks share: it lists every service, and
what it says about each one is what the config classes say."""

from __future__ import annotations

from pathlib import Path

from services.generator.service import GeneratorConfig
from services.web.service import WebConfig
from tools.service_configs import IMAGE_TARGETS, SERVICES

SERVICES_DIR = Path(__file__).resolve().parents[2] / "services"


def test_every_service_is_in_the_table():
    assert {path.parent.name for path in SERVICES_DIR.glob("*/service.py")} == set(SERVICES)


def test_variables_and_defaults_come_from_the_config_classes():
    web = SERVICES["web"]
    assert web.config_class() is WebConfig
    assert (web.var("host"), web.var("port")) == ("WEB_HOST", "WEB_PORT")
    assert web.default("port") == WebConfig.__dataclass_fields__["port"].default
    assert web.protocol == "http" and not web.holds_model
    generator = SERVICES["generator"]
    assert generator.config_class() is GeneratorConfig and generator.holds_model
    assert generator.var("max_active") == "GENERATOR_MAX_ACTIVE"


def test_the_cpu_image_targets_run_the_same_service():
    assert IMAGE_TARGETS["generator-cpu"] is IMAGE_TARGETS["generator"] is SERVICES["generator"]
    assert IMAGE_TARGETS["codec-cpu"] is IMAGE_TARGETS["codec"] is SERVICES["codec"]
