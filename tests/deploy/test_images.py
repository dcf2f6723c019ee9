"""The container images (deploy/Dockerfile): the checker on the real file and on broken copies, and
each image's code importing from only what its Dockerfile target copies, gateway and registry
without torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from deploy import check_images
from deploy.check_images import DOCKERFILE, REPO_ROOT, TARGETS, chain, check, copy_sources, parse

ORIGINAL = DOCKERFILE.read_text()


def test_real_dockerfile_passes_hadolint_and_checks():
    result = subprocess.run(
        [sys.executable, "-m", "deploy.check_images"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hadolint clean" in result.stdout


def broken(tmp_path: Path, old: str, new: str) -> list[str]:
    """The checker's own findings on a copy of the Dockerfile with `old` (its first occurrence)
    replaced by `new`."""
    assert old in ORIGINAL, old
    path = tmp_path / "Dockerfile"
    path.write_text(ORIGINAL.replace(old, new, 1))
    return check(path, REPO_ROOT, lint=False)


def test_target_running_as_root_is_caught(tmp_path):
    problems = broken(
        tmp_path,
        'USER 10001:10001\nENTRYPOINT ["python", "-m", "services.registry"]',
        'USER root\nENTRYPOINT ["python", "-m", "services.registry"]',
    )
    assert len(problems) == 1 and "target registry runs as root (USER root)" in problems[0]


def test_target_without_user_is_caught(tmp_path):
    entrypoint = 'ENTRYPOINT ["python", "-m", "services.codec"]'  # first: the codec target
    problems = broken(tmp_path, f"USER 10001:10001\n{entrypoint}", entrypoint)
    assert len(problems) == 1 and "target codec runs as root (no USER)" in problems[0]


def test_non_numeric_user_is_caught(tmp_path):
    problems = broken(
        tmp_path,
        'USER 10001:10001\nENTRYPOINT ["python", "-m", "services.gateway"]',
        'USER qwentts\nENTRYPOINT ["python", "-m", "services.gateway"]',
    )
    assert len(problems) == 1 and "USER qwentts is not numeric" in problems[0]


@pytest.mark.parametrize(
    "image, why",
    [
        ("python", "has no tag"),
        ("python:latest", "the tag 'latest' moves"),
        ("python:3.11-slim", "the tag '3.11-slim' moves"),
    ],
)
def test_unpinned_from_is_caught(tmp_path, image, why):
    problems = broken(tmp_path, "FROM python:3.11.14-slim-bookworm AS base", f"FROM {image} AS base")
    assert len(problems) == 1 and f"FROM {image} is not pinned" in problems[0] and why in problems[0]


def test_digest_pinned_from_passes(tmp_path):
    digest = "sha256:" + "0" * 64
    pinned = f"FROM python:3.11.14-slim-bookworm@{digest} AS base"  # as docs/deploy.md suggests
    assert broken(tmp_path, "FROM python:3.11.14-slim-bookworm AS base", pinned) == []


def test_copy_of_missing_path_is_caught(tmp_path):
    problems = broken(
        tmp_path,
        "COPY services/codec/ /app/services/codec/\nENV CODEC_HOST",
        "COPY services/codecs/ /app/services/codec/\nENV CODEC_HOST",
    )
    assert len(problems) == 1
    assert "COPY services/codecs/: source path does not exist in the repository" in problems[0]


def test_copy_of_a_path_dockerignore_leaves_out_is_caught(tmp_path):
    problems = broken(tmp_path, "COPY shared/ /app/shared/", "COPY tools/ /app/tools/")
    assert len(problems) == 1 and "COPY tools/: excluded from the build context by .dockerignore" in problems[0]


@pytest.mark.parametrize("source", [".", "tests/", "var/models"])
def test_copy_of_what_images_must_not_hold_is_caught(tmp_path, source):
    problems = broken(tmp_path, "COPY shared/ /app/shared/", f"COPY {source} /app/shared/")
    assert len(problems) == 1 and "into an image" in problems[0]


def test_wrong_expose_is_caught(tmp_path):
    problems = broken(tmp_path, "EXPOSE 50053", "EXPOSE 50054")
    assert len(problems) == 1
    assert (
        "target generator: EXPOSE 50054 but GeneratorConfig (services.generator.service) defaults "
        "GENERATOR_PORT to 50053" in problems[0]
    )


def test_missing_target_is_caught(tmp_path):
    problems = broken(tmp_path, "FROM runtime AS codec-cpu", "FROM runtime AS codec-small")
    assert len(problems) == 1 and "target 'codec-cpu' is missing" in problems[0]


def test_wrong_entrypoint_is_caught(tmp_path):
    problems = broken(
        tmp_path, 'ENTRYPOINT ["python", "-m", "services.codec"]', 'ENTRYPOINT ["python", "-m", "services.generator"]'
    )
    assert len(problems) == 1 and "target codec: ENTRYPOINT is" in problems[0]


def test_listening_on_loopback_is_caught(tmp_path):
    problems = broken(tmp_path, "ENV REGISTRY_HOST=0.0.0.0\n", "")
    assert len(problems) == 1 and "does not set REGISTRY_HOST=0.0.0.0" in problems[0]


def test_torch_pin_differing_from_pyproject_is_caught(tmp_path):
    problems = broken(tmp_path, "torch==2.13.0+cpu", "torch==2.12.0+cpu")
    assert len(problems) == 1 and "torch==2.12.0+cpu differs from pyproject.toml" in problems[0]


def test_cli_exits_non_zero_with_the_problem(tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_text(ORIGINAL.replace("EXPOSE 50051", "EXPOSE 8080"))
    result = subprocess.run(
        [sys.executable, "-m", "deploy.check_images", "--dockerfile", str(path), "--no-hadolint"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "EXPOSE 8080 but GatewayConfig (services.gateway.service) defaults GATEWAY_PORT to 50051" in result.stderr


def test_hadolint_findings_fail_the_check(tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_text(
        ORIGINAL.replace("FROM base AS venv-service\n", "FROM base AS venv-service\nRUN pip install grpcio\n")
    )
    problems = check(path, REPO_ROOT)
    assert any("hadolint:" in p and "DL3013" in p for p in problems), problems


# --- Each image's code, as its target copies it: nothing missing, and no torch where none is installed.

NOT_IN_IMAGES = {"tests", "bench", "tools", "deploy"}  # packages of the repository no image holds
BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"{{name}} is not in this image (imported by the service's code)")
sys.meta_path.insert(0, Block())
"""


