"""Validating rendered objects with kubernetes-validate --strict against the Kubernetes schemas."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable

from .render import to_yaml

KUBERNETES_VERSION = "1.33.0"


def validate(objects: Iterable[dict], kubernetes_version: str = KUBERNETES_VERSION) -> list[str]:
    """kubernetes-validate --strict on the objects; its ERROR and WARN lines (a kind it has no
    schema for is a WARN there, and a problem here)."""
    done = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", kubernetes_version, "-"],
        input=to_yaml(objects),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    problems = [line for line in lines if line.startswith(("ERROR", "WARN"))]
    if done.returncode != 0 and not problems:
        problems = [f"kubernetes-validate exited with status {done.returncode}: {' '.join(lines[-5:])}"]
    return problems
