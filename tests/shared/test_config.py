"""shared.config: typed config from environment variables, every problem reported at once."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass
from pathlib import Path

import pytest

from shared.config import ConfigError, describe, env, load_config


@dataclass(frozen=True)
class Example:
    checkpoint: Path = env("EX_CHECKPOINT")  # required, declared before defaulted fields
    port: int = env("EX_PORT", default=50051, min=1, max=65535)
    temperature: float = env("EX_TEMPERATURE", default=0.9, min=0.0)
    debug: bool = env("EX_DEBUG", default=False)
    device: str = env("EX_DEVICE", default="cpu", choices=("cpu", "cuda"))
    languages: tuple[str, ...] = env("EX_LANGUAGES", default=("auto",))
    batch: int | None = env("EX_BATCH", default=None)
    token: str = env("EX_TOKEN", default="", secret=True)


def test_defaults_apply_when_unset():
    config = load_config(Example, {"EX_CHECKPOINT": "/ckpt"})
    assert config == Example(checkpoint=Path("/ckpt"))
    assert (config.port, config.temperature, config.debug) == (50051, 0.9, False)
    assert (config.device, config.languages, config.batch, config.token) == ("cpu", ("auto",), None, "")
    with pytest.raises(FrozenInstanceError):
        config.port = 1


def test_every_type_is_parsed():
    config = load_config(
        Example,
        {
            "EX_CHECKPOINT": " /models/base ",
            "EX_PORT": "8080",
            "EX_TEMPERATURE": "0.25",
            "EX_DEBUG": "Yes",
            "EX_DEVICE": "cuda",
            "EX_LANGUAGES": "en, zh,,ja ",
            "EX_BATCH": "16",
            "EX_TOKEN": "s3cret",
        },
    )
    assert config.checkpoint == Path("/models/base")
    assert config.port == 8080 and isinstance(config.port, int)
    assert config.temperature == 0.25
    assert config.debug is True
    assert config.device == "cuda"
    assert config.languages == ("en", "zh", "ja")
    assert config.batch == 16
    assert config.token == "s3cret"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("TRUE", True), ("yes", True), ("0", False), ("False", False), ("NO", False)],
)
def test_bool_spellings(raw, expected):
    assert load_config(Example, {"EX_CHECKPOINT": "/c", "EX_DEBUG": raw}).debug is expected


def test_empty_optional_means_none_and_empty_list_is_empty():
    config = load_config(Example, {"EX_CHECKPOINT": "/c", "EX_BATCH": "", "EX_LANGUAGES": ""})
    assert config.batch is None and config.languages == ()


def test_all_bad_variables_are_named_in_one_error():
    environ = {
        # EX_CHECKPOINT missing (required)
        "EX_PORT": "abc",
        "EX_TEMPERATURE": "-1",
        "EX_DEBUG": "maybe",
        "EX_DEVICE": "tpu",
    }
    with pytest.raises(ConfigError) as info:
        load_config(Example, environ)
    by_var = {p.var: p for p in info.value.problems}
    assert set(by_var) == {"EX_CHECKPOINT", "EX_PORT", "EX_TEMPERATURE", "EX_DEBUG", "EX_DEVICE"}
    assert by_var["EX_CHECKPOINT"].value is None and "required" in by_var["EX_CHECKPOINT"].expected
    assert by_var["EX_PORT"].value == "abc" and "integer" in by_var["EX_PORT"].expected
    assert ">= 0.0" in by_var["EX_TEMPERATURE"].expected
    assert "boolean" in by_var["EX_DEBUG"].expected
    assert "cpu, cuda" in by_var["EX_DEVICE"].expected
    message = str(info.value)
    for var, value in [("EX_PORT", "'abc'"), ("EX_DEBUG", "'maybe'"), ("EX_DEVICE", "'tpu'")]:
        assert f"{var}={value}" in message
    assert "EX_CHECKPOINT=unset" in message


def test_out_of_range_above_max_and_non_finite_float():
    with pytest.raises(ConfigError) as info:
        load_config(Example, {"EX_CHECKPOINT": "/c", "EX_PORT": "70000", "EX_TEMPERATURE": "nan"})
    assert {p.var: p.expected for p in info.value.problems} == {
        "EX_PORT": "a value <= 65535",
        "EX_TEMPERATURE": "a number",
    }


def test_secrets_are_masked_in_describe_and_in_errors():
    config = load_config(Example, {"EX_CHECKPOINT": "/c", "EX_TOKEN": "s3cret", "EX_LANGUAGES": "en,zh"})
    line = describe(config)
    assert "s3cret" not in line and "EX_TOKEN=***" in line
    assert "EX_PORT=50051" in line and "EX_DEBUG=false" in line and "EX_LANGUAGES=en,zh" in line

    @dataclass(frozen=True)
    class Strict:
        key: str = env("EX_KEY", secret=True, choices=("a", "b"))

    with pytest.raises(ConfigError) as info:
        load_config(Strict, {"EX_KEY": "s3cret"})
    assert "s3cret" not in str(info.value) and "EX_KEY='***'" in str(info.value)


def test_fields_without_env_are_a_programming_error():
    @dataclass(frozen=True)
    class Bad:
        port: int = 1

    with pytest.raises(TypeError, match="Bad.port"):
        load_config(Bad, {})

    @dataclass(frozen=True)
    class Unsupported:
        ratio: complex = env("EX_RATIO", default=1j)

    with pytest.raises(TypeError, match="unsupported type"):
        load_config(Unsupported, {})  # caught even though the variable is unset
