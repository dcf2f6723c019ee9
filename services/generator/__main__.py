"""`python -m services.generator`: the generator gRPC service (configured by GENERATOR_* variables)."""

from shared.service import run_service

from .service import GeneratorConfig, build

if __name__ == "__main__":
    run_service("generator", GeneratorConfig, build)
