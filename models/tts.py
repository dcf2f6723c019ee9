"""A loaded Qwen3-TTS checkpoint and whole-utterance synthesis built on the engine.

`Qwen3TTS.from_pretrained(dir)` reads the official checkpoint layout (config.json,
generation_config.json, model.safetensors, the text tokenizer files and speech_tokenizer/).
The whole-utterance functions (`generate_custom_voice`, `generate_voice_design`,
`generate_voice_clone`) run sessions on a private `Engine` until they finish, then decode; the
services use the engine directly to stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import CheckpointError, load_module_weights, parse_dtype, read_json, read_safetensors
from models.cpu_kernels import pack_linears, packing_supported, use_fused_ops
from models.engine.engine import Engine, FinishReason, SchedulerLimits, Session
from models.engine.sampler import SamplingParams
from models.qwen3_tts.configuration_qwen3_tts import Qwen3TTSConfig
from models.qwen3_tts.modeling_qwen3_tts import Qwen3TTSTalker
from models.qwen3_tts.modeling_speaker_encoder import Qwen3TTSSpeakerEncoder
from models.qwen3_tts.prompts import ClonePrompt, PromptError, TextTokenizer, plan_prompt
from models.tokenizer_12hz.speech_tokenizer import SpeechTokenizer
from shared.audio import prepare_reference_audio


@dataclass
class Utterance:
    codes: torch.Tensor  # (frames, 16) int64
    audio: np.ndarray | None  # float32 mono at 24 kHz (None when decoding was not asked for)
    finish_reason: FinishReason


class Qwen3TTS:
    def __init__(
        self,
        path: Path,
        config: Qwen3TTSConfig,
        talker: Qwen3TTSTalker,
        speaker_encoder: Qwen3TTSSpeakerEncoder | None,
        tokenizer: TextTokenizer,
        codec: SpeechTokenizer | None,
        defaults: SamplingParams,
    ):
        self.path = path
        self.config = config
        self.talker = talker
        self.speaker_encoder = speaker_encoder
        self.tokenizer = tokenizer
        self.codec = codec
        self.defaults = defaults

    @classmethod
    def from_pretrained(cls, path, *, dtype="float32", device="cpu", load_codec: bool = True) -> Qwen3TTS:
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"{path}: checkpoint directory not found")
        dtype = parse_dtype(dtype)
        config = Qwen3TTSConfig.from_file(path / "config.json")
        defaults = SamplingParams.from_generation_config(read_json(path / "generation_config.json"))
        weights_path = path / "model.safetensors"
        tensors = read_safetensors(weights_path)
        known = ("talker.", "speaker_encoder.")
        stray = sorted(k for k in tensors if not k.startswith(known))
        if stray:
            raise CheckpointError(f"{weights_path}: unexpected tensors {', '.join(map(repr, stray[:5]))}")

        talker = Qwen3TTSTalker(config.talker)
        load_module_weights(talker, tensors, "talker.", weights_path)
        talker.to(device=device, dtype=dtype).eval()
        talker.fuse()
        if packing_supported(dtype, torch.device(device)):
            pack_linears(talker)
        if torch.device(device).type == "cpu":
            use_fused_ops(talker)
        speaker_encoder = None
        if config.speaker_encoder is not None:
            speaker_encoder = Qwen3TTSSpeakerEncoder(config.speaker_encoder)
            load_module_weights(speaker_encoder, tensors, "speaker_encoder.", weights_path)
            speaker_encoder.to(device=device, dtype=dtype).eval()
        elif any(k.startswith("speaker_encoder.") for k in tensors):
            raise CheckpointError(
                f"{weights_path}: has speaker_encoder tensors but config.json says tts_model_type "
                f"{config.tts_model_type!r} (only 'base' has a speaker encoder)"
            )
        del tensors
        tokenizer = TextTokenizer(path)
        codec = SpeechTokenizer.from_pretrained(path, dtype=dtype, device=device) if load_codec else None
        return cls(path, config, talker, speaker_encoder, tokenizer, codec, defaults)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.talker.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.talker.parameters()).device

    def new_engine(
        self, limits: SchedulerLimits = SchedulerLimits(), *, use_graphs: bool = False, compiled: bool = False
    ) -> Engine:
        c = self.config
        return Engine(
            self.talker,
            pad_id=c.talker.codec_pad_id,
            bos_id=c.talker.codec_bos_id,
            eos_id=c.talker.codec_eos_token_id,
            text_ids={"tts_pad": c.tts_pad_token_id, "tts_bos": c.tts_bos_token_id, "tts_eos": c.tts_eos_token_id},
            limits=limits,
            use_graphs=use_graphs,
            compiled=compiled,
        )

    def sampling(self, **overrides) -> SamplingParams:
        """The checkpoint's generation defaults with `overrides` (None values ignored)."""
        params = self.defaults.with_overrides(**overrides)
        params.validate()
        return params

    # ----- voices -----

    @torch.inference_mode()
    def create_voice_clone_prompt(
        self, audio: np.ndarray, sample_rate: int, ref_text: str | None = None
    ) -> ClonePrompt:
        """A cloned voice from reference audio: with `ref_text` for in-context cloning, without it
        the speaker embedding alone."""
        if self.speaker_encoder is None:
            raise PromptError(f"a {self.config.tts_model_type} model cannot clone voices", "voice")
        embedding = self.speaker_encoder.embed(audio, sample_rate)
        if ref_text is None:
            return ClonePrompt(speaker_embedding=embedding)
        if not ref_text.strip():
            raise PromptError("the reference transcript is empty", "ref_text")
        if self.codec is None:
            raise RuntimeError("in-context cloning needs the codec (load_codec=True)")
        codes = self.codec.encode([prepare_reference_audio(audio, sample_rate)])[0]
        return ClonePrompt(embedding, ref_codes=codes, ref_text_ids=self.tokenizer.ref_text_ids(ref_text))

    # ----- whole utterances -----

    @torch.inference_mode()
    def generate(
        self,
        texts: list[str],
        *,
        language="auto",
        speaker=None,
        instruct=None,
        clone: ClonePrompt | None = None,
        non_streaming: bool = True,
        decode: bool = True,
        **sampling,
    ) -> list[Utterance]:
        """Synthesize each text (one session each, stepped together). `language`, `speaker` and
        `instruct` may be one value for all texts or a list with one per text."""
        n = len(texts)
        languages, speakers, instructs = (
            _per_text(v, n, name) for v, name in ((language, "language"), (speaker, "speaker"), (instruct, "instruct"))
        )
        params = self.sampling(**sampling)
        engine = self.new_engine(SchedulerLimits(slots=n))
        sessions = []
        for text, lang, spk, ins in zip(texts, languages, speakers, instructs):
            options = dict(language=lang, speaker=spk, instruct=ins, clone=clone, non_streaming=non_streaming)
            sessions.append(self.start_utterance(engine, text, params, **options))
        while engine.active:
            engine.step()
        utterances = []
        for session in sessions:
            codes = np.stack(session.frames) if session.frames else np.zeros((0, 16), dtype=np.int64)
            utterances.append(Utterance(torch.from_numpy(codes), None, session.finish_reason))
        if decode:
            self._decode(utterances, clone)
        return utterances

    def start_utterance(
        self,
        engine: Engine,
        text: str,
        params: SamplingParams,
        *,
        language="auto",
        speaker=None,
        instruct=None,
        clone: ClonePrompt | None = None,
        non_streaming: bool = True,
    ) -> Session:
        """Start one utterance of a whole text on `engine` (its text added and closed)."""
        plan = plan_prompt(
            self.config,
            self.tokenizer,
            language=language,
            speaker=speaker,
            instruct=instruct,
            clone=clone,
            non_streaming=non_streaming,
        )
        session = engine.start(plan, params)
        engine.add_text(session, self.tokenizer.target_ids(text))
        engine.close_text(session)
        return session

    def generate_custom_voice(
        self, texts, speaker, *, language="auto", instruct=None, non_streaming=True, **sampling
    ) -> list[Utterance]:
        return self.generate(
            texts, language=language, speaker=speaker, instruct=instruct, non_streaming=non_streaming, **sampling
        )

    def generate_voice_design(
        self, texts, instruct, *, language="auto", non_streaming=True, **sampling
    ) -> list[Utterance]:
        return self.generate(texts, language=language, instruct=instruct, non_streaming=non_streaming, **sampling)

    def generate_voice_clone(
        self, texts, clone: ClonePrompt, *, language="auto", non_streaming=False, **sampling
    ) -> list[Utterance]:
        return self.generate(texts, language=language, clone=clone, non_streaming=non_streaming, **sampling)

    def _decode(self, utterances: list[Utterance], clone: ClonePrompt | None) -> None:
        if self.codec is None:
            raise RuntimeError("decoding needs the codec (load_codec=True)")
        spoken = [u for u in utterances if len(u.codes)]
        for utterance in utterances:
            utterance.audio = np.zeros(0, dtype=np.float32)
        if not spoken:
            return
        if clone is not None and clone.in_context:
            # Decode after the reference frames so the audio continues them, then drop exactly
            # the reference's samples (the reference crops by a float ratio; see docs).
            ref = clone.ref_codes.cpu()
            skip = len(ref) * self.codec.samples_per_frame
            wavs = [w[skip:] for w in self.codec.decode([torch.cat([ref, u.codes]) for u in spoken])]
        else:
            wavs = self.codec.decode([u.codes for u in spoken])
        for utterance, wav in zip(spoken, wavs):
            utterance.audio = wav


def _per_text(value, n: int, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return list(value) * n
        if len(value) != n:
            raise PromptError(f"{name} has {len(value)} values for {n} texts", name)
        return list(value)
    return [value] * n
