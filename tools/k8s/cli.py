"""python -m tools.k8s: render, validate and check every target (or some), or print one."""

from __future__ import annotations

import argparse
import sys

from .checks import check
from .render import TARGETS, K8sToolError, render, to_yaml
from .validate import validate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.k8s", description="Render, validate and check k8s/.")
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=f"some of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--print", dest="print_target", choices=list(TARGETS), help="print the rendered YAML")
    args = parser.parse_args(argv)
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    try:
        if args.print_target:
            print(to_yaml(render(args.print_target)), end="")
            return 0
        failed = False
        for target in args.targets or list(TARGETS):
            objects = render(target)
            problems = [f"validate: {p}" for p in validate(objects)] + [f"check: {p}" for p in check(objects)]
            print(f"{target}: {len(objects)} objects, {'OK' if not problems else f'{len(problems)} problem(s)'}")
            for problem in problems:
                print(f"  {problem}")
            failed |= bool(problems)
    except K8sToolError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 1 if failed else 0
