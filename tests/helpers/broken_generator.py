"""`python -m tests.helpers.broken_generator`: the generator process, except that its engine loop fails as
soon as a stream is running (the fault that no single request can be blamed for)."""

from models.engine import engine
from services.generator import service
from shared.service import run_service


def _failing_has_work(self) -> bool:
    if self.sessions:
        raise RuntimeError("injected failure of the engine loop")
    return False


if __name__ == "__main__":
    engine.Engine.has_work = _failing_has_work
    run_service("generator", service.GeneratorConfig, service.build)
