"""What the talker is conditioned on: token-level prompt plans for every mode, and text tokenising.

The talker's input at every position is the sum of a text-track vector and a codec-track vector.
An utterance's input is a fixed *prefix* followed by two streams zipped position by position:

    prefix  = [instruct block] + role (3) + codec tags with tts_pad, the last one with tts_bos
    text    = [reference transcript] + target text (as it arrives) + tts_eos + tts_pad forever
    codec   = [codec_pad x len(text up to tts_eos) if non-streaming] + codec_bos
              + [reference frames (in-context cloning)] + generated frames

In streaming mode the text runs one token ahead of the audio and new text can keep arriving; in
non-streaming mode the codec stream starts only after the whole text, so the text must be complete.
This single shape covers custom voice, voice design and both kinds of cloning; see docs/generator.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from models.checkpoint import CheckpointError
from shared.limits import quote

from .configuration_qwen3_tts import Qwen3TTSConfig


class PromptError(ValueError):
    """A request that cannot be turned into a prompt for this checkpoint (unknown speaker, ...).

    `field` names the request field at fault, for error details further up.
    """

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


@dataclass
class ClonePrompt:
    """A cloned voice: the x-vector of the reference audio, plus for in-context cloning the
    reference's codec frames and the token ids of its transcript."""

    speaker_embedding: torch.Tensor
    ref_codes: torch.Tensor | None = None
    ref_text_ids: list[int] | None = None

    @property
    def in_context(self) -> bool:
        return self.ref_codes is not None


@dataclass
class PromptPlan:
    instruct_ids: list[int] = field(default_factory=list)
    role_ids: list[int] = field(default_factory=list)
    codec_tags: list[int] = field(default_factory=list)
    speaker_codec_id: int | None = None
    clone: ClonePrompt | None = None
    non_streaming: bool = False

    @property
    def ref_text_ids(self) -> list[int]:
        return self.clone.ref_text_ids if self.clone is not None and self.clone.in_context else []

    def prompt_length(self, text_tokens: int) -> int:
        """Talker positions before the first generated frame is fed: the prefix (instruct, role,
        codec tags, speaker, pad) and the template (codec_bos and reference frames; in
        non-streaming mode a codec_pad for every text position up to tts_eos first)."""
        speaker = self.speaker_codec_id is not None or self.clone is not None
        prefix = len(self.instruct_ids) + len(self.role_ids) + len(self.codec_tags) + speaker + 1
        template = 1 + (len(self.clone.ref_codes) if self.clone is not None and self.clone.in_context else 0)
        if self.non_streaming:
            template += len(self.ref_text_ids) + text_tokens + 1
        return prefix + template


class TextTokenizer:
    """The checkpoint's Qwen2 BPE tokenizer, with the chat templates the models were trained on.

    Loaded with the tokenizer's own pre-tokenizer. (The reference, loading from a local directory
    under transformers 4.57.3, swaps in a different pre-tokenizer regex; see docs/generator.md.)

    User text is text: what a caller sends (the text to speak, a transcript, an instruction) is
    tokenized by `text_backend`, the same tokenizer without its added tokens, so a string such as
    "<|im_end|>" in it is spoken as the characters it is and can never close the chat template
    around it. Only the template's own parts become control tokens. For text without such strings
    the ids are exactly the reference's, which tokenizes the template and the text as one string:
    added tokens split a string into segments that are tokenized apart, and the text's segment is
    "assistant\n" + text (or "user\n" + instruction).
    """

    def __init__(self, path: Path):
        from transformers import Qwen2TokenizerFast

        path = Path(path)
        for name in ("vocab.json", "merges.txt"):
            if not (path / name).is_file():
                raise CheckpointError(f"{path / name}: file not found (text tokenizer)")
        self._tok = Qwen2TokenizerFast.from_pretrained(str(path))
        self.text_backend = _without_added_tokens(self._tok.backend_tokenizer)
        self.role_ids = self._template_ids("<|im_start|>assistant\n")
        if len(self.role_ids) != 3:
            raise CheckpointError(
                f"{path}: the tokenizer splits '<|im_start|>assistant\\n' into {len(self.role_ids)} "
                "tokens; Qwen3-TTS prompts need exactly 3"
            )
        self._im_start, self._im_end = self._template_ids("<|im_start|><|im_end|>")
        self._newline = self.encode_text("\n")

    def _template_ids(self, template: str) -> list[int]:
        """Ids of template text, whose control-token strings are control tokens."""
        return self._tok.encode(template, add_special_tokens=False)

    def encode_text(self, text: str) -> list[int]:
        """Ids of user text, in which nothing is a control token."""
        return self.text_backend.encode(text, add_special_tokens=False).ids

    def target_ids(self, text: str) -> list[int]:
        """Token ids of the text to speak, as the reference tokenizes it inside its chat template
        (`<|im_start|>assistant\n{text}<|im_end|>...`, sliced after the role's 3 ids)."""
        return self.encode_text("assistant\n" + text)[2:]

    def ref_text_ids(self, text: str) -> list[int]:
        return self.target_ids(text)

    def instruct_ids(self, instruct: str) -> list[int]:
        """`<|im_start|>user\n{instruct}<|im_end|>\n`."""
        return [self._im_start, *self.encode_text("user\n" + instruct), self._im_end, *self._newline]


