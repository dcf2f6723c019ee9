from qwentts.codec.v1 import codec_pb2 as _codec_pb2
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
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_END_OF_SPEECH: FinishReason
FINISH_REASON_MAX_LENGTH: FinishReason
FINISH_REASON_FRAME_BUDGET: FinishReason

class Sampling(_message.Message):
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

class ClonedVoice(_message.Message):
    __slots__ = ("speaker_embedding", "reference_frames", "reference_text")
    SPEAKER_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FRAMES_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_TEXT_FIELD_NUMBER: _ClassVar[int]
    speaker_embedding: _containers.RepeatedScalarFieldContainer[float]
    reference_frames: _codec_pb2.Frames
    reference_text: str
    def __init__(self, speaker_embedding: _Optional[_Iterable[float]] = ..., reference_frames: _Optional[_Union[_codec_pb2.Frames, _Mapping]] = ..., reference_text: _Optional[str] = ...) -> None: ...

class GenerateConfig(_message.Message):
    __slots__ = ("language", "speaker", "instruct", "cloned_voice", "sampling", "predictor_sampling", "seed", "max_frames", "non_streaming")
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    INSTRUCT_FIELD_NUMBER: _ClassVar[int]
    CLONED_VOICE_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    PREDICTOR_SAMPLING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAMES_FIELD_NUMBER: _ClassVar[int]
    NON_STREAMING_FIELD_NUMBER: _ClassVar[int]
    language: str
    speaker: str
    instruct: str
    cloned_voice: ClonedVoice
    sampling: Sampling
    predictor_sampling: Sampling
    seed: int
    max_frames: int
    non_streaming: bool
    def __init__(self, language: _Optional[str] = ..., speaker: _Optional[str] = ..., instruct: _Optional[str] = ..., cloned_voice: _Optional[_Union[ClonedVoice, _Mapping]] = ..., sampling: _Optional[_Union[Sampling, _Mapping]] = ..., predictor_sampling: _Optional[_Union[Sampling, _Mapping]] = ..., seed: _Optional[int] = ..., max_frames: _Optional[int] = ..., non_streaming: _Optional[bool] = ...) -> None: ...

class TextChunk(_message.Message):
    __slots__ = ("text", "flush")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FLUSH_FIELD_NUMBER: _ClassVar[int]
    text: str
    flush: bool
    def __init__(self, text: _Optional[str] = ..., flush: _Optional[bool] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("config", "text")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    config: GenerateConfig
    text: TextChunk
    def __init__(self, config: _Optional[_Union[GenerateConfig, _Mapping]] = ..., text: _Optional[_Union[TextChunk, _Mapping]] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("frames", "characters_consumed", "finish_reason")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    CHARACTERS_CONSUMED_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    frames: _codec_pb2.Frames
    characters_consumed: int
    finish_reason: FinishReason
    def __init__(self, frames: _Optional[_Union[_codec_pb2.Frames, _Mapping]] = ..., characters_consumed: _Optional[int] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ...) -> None: ...

class EmbedSpeakerRequest(_message.Message):
    __slots__ = ("audio",)
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    audio: _codec_pb2.Samples
    def __init__(self, audio: _Optional[_Union[_codec_pb2.Samples, _Mapping]] = ...) -> None: ...

class EmbedSpeakerResponse(_message.Message):
    __slots__ = ("speaker_embedding",)
    SPEAKER_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    speaker_embedding: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, speaker_embedding: _Optional[_Iterable[float]] = ...) -> None: ...

class DescribeModelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Speaker(_message.Message):
    __slots__ = ("name", "dialect")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIALECT_FIELD_NUMBER: _ClassVar[int]
    name: str
    dialect: str
    def __init__(self, name: _Optional[str] = ..., dialect: _Optional[str] = ...) -> None: ...

class DescribeModelResponse(_message.Message):
    __slots__ = ("name", "model_type", "size", "languages", "speakers", "supports_instruct", "speaker_embedding_size")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    SPEAKERS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_INSTRUCT_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_EMBEDDING_SIZE_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_type: str
    size: str
    languages: _containers.RepeatedScalarFieldContainer[str]
    speakers: _containers.RepeatedCompositeFieldContainer[Speaker]
    supports_instruct: bool
    speaker_embedding_size: int
    def __init__(self, name: _Optional[str] = ..., model_type: _Optional[str] = ..., size: _Optional[str] = ..., languages: _Optional[_Iterable[str]] = ..., speakers: _Optional[_Iterable[_Union[Speaker, _Mapping]]] = ..., supports_instruct: _Optional[bool] = ..., speaker_embedding_size: _Optional[int] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("active_streams", "queued_streams", "max_active_streams", "frames_total")
    ACTIVE_STREAMS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_STREAMS_FIELD_NUMBER: _ClassVar[int]
    MAX_ACTIVE_STREAMS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    active_streams: int
    queued_streams: int
    max_active_streams: int
    frames_total: int
    def __init__(self, active_streams: _Optional[int] = ..., queued_streams: _Optional[int] = ..., max_active_streams: _Optional[int] = ..., frames_total: _Optional[int] = ...) -> None: ...
