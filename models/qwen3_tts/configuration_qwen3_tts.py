"""Configuration of a Qwen3-TTS checkpoint, read from its `config.json`.

The reference's config classes carry stale defaults (codec ids 4196-4205, 32 code groups, ...), so
model sizes and token ids here have no defaults: they must be in the file. The one exception is
the speaker encoder, whose released `config.json` holds only `enc_dim` and `sample_rate`; the rest of
its architecture comes from the class defaults below, which match the released weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from models.checkpoint import CheckpointError, read_json, require_key

MODEL_TYPES = ("base", "custom_voice", "voice_design")


@dataclass(frozen=True)
class Qwen3TTSDecoderConfig:
    """A Qwen3 decoder stack: the talker or the code predictor."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    rms_norm_eps: float
    rope_theta: float
    vocab_size: int

    @classmethod
    def from_dict(cls, raw: dict, path: Path, where: str) -> Qwen3TTSDecoderConfig:
        def get(key):
            if key not in raw:
                raise CheckpointError(f"{path}: missing key {where}.{key}")
            return raw[key]

        act = raw.get("hidden_act", "silu")
        if act != "silu":
            raise CheckpointError(f"{path}: {where}.hidden_act is {act!r}; only 'silu' is supported")
        hidden = get("hidden_size")
        heads = get("num_attention_heads")
        return cls(
            hidden_size=hidden,
            num_hidden_layers=get("num_hidden_layers"),
            num_attention_heads=heads,
            num_key_value_heads=raw.get("num_key_value_heads") or heads,
            head_dim=raw.get("head_dim") or hidden // heads,
            intermediate_size=get("intermediate_size"),
            rms_norm_eps=get("rms_norm_eps"),
            rope_theta=get("rope_theta"),
            vocab_size=get("vocab_size"),
        )


@dataclass(frozen=True)
class Qwen3TTSTalkerConfig(Qwen3TTSDecoderConfig):
    text_vocab_size: int = 0
    text_hidden_size: int = 0
    num_code_groups: int = 16
    codec_pad_id: int = 0
    codec_bos_id: int = 0
    codec_eos_token_id: int = 0
    codec_think_id: int = 0
    codec_nothink_id: int = 0
    codec_think_bos_id: int = 0
    codec_think_eos_id: int = 0
    spk_id: dict = field(default_factory=dict)
    spk_is_dialect: dict = field(default_factory=dict)
    codec_language_id: dict = field(default_factory=dict)
    code_predictor: Qwen3TTSDecoderConfig | None = None


@dataclass(frozen=True)
class Qwen3TTSSpeakerEncoderConfig:
    enc_dim: int
    mel_dim: int = 128
    enc_channels: tuple = (512, 512, 512, 512, 1536)
    enc_kernel_sizes: tuple = (5, 3, 3, 3, 1)
    enc_dilations: tuple = (1, 2, 3, 4, 1)
    enc_attention_channels: int = 128
    enc_res2net_scale: int = 8
    enc_se_channels: int = 128
    sample_rate: int = 24000

    @classmethod
    def from_dict(cls, raw: dict) -> Qwen3TTSSpeakerEncoderConfig:
        known = {k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class Qwen3TTSConfig:
    tts_model_type: str
    tts_model_size: str
    talker: Qwen3TTSTalkerConfig
    speaker_encoder: Qwen3TTSSpeakerEncoderConfig | None
    tts_pad_token_id: int
    tts_bos_token_id: int
    tts_eos_token_id: int

    @property
    def supported_speakers(self) -> list[str]:
        return sorted(self.talker.spk_id)

    @property
    def supported_languages(self) -> list[str]:
        return ["auto"] + sorted(k for k in self.talker.codec_language_id if "dialect" not in k)

    @property
    def follows_instruct(self) -> bool:
        """Whether an `instruct` (style instruction) shapes the output of this checkpoint.

        The 0.6B CustomVoice checkpoint was not trained with instructions (the reference drops them
        silently); Base checkpoints take none.
        """
        if self.tts_model_type == "voice_design":
            return True
        return self.tts_model_type == "custom_voice" and self.tts_model_size != "0b6"

    @classmethod
    def from_file(cls, path: Path) -> Qwen3TTSConfig:
        path = Path(path)
        raw = read_json(path)
        model_type = require_key(raw, "tts_model_type", path)
        if model_type not in MODEL_TYPES:
            raise CheckpointError(
                f"{path}: unknown tts_model_type {model_type!r}; expected one of {', '.join(MODEL_TYPES)}"
            )
        tokenizer_type = raw.get("tokenizer_type", "qwen3_tts_tokenizer_12hz")
        if tokenizer_type != "qwen3_tts_tokenizer_12hz":
            raise CheckpointError(
                f"{path}: tokenizer_type {tokenizer_type!r} is not supported; only the 12 Hz tokenizer is"
            )
        talker_raw = require_key(raw, "talker_config", path)
        predictor_raw = talker_raw.get("code_predictor_config")
        if predictor_raw is None:
            raise CheckpointError(f"{path}: missing key talker_config.code_predictor_config")
        base = Qwen3TTSDecoderConfig.from_dict(talker_raw, path, "talker_config")

        def talker_key(key):
            if key not in talker_raw:
                raise CheckpointError(f"{path}: missing key talker_config.{key}")
            return talker_raw[key]

        talker = Qwen3TTSTalkerConfig(
            **base.__dict__,
            text_vocab_size=talker_key("text_vocab_size"),
            text_hidden_size=talker_key("text_hidden_size"),
            num_code_groups=talker_key("num_code_groups"),
            codec_pad_id=talker_key("codec_pad_id"),
            codec_bos_id=talker_key("codec_bos_id"),
            codec_eos_token_id=talker_key("codec_eos_token_id"),
            codec_think_id=talker_key("codec_think_id"),
            codec_nothink_id=talker_key("codec_nothink_id"),
            codec_think_bos_id=talker_key("codec_think_bos_id"),
            codec_think_eos_id=talker_key("codec_think_eos_id"),
            spk_id={k.lower(): v for k, v in (talker_raw.get("spk_id") or {}).items()},
            spk_is_dialect={k.lower(): v for k, v in (talker_raw.get("spk_is_dialect") or {}).items()},
            codec_language_id={k.lower(): v for k, v in talker_key("codec_language_id").items()},
            code_predictor=Qwen3TTSDecoderConfig.from_dict(predictor_raw, path, "talker_config.code_predictor_config"),
        )
        if talker.num_code_groups != 16:
            raise CheckpointError(
                f"{path}: talker_config.num_code_groups is {talker.num_code_groups}; the 12 Hz models use 16"
            )
        speaker_encoder = None
        if model_type == "base":
            speaker_encoder = Qwen3TTSSpeakerEncoderConfig.from_dict(require_key(raw, "speaker_encoder_config", path))
            if speaker_encoder.enc_dim != talker.hidden_size:
                raise CheckpointError(
                    f"{path}: speaker_encoder_config.enc_dim ({speaker_encoder.enc_dim}) must equal "
                    f"talker_config.hidden_size ({talker.hidden_size})"
                )
        return cls(
            tts_model_type=model_type,
            tts_model_size=raw.get("tts_model_size", ""),
            talker=talker,
            speaker_encoder=speaker_encoder,
            tts_pad_token_id=require_key(raw, "tts_pad_token_id", path),
            tts_bos_token_id=require_key(raw, "tts_bos_token_id", path),
            tts_eos_token_id=require_key(raw, "tts_eos_token_id", path),
        )
