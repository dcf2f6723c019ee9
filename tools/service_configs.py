"""Which config class each service reads, which image targets run it, and what it speaks: the one
table that the deployment checks share (tools/k8s for the manifests, deploy/check_images.py for
the Dockerfile). Ports, variable names and defaults are read from the config classes themselves.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Any

from shared.config import EnvSpec


@dataclasses.dataclass(frozen=True)
class Service:
    """A service of services/<name>/: also the name of its container in k8s/."""

    name: str
    config_class_name: str  # in services/<name>/service.py
    image_targets: tuple[str, ...]  # deploy/Dockerfile targets that run it
    protocol: str = "grpc"  # "http": its port is named http and its probes are httpGet
    holds_model: bool = False  # loads a checkpoint (minutes) named by <PREFIX>_CHECKPOINT

    @property
    def module(self) -> str:
        """What `python -m` runs."""
        return f"services.{self.name}"

    def config_class(self) -> type:
        """The config class (imports the service: torch for the model servers)."""
        return _config_class(self.name, self.config_class_name)

    def env_fields(self) -> dict[str, dataclasses.Field]:
        """Variable name -> field of the config class."""
        return _env_fields(self.config_class())

    def var(self, field_name: str) -> str:
        """The variable a field is read from: var("port") is GATEWAY_PORT for the gateway."""
        return next(var for var, field in self.env_fields().items() if field.name == field_name)

    def default(self, field_name: str) -> Any:
        """The default of a field: default("port") is the port the service listens on by default."""
        return self.config_class().__dataclass_fields__[field_name].default


SERVICES = {
    service.name: service
    for service in (
        Service("gateway", "GatewayConfig", ("gateway",)),
        Service("registry", "RegistryConfig", ("registry",)),
        Service("generator", "GeneratorConfig", ("generator", "generator-cpu"), holds_model=True),
        Service("codec", "CodecConfig", ("codec", "codec-cpu"), holds_model=True),
        Service("web", "WebConfig", ("web",), protocol="http"),
    )
}
# Image target of deploy/Dockerfile -> the service it runs.
IMAGE_TARGETS = {target: service for service in SERVICES.values() for target in service.image_targets}


@functools.cache
def _config_class(name: str, class_name: str) -> type:
    return getattr(importlib.import_module(f"services.{name}.service"), class_name)


@functools.cache
def _env_fields(cls: type) -> dict[str, dataclasses.Field]:
    fields = {}
    for field in dataclasses.fields(cls):
        for value in field.metadata.values():
            if isinstance(value, EnvSpec):
                fields[value.var] = field
    return fields
