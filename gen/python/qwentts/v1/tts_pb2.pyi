from qwentts.v1 import audio_pb2 as _audio_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_END_OF_SPEECH: _ClassVar[FinishReason]
    FINISH_REASON_MAX_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_FRAME_BUDGET: _ClassVar[FinishReason]

class ModelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_KIND_UNSPECIFIED: _ClassVar[ModelKind]
    MODEL_KIND_BASE: _ClassVar[ModelKind]
    MODEL_KIND_CUSTOM_VOICE: _ClassVar[ModelKind]
    MODEL_KIND_VOICE_DESIGN: _ClassVar[ModelKind]
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_END_OF_SPEECH: FinishReason
FINISH_REASON_MAX_LENGTH: FinishReason
FINISH_REASON_FRAME_BUDGET: FinishReason
MODEL_KIND_UNSPECIFIED: ModelKind
MODEL_KIND_BASE: ModelKind
MODEL_KIND_CUSTOM_VOICE: ModelKind
MODEL_KIND_VOICE_DESIGN: ModelKind

class VoiceSelection(_message.Message):
    __slots__ = ("voice_id", "preset_speaker", "design_description")
    VOICE_ID_FIELD_NUMBER: _ClassVar[int]
    PRESET_SPEAKER_FIELD_NUMBER: _ClassVar[int]
    DESIGN_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    voice_id: str
    preset_speaker: str
    design_description: str
    def __init__(self, voice_id: _Optional[str] = ..., preset_speaker: _Optional[str] = ..., design_description: _Optional[str] = ...) -> None: ...

class SamplingOptions(_message.Message):
    __slots__ = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty")
    DO_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    REPETITION_PENALTY_FIELD_NUMBER: _ClassVar[int]
    do_sample: bool
    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    def __init__(self, do_sample: _Optional[bool] = ..., temperature: _Optional[float] = ..., top_k: _Optional[int] = ..., top_p: _Optional[float] = ..., repetition_penalty: _Optional[float] = ...) -> None: ...

class SynthesisConfig(_message.Message):
    __slots__ = ("voice", "language", "instruct", "output_format", "sampling", "predictor_sampling", "seed", "max_audio_seconds", "model")
    VOICE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    INSTRUCT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    PREDICTOR_SAMPLING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_AUDIO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    voice: VoiceSelection
    language: str
    instruct: str
    output_format: _audio_pb2.AudioFormat
    sampling: SamplingOptions
    predictor_sampling: SamplingOptions
    seed: int
    max_audio_seconds: float
    model: str
    def __init__(self, voice: _Optional[_Union[VoiceSelection, _Mapping]] = ..., language: _Optional[str] = ..., instruct: _Optional[str] = ..., output_format: _Optional[_Union[_audio_pb2.AudioFormat, _Mapping]] = ..., sampling: _Optional[_Union[SamplingOptions, _Mapping]] = ..., predictor_sampling: _Optional[_Union[SamplingOptions, _Mapping]] = ..., seed: _Optional[int] = ..., max_audio_seconds: _Optional[float] = ..., model: _Optional[str] = ...) -> None: ...

class SynthesizeRequest(_message.Message):
    __slots__ = ("config", "text")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    config: SynthesisConfig
    text: str
    def __init__(self, config: _Optional[_Union[SynthesisConfig, _Mapping]] = ..., text: _Optional[str] = ...) -> None: ...

class StreamSynthesizeRequest(_message.Message):
    __slots__ = ("config", "text")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    config: SynthesisConfig
    text: str
    def __init__(self, config: _Optional[_Union[SynthesisConfig, _Mapping]] = ..., text: _Optional[str] = ...) -> None: ...

class SynthesizeResponse(_message.Message):
    __slots__ = ("audio", "summary")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    summary: SynthesisSummary
    def __init__(self, audio: _Optional[bytes] = ..., summary: _Optional[_Union[SynthesisSummary, _Mapping]] = ...) -> None: ...

