"""`python -m tests.helpers.broken_generator`: the generator process, except that its engine loop fails as
soon as a stream is running (the fault that no single request can be blamed for)."""

from models.engine import engine
from services.generator import service
from shared.service import run_service


def _failing_can_progress(self) -> bool:
    if self.sessions:
        raise RuntimeError("injected failure of the engine loop")
    return False


if __name__ == "__main__":
    engine.Engine.can_progress = _failing_can_progress
    run_service("generator", service.GeneratorConfig, service.build)
