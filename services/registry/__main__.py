"""`python -m services.registry`: the voice registry gRPC service (configured by REGISTRY_* variables)."""

from shared.service import run_service

from .service import RegistryConfig, build

if __name__ == "__main__":
    run_service("registry", RegistryConfig, build)
