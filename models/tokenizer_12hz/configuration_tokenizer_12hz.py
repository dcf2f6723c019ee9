"""Configuration of the Qwen3-TTS 12 Hz speech tokenizer (the codec).

Read from `speech_tokenizer/config.json` (model type `qwen3_tts_tokenizer_12hz`). The file has a
`decoder_config` (our own decoder, see `modeling.py`) and an `encoder_config` (a transformers
`MimiConfig`), plus the sample rates and the samples-per-frame of both directions.

Every value the decoder's shapes or numerics depend on is required: the reference's class defaults
are wrong for the released models (`hidden_size` 1024, `intermediate_size` 3072), and
`codebook_dim` / `head_dim` have no class default at all, so a file without them is rejected with a
`CheckpointError` that names the file and the key rather than silently building the wrong network.
The semantic codebook is built with `codebook_size` rows; `semantic_codebook_size` (4096 in the
released file) is ignored, as in the reference.

The `encoder_config` is handed to `transformers.MimiConfig` the way the reference does, so keys it
leaves out take Mimi's defaults (which are the released values).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from models.checkpoint import CheckpointError, read_json, require_key

MODEL_TYPE = "qwen3_tts_tokenizer_12hz"


def _require(config: dict, key: str, path: Path, section: str, kind):
    """`config[key]` checked against `kind`; errors name the file and the dotted key."""
    dotted = f"{section}.{key}" if section else key
    if not isinstance(config, dict) or key not in config:
        raise CheckpointError(f"{path}: missing key {dotted!r}")
    value = config[key]
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is list:
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
        )
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise CheckpointError(f"{path}: key {dotted!r} has invalid value {value!r}")
    return value


@dataclass(frozen=True)
class Qwen3TTSTokenizerDecoderConfig:
    """Shapes and numerics of the decoder (codes -> waveform)."""

    codebook_size: int  # rows of every codebook, the semantic one included
    codebook_dim: int  # width of the quantizer output (codebook vectors are codebook_dim // 2 wide)
    num_quantizers: int  # 16: 1 semantic + 15 acoustic
    latent_dim: int  # pre_conv output / pre-transformer input and output width
    hidden_size: int  # pre-transformer width
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    num_hidden_layers: int
    sliding_window: int  # a query attends to itself and the sliding_window - 1 frames before it
    rope_theta: float
    rms_norm_eps: float
    upsample_rates: tuple[int, ...]  # decoder blocks (8, 5, 4, 3)
    upsampling_ratios: tuple[int, ...]  # transposed-conv + ConvNeXt stages after the transformer (2, 2)
    decoder_dim: int
    attention_bias: bool = False
    hidden_act: str = "silu"

    @property
    def samples_per_frame(self) -> int:
        return math.prod(self.upsampling_ratios) * math.prod(self.upsample_rates)

    @classmethod
    def from_dict(cls, config: dict, path: Path) -> Qwen3TTSTokenizerDecoderConfig:
        s = "decoder_config"
        values = dict(
            codebook_size=_require(config, "codebook_size", path, s, int),
            codebook_dim=_require(config, "codebook_dim", path, s, int),
            num_quantizers=_require(config, "num_quantizers", path, s, int),
            latent_dim=_require(config, "latent_dim", path, s, int),
            hidden_size=_require(config, "hidden_size", path, s, int),
            intermediate_size=_require(config, "intermediate_size", path, s, int),
            num_attention_heads=_require(config, "num_attention_heads", path, s, int),
            num_key_value_heads=_require(config, "num_key_value_heads", path, s, int),
            head_dim=_require(config, "head_dim", path, s, int),
            num_hidden_layers=_require(config, "num_hidden_layers", path, s, int),
            sliding_window=_require(config, "sliding_window", path, s, int),
            rope_theta=_require(config, "rope_theta", path, s, float),
            rms_norm_eps=_require(config, "rms_norm_eps", path, s, float),
            upsample_rates=_require(config, "upsample_rates", path, s, list),
            upsampling_ratios=_require(config, "upsampling_ratios", path, s, list),
            decoder_dim=_require(config, "decoder_dim", path, s, int),
        )
        if "attention_bias" in config:
            values["attention_bias"] = _require(config, "attention_bias", path, s, bool)
        if "hidden_act" in config:
            values["hidden_act"] = _require(config, "hidden_act", path, s, str)
        cfg = cls(**values)
        cfg._validate(config, path)
        return cfg

    def _validate(self, raw: dict, path: Path) -> None:
        def bad(key: str, why: str):
            raise CheckpointError(f"{path}: key 'decoder_config.{key}' {why}")

        if self.hidden_act != "silu":
            bad("hidden_act", f"is {self.hidden_act!r}; only 'silu' is supported")
        if raw.get("num_semantic_quantizers", 1) != 1:
            bad("num_semantic_quantizers", "must be 1 (the decoder has one semantic codebook)")
        if self.num_quantizers < 2:
            bad("num_quantizers", "must be at least 2 (1 semantic + acoustic)")
        if self.codebook_dim % 2:
            bad("codebook_dim", "must be even (codebook vectors are codebook_dim // 2 wide)")
        if self.num_attention_heads % self.num_key_value_heads:
            bad("num_key_value_heads", "must divide num_attention_heads")
        if self.head_dim % 2:
            bad("head_dim", "must be even (rotary embedding)")
        if self.sliding_window < 1:
            bad("sliding_window", "must be positive")
        if self.decoder_dim % (2 ** len(self.upsample_rates)):
            bad("decoder_dim", "must be divisible by 2 ** len(upsample_rates)")
        scaling = raw.get("rope_scaling")
        if isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type", "default")) != "default":
            bad("rope_scaling", f"is {scaling!r}; only plain RoPE is supported")


@dataclass(frozen=True)
class Qwen3TTSTokenizerConfig:
    """The whole `speech_tokenizer/config.json`."""

    decoder: Qwen3TTSTokenizerDecoderConfig
    encoder: dict = field(repr=False)  # raw `encoder_config`, for transformers.MimiConfig
    encoder_valid_num_quantizers: int
    input_sample_rate: int
    output_sample_rate: int
    encode_downsample_rate: int
    decode_upsample_rate: int
    path: Path | None = None

    @property
    def num_quantizers(self) -> int:
        return self.decoder.num_quantizers

    @property
    def codebook_size(self) -> int:
        return self.decoder.codebook_size

    @classmethod
    def from_json_file(cls, path: str | Path) -> Qwen3TTSTokenizerConfig:
        path = Path(path)
        return cls.from_dict(read_json(path), path)

    @classmethod
    def from_dict(cls, config: dict, path: Path) -> Qwen3TTSTokenizerConfig:
        if not isinstance(config, dict):
            raise CheckpointError(f"{path}: expected a JSON object")
        model_type = require_key(config, "model_type", path)
        if model_type != MODEL_TYPE:
            raise CheckpointError(
                f"{path}: key 'model_type' is {model_type!r}; expected {MODEL_TYPE!r} "
                "(only the 12 Hz speech tokenizer is supported)"
            )
        decoder_raw = require_key(config, "decoder_config", path)
        encoder_raw = require_key(config, "encoder_config", path)
        if not isinstance(encoder_raw, dict):
            raise CheckpointError(f"{path}: key 'encoder_config' must be an object")
        cfg = cls(
            decoder=Qwen3TTSTokenizerDecoderConfig.from_dict(decoder_raw, path),
            encoder=dict(encoder_raw),
            encoder_valid_num_quantizers=_require(config, "encoder_valid_num_quantizers", path, "", int),
            input_sample_rate=_require(config, "input_sample_rate", path, "", int),
            output_sample_rate=_require(config, "output_sample_rate", path, "", int),
            encode_downsample_rate=_require(config, "encode_downsample_rate", path, "", int),
            decode_upsample_rate=_require(config, "decode_upsample_rate", path, "", int),
            path=path,
        )
        if cfg.decode_upsample_rate != cfg.decoder.samples_per_frame:
            raise CheckpointError(
                f"{path}: key 'decode_upsample_rate' is {cfg.decode_upsample_rate}, but the decoder "
                f"upsamples by {cfg.decoder.samples_per_frame} (product of upsampling_ratios and upsample_rates)"
            )
        if cfg.encoder_valid_num_quantizers != cfg.decoder.num_quantizers:
            raise CheckpointError(
                f"{path}: key 'encoder_valid_num_quantizers' is {cfg.encoder_valid_num_quantizers}, "
                f"but the decoder reads {cfg.decoder.num_quantizers} codebooks"
            )
        if cfg.encoder.get("codebook_size", cfg.decoder.codebook_size) != cfg.decoder.codebook_size:
            raise CheckpointError(
                f"{path}: key 'encoder_config.codebook_size' differs from 'decoder_config.codebook_size'"
            )
        return cfg

    def mimi_config(self):
        """The transformers `MimiConfig` of the encoder, with the decoder half dropped.

        The reference (transformers 4.57.3, SDPA/eager attention) runs Mimi's encoder transformer
        with a plain causal mask: its `sliding_window` (250) is only honoured by FlashAttention-2.
        transformers 5.x applies the window on every backend, which changes the codes of inputs
        longer than `sliding_window` encoder steps (10 s). To give the reference's codes we lift
        the window past any input length.
        """
        from transformers import MimiConfig

        path = self.path
        raw = dict(self.encoder)
        raw.pop("model_type", None)
        raw.pop("transformers_version", None)
        raw.pop("architectures", None)
        try:
            mimi = MimiConfig(**raw)
        except (TypeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{path}: key 'encoder_config' is not a valid Mimi config ({exc})") from None
        frame = mimi.frame_size
        if frame != self.encode_downsample_rate:
            raise CheckpointError(
                f"{path}: key 'encode_downsample_rate' is {self.encode_downsample_rate}, but the Mimi "
                f"encoder_config gives {frame} samples per frame"
            )
        if mimi.num_quantizers < self.encoder_valid_num_quantizers:
            raise CheckpointError(
                f"{path}: key 'encoder_config.num_quantizers' ({mimi.num_quantizers}) is smaller than "
                f"'encoder_valid_num_quantizers' ({self.encoder_valid_num_quantizers})"
            )
        mimi.sliding_window = 1 << 30
        mimi.decoder_config = None
        mimi._attn_implementation = "sdpa"
        return mimi