class StreamingSynthesizeRequest(_message.Message):
    __slots__ = ("config", "input")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    config: SynthesisConfig
    input: TextInput
    def __init__(self, config: _Optional[_Union[SynthesisConfig, _Mapping]] = ..., input: _Optional[_Union[TextInput, _Mapping]] = ...) -> None: ...

class TextInput(_message.Message):
    __slots__ = ("text", "flush")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FLUSH_FIELD_NUMBER: _ClassVar[int]
    text: str
    flush: bool
    def __init__(self, text: _Optional[str] = ..., flush: _Optional[bool] = ...) -> None: ...

class StreamSynthesizeResponse(_message.Message):
    __slots__ = ("audio", "progress", "summary")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    audio: AudioChunk
    progress: TextProgress
    summary: SynthesisSummary
    def __init__(self, audio: _Optional[_Union[AudioChunk, _Mapping]] = ..., progress: _Optional[_Union[TextProgress, _Mapping]] = ..., summary: _Optional[_Union[SynthesisSummary, _Mapping]] = ...) -> None: ...

class StreamingSynthesizeResponse(_message.Message):
    __slots__ = ("audio", "progress", "summary")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    audio: AudioChunk
    progress: TextProgress
    summary: SynthesisSummary
    def __init__(self, audio: _Optional[_Union[AudioChunk, _Mapping]] = ..., progress: _Optional[_Union[TextProgress, _Mapping]] = ..., summary: _Optional[_Union[SynthesisSummary, _Mapping]] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("audio", "sequence", "start_seconds", "duration_seconds")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    sequence: int
    start_seconds: float
    duration_seconds: float
    def __init__(self, audio: _Optional[bytes] = ..., sequence: _Optional[int] = ..., start_seconds: _Optional[float] = ..., duration_seconds: _Optional[float] = ...) -> None: ...

class TextProgress(_message.Message):
    __slots__ = ("characters_consumed", "characters_received")
    CHARACTERS_CONSUMED_FIELD_NUMBER: _ClassVar[int]
    CHARACTERS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    characters_consumed: int
    characters_received: int
    def __init__(self, characters_consumed: _Optional[int] = ..., characters_received: _Optional[int] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("input_characters", "audio_frames", "audio_seconds")
    INPUT_CHARACTERS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FRAMES_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    input_characters: int
    audio_frames: int
    audio_seconds: float
    def __init__(self, input_characters: _Optional[int] = ..., audio_frames: _Optional[int] = ..., audio_seconds: _Optional[float] = ...) -> None: ...

class SynthesisSummary(_message.Message):
    __slots__ = ("finish_reason", "usage", "model", "output_format")
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    finish_reason: FinishReason
    usage: Usage
    model: str
    output_format: _audio_pb2.AudioFormat
    def __init__(self, finish_reason: _Optional[_Union[FinishReason, str]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., model: _Optional[str] = ..., output_format: _Optional[_Union[_audio_pb2.AudioFormat, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "kind", "size", "languages", "speakers", "supports_instruct", "native_sample_rate_hz")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    SPEAKERS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_INSTRUCT_FIELD_NUMBER: _ClassVar[int]
    NATIVE_SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ModelKind
    size: str
    languages: _containers.RepeatedScalarFieldContainer[str]
    speakers: _containers.RepeatedCompositeFieldContainer[PresetSpeaker]
    supports_instruct: bool
    native_sample_rate_hz: int
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ModelKind, str]] = ..., size: _Optional[str] = ..., languages: _Optional[_Iterable[str]] = ..., speakers: _Optional[_Iterable[_Union[PresetSpeaker, _Mapping]]] = ..., supports_instruct: _Optional[bool] = ..., native_sample_rate_hz: _Optional[int] = ...) -> None: ...

class PresetSpeaker(_message.Message):
    __slots__ = ("name", "dialect")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIALECT_FIELD_NUMBER: _ClassVar[int]
    name: str
    dialect: str
    def __init__(self, name: _Optional[str] = ..., dialect: _Optional[str] = ...) -> None: ...