def _without_added_tokens(backend):
    """A copy of a `tokenizers.Tokenizer` that knows none of its added (control) tokens."""
    from tokenizers import Tokenizer

    spec = json.loads(backend.to_str())
    spec["added_tokens"] = []
    return Tokenizer.from_str(json.dumps(spec))


def resolve_language(config: Qwen3TTSConfig, language: str | None, speaker: str | None) -> int | None:
    """The codec language id for a request (None for "auto"), with the dialect substitution of
    dialect speakers (Chinese or auto -> their dialect)."""
    language = (language or "auto").lower()
    talker = config.talker
    if language != "auto" and (language not in talker.codec_language_id or "dialect" in language):
        raise PromptError(
            f"unsupported language {quote(language)}; supported: {', '.join(config.supported_languages)}",
            "language",
        )
    language_id = None if language == "auto" else talker.codec_language_id[language]
    dialect = talker.spk_is_dialect.get(speaker.lower(), False) if speaker else False
    if dialect and language in ("chinese", "auto"):
        language_id = talker.codec_language_id[dialect]
    return language_id


def plan_prompt(
    config: Qwen3TTSConfig,
    tokenizer: TextTokenizer,
    *,
    language: str | None = "auto",
    speaker: str | None = None,
    instruct: str | None = None,
    clone: ClonePrompt | None = None,
    non_streaming: bool = False,
) -> PromptPlan:
    """Validate a request against the checkpoint and lay out its prompt tokens.

    Nothing is dropped silently: a speaker, instruct or cloned voice that this checkpoint cannot
    use is an error naming the field.
    """
    kind = config.tts_model_type
    talker = config.talker
    speaker = speaker or None
    instruct = instruct or None
    if kind == "custom_voice":
        if speaker is None:
            raise PromptError(
                f"a preset speaker is required; available: {', '.join(config.supported_speakers)}", "speaker"
            )
        if speaker.lower() not in talker.spk_id:
            raise PromptError(
                f"unknown speaker {quote(speaker)}; available: {', '.join(config.supported_speakers)}", "speaker"
            )
    elif speaker is not None:
        raise PromptError(f"a {kind} model has no preset speakers (got {quote(speaker)})", "speaker")
    if instruct is not None and not config.follows_instruct:
        raise PromptError(f"this {config.tts_model_size} {kind} model does not follow style instructions", "instruct")
    if kind == "voice_design" and instruct is None:
        raise PromptError("a voice description (instruct) is required for voice design", "instruct")
    if (clone is None) != (kind != "base"):
        if clone is None:
            raise PromptError("a Base model needs a cloned voice (reference audio)", "voice")
        raise PromptError(f"a {kind} model cannot use a cloned voice", "voice")
    if clone is not None and clone.speaker_embedding.shape[-1] != talker.hidden_size:
        raise PromptError(
            f"the speaker embedding has size {clone.speaker_embedding.shape[-1]}, this model needs "
            f"{talker.hidden_size} (embedding computed by a different model?)",
            "voice",
        )

    language_id = resolve_language(config, language, speaker)
    if language_id is None:
        tags = [talker.codec_nothink_id, talker.codec_think_bos_id, talker.codec_think_eos_id]
    else:
        tags = [talker.codec_think_id, talker.codec_think_bos_id, language_id, talker.codec_think_eos_id]
    return PromptPlan(
        instruct_ids=tokenizer.instruct_ids(instruct) if instruct else [],
        role_ids=list(tokenizer.role_ids),
        codec_tags=tags,
        speaker_codec_id=talker.spk_id[speaker.lower()] if speaker else None,
        clone=clone,
        non_streaming=non_streaming,
    )
