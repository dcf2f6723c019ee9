"""Typed service configuration read from environment variables.

Services are configured only by environment variables, validated once at start-up. A config is a
frozen dataclass whose fields are declared with `env(...)`, which records the variable's name, its
default and simple constraints:

    @dataclass(frozen=True)
    class CodecConfig:
        port: int = env("CODEC_PORT", default=50052, min=1, max=65535)
        checkpoint: Path = env("CODEC_CHECKPOINT")                  # required: no default
        device: str = env("CODEC_DEVICE", default="cpu", choices=("cpu", "cuda"))
        languages: tuple[str, ...] = env("CODEC_LANGUAGES", default=("auto",))
        api_key: str = env("CODEC_API_KEY", default="", secret=True)

    config = load_config(CodecConfig)        # raises ConfigError naming every bad variable
    log.info("codec config: %s", describe(config))

Supported field types: str, int, float, bool ("1/0/true/false/yes/no", any case), pathlib.Path,
tuple[str, ...] (comma-separated, items stripped, empty items dropped), and any of these
`| None` (an empty value then means None). `load_config` reports every problem at once, so one
failed start shows the operator everything to fix. Values of secret fields never appear in
`describe` or in error messages.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_META_KEY = "qwentts.env"  # key under which env() stores its spec in the field's metadata
_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no"})
_MASK = "***"
_SUPPORTED = (str, int, float, bool, Path, tuple[str, ...])


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """What `env()` records about one field."""

    var: str
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    secret: bool = False


def env(
    var: str,
    *,
    default: Any = MISSING,
    min: float | None = None,
    max: float | None = None,
    choices: Iterable[Any] | None = None,
    secret: bool = False,
) -> Any:
    """Declare a config field read from environment variable `var`.

    No `default` makes the variable required. `min`/`max` bound int and float values (inclusive);
    `choices` restricts the value (each item, for a tuple). `secret` masks the value in logs.
    Fields are keyword-only, so required and defaulted fields may come in any order.
    """
    spec = EnvSpec(var, min, max, tuple(choices) if choices is not None else None, secret)
    return dataclasses.field(default=default, kw_only=True, metadata={_META_KEY: spec})


@dataclasses.dataclass(frozen=True)
class Problem:
    """One bad variable: its name, the value found (None if unset), what was expected."""

    var: str
    value: str | None
    expected: str

    def __str__(self) -> str:
        found = "unset" if self.value is None else repr(self.value)
        return f"{self.var}={found}: expected {self.expected}"


class ConfigError(Exception):
    """The environment does not describe a valid configuration; `problems` lists every fault.

    The operator's fault, found at start-up; not a ServiceError, so that should it ever escape a
    request handler it is answered INTERNAL (shared/errors.py), never as the client's fault.
    """

    def __init__(self, cls_name: str, problems: list[Problem]):
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"invalid {cls_name} from the environment ({len(problems)} problem(s)):\n{lines}")


class CheckpointError(Exception):
    """A checkpoint directory is incomplete, malformed or of the wrong kind.

    Like ConfigError, the operator's to fix at start-up. It lives here, free of torch, so that
    services without a model (gateway, registry) can handle it too; models.checkpoint raises it.
    """


class _Invalid(Exception):
    """Internal: a value failed to parse or validate; the message says what was expected."""


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, True); anything else -> (tp, False)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _describe_type(tp: Any) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean (1/0/true/false/yes/no)",
        Path: "a path",
    }.get(tp, "a comma-separated list")


def _parse(tp: Any, raw: str) -> Any:
    if tp is str:
        return raw
    text = raw.strip()
    if tp is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
    elif tp is int:
        try:
            return int(text, 10)
        except ValueError:
            pass
    elif tp is float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if math.isfinite(value):  # nan/inf would slip past min/max checks
            return value
    elif tp is Path:
        if text:
            return Path(text)
    elif tp == tuple[str, ...]:
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    raise _Invalid(_describe_type(tp))


def _check(spec: EnvSpec, value: Any) -> None:
    if spec.min is not None and value < spec.min:
        raise _Invalid(f"a value >= {spec.min}")
    if spec.max is not None and value > spec.max:
        raise _Invalid(f"a value <= {spec.max}")
    if spec.choices is not None:
        items = value if isinstance(value, tuple) else (value,)
        if any(item not in spec.choices for item in items):
            raise _Invalid("one of " + ", ".join(map(str, spec.choices)))


def _fields(cls: type) -> list[tuple[dataclasses.Field, EnvSpec, Any]]:
    """(field, spec, resolved type) for every field; every field must come from env()."""
    hints = typing.get_type_hints(cls)  # resolves `from __future__ import annotations` strings
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_META_KEY)
        if spec is None:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with env(...)")
        if _unwrap_optional(hints[f.name])[0] not in _SUPPORTED:  # a bug in the class, not the env
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported type {hints[f.name]!r}")
        out.append((f, spec, hints[f.name]))
    return out


def load_config(cls: type[T], environ: Mapping[str, str] | None = None) -> T:
    """Build `cls` from `environ` (default: os.environ); raise ConfigError listing every problem."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    for f, spec, tp in _fields(cls):
        tp, optional = _unwrap_optional(tp)
        raw = environ.get(spec.var)
        if raw is None:
            if f.default is not MISSING:
                values[f.name] = f.default
            elif f.default_factory is not MISSING:
                values[f.name] = f.default_factory()
            else:
                problems.append(Problem(spec.var, None, f"{_describe_type(tp)} (required)"))
            continue
        if optional and not raw.strip():
            values[f.name] = None
            continue
        try:
            value = _parse(tp, raw)
            _check(spec, value)
        except _Invalid as e:
            problems.append(Problem(spec.var, _MASK if spec.secret else raw, str(e)))
            continue
        values[f.name] = value
    if problems:
        raise ConfigError(cls.__name__, problems)
    return cls(**values)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "" if value is None else str(value)


def describe(config: Any) -> str:
    """The effective config as one log line, `VAR=value` pairs; secret values shown as ***."""
    parts = []
    for f, spec, _ in _fields(type(config)):
        value = getattr(config, f.name)
        shown = _MASK if spec.secret and value not in ("", None) else _show(value)
        parts.append(f"{spec.var}={shown!r}" if " " in shown or not shown else f"{spec.var}={shown}")
    return " ".join(parts)