def image_tree(target: str, dest: Path) -> Path:
    """The files `target` copies from the build context, laid out under `dest` as in the image."""
    stages = parse(ORIGINAL)
    stage = next(s for s in stages if s.name == target)
    for s in reversed(chain(stages, stage)):
        for instruction in s.instructions:
            if instruction.keyword != "COPY" or (sources := copy_sources(instruction)) is None:
                continue
            to = instruction.args.split()[-1]
            for source in sources:
                src, out = REPO_ROOT / source, dest / to.lstrip("/")
                if src.is_dir():  # COPY dir/ /to/: the directory's contents
                    shutil.copytree(src, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:  # COPY file /to/ (into the directory) or /to/name
                    out = out / src.name if to.endswith("/") else out
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(src, out)
    return dest / "app"


def import_in_image(target: str, tmp_path: Path, blocked: set[str]) -> subprocess.CompletedProcess:
    service = TARGETS[target].name
    app = image_tree(target, tmp_path)
    site = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    # -S: no site-packages .pth files, so the project's editable install cannot fill in what the
    # image lacks; this environment's site-packages come after the image's code.
    code = BLOCK.format(blocked=sorted(blocked)) + (
        f"import importlib\nimportlib.import_module('services.{service}.__main__')\n"
        "import shared, services, qwentts\n"
        "paths = shared.__path__ + services.__path__ + qwentts.__path__\n"
        f"assert all(p.startswith({str(app)!r}) for p in paths), paths\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join([str(app), str(app / "gen/python"), *site])}
    return subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=app, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("target", ["generator-cpu", "codec-cpu"])
def test_model_images_hold_the_code_they_import(tmp_path, target):
    result = import_in_image(target, tmp_path, blocked=NOT_IN_IMAGES)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("target", ["gateway", "registry", "web"])
def test_gateway_and_registry_import_without_torch(tmp_path, target):
    # Their images install deploy/requirements-service.txt (web: and -web.txt): no torch, transformers
    # or safetensors.
    result = import_in_image(target, tmp_path, blocked=check_images.MODEL_ONLY | NOT_IN_IMAGES)
    assert result.returncode == 0, (
        f"{TARGETS[target].module} does not import without torch, so its image would not start:\n"
        + result.stderr[-3000:]
    )
