import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from qwentts.v1 import audio_pb2 as _audio_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VoiceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOICE_KIND_UNSPECIFIED: _ClassVar[VoiceKind]
    VOICE_KIND_CLONED: _ClassVar[VoiceKind]
    VOICE_KIND_DESIGNED: _ClassVar[VoiceKind]
    VOICE_KIND_PRESET: _ClassVar[VoiceKind]

class CloneMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLONE_MODE_UNSPECIFIED: _ClassVar[CloneMode]
    CLONE_MODE_SPEAKER_EMBEDDING: _ClassVar[CloneMode]
    CLONE_MODE_IN_CONTEXT: _ClassVar[CloneMode]
VOICE_KIND_UNSPECIFIED: VoiceKind
VOICE_KIND_CLONED: VoiceKind
VOICE_KIND_DESIGNED: VoiceKind
VOICE_KIND_PRESET: VoiceKind
CLONE_MODE_UNSPECIFIED: CloneMode
CLONE_MODE_SPEAKER_EMBEDDING: CloneMode
CLONE_MODE_IN_CONTEXT: CloneMode

class Voice(_message.Message):
    __slots__ = ("voice_id", "name", "kind", "language", "description", "tags", "consent_statement", "clone_mode", "transcript", "reference_seconds", "create_time", "update_time", "etag", "read_only")
    VOICE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CONSENT_STATEMENT_FIELD_NUMBER: _ClassVar[int]
    CLONE_MODE_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    voice_id: str
    name: str
    kind: VoiceKind
    language: str
    description: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    consent_statement: str
    clone_mode: CloneMode
    transcript: str
    reference_seconds: float
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    read_only: bool
    def __init__(self, voice_id: _Optional[str] = ..., name: _Optional[str] = ..., kind: _Optional[_Union[VoiceKind, str]] = ..., language: _Optional[str] = ..., description: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., consent_statement: _Optional[str] = ..., clone_mode: _Optional[_Union[CloneMode, str]] = ..., transcript: _Optional[str] = ..., reference_seconds: _Optional[float] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ..., read_only: _Optional[bool] = ...) -> None: ...

class CreateVoiceRequest(_message.Message):
    __slots__ = ("name", "language", "description", "tags", "consent_statement", "reference_audio", "preview_id", "transcript", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CONSENT_STATEMENT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_AUDIO_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    language: str
    description: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    consent_statement: str
    reference_audio: _audio_pb2.AudioInput
    preview_id: str
    transcript: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., language: _Optional[str] = ..., description: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., consent_statement: _Optional[str] = ..., reference_audio: _Optional[_Union[_audio_pb2.AudioInput, _Mapping]] = ..., preview_id: _Optional[str] = ..., transcript: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateVoiceResponse(_message.Message):
    __slots__ = ("voice", "warnings")
    VOICE_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    voice: Voice
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, voice: _Optional[_Union[Voice, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class DesignVoiceRequest(_message.Message):
    __slots__ = ("description", "preview_text", "language", "output_format", "seed")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_TEXT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    description: str
    preview_text: str
    language: str
    output_format: _audio_pb2.AudioFormat
    seed: int
    def __init__(self, description: _Optional[str] = ..., preview_text: _Optional[str] = ..., language: _Optional[str] = ..., output_format: _Optional[_Union[_audio_pb2.AudioFormat, _Mapping]] = ..., seed: _Optional[int] = ...) -> None: ...

class DesignVoiceResponse(_message.Message):
    __slots__ = ("preview_id", "audio", "output_format", "expire_time")
    PREVIEW_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    preview_id: str
    audio: bytes
    output_format: _audio_pb2.AudioFormat
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, preview_id: _Optional[str] = ..., audio: _Optional[bytes] = ..., output_format: _Optional[_Union[_audio_pb2.AudioFormat, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetVoiceRequest(_message.Message):
    __slots__ = ("voice_id",)
    VOICE_ID_FIELD_NUMBER: _ClassVar[int]
    voice_id: str
    def __init__(self, voice_id: _Optional[str] = ...) -> None: ...

class GetVoiceResponse(_message.Message):
    __slots__ = ("voice",)
    VOICE_FIELD_NUMBER: _ClassVar[int]
    voice: Voice
    def __init__(self, voice: _Optional[_Union[Voice, _Mapping]] = ...) -> None: ...

class ListVoicesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "kind", "language", "tag")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    kind: VoiceKind
    language: str
    tag: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., kind: _Optional[_Union[VoiceKind, str]] = ..., language: _Optional[str] = ..., tag: _Optional[str] = ...) -> None: ...

class ListVoicesResponse(_message.Message):
    __slots__ = ("voices", "next_page_token")
    VOICES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    voices: _containers.RepeatedCompositeFieldContainer[Voice]
    next_page_token: str
    def __init__(self, voices: _Optional[_Iterable[_Union[Voice, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateVoiceRequest(_message.Message):
    __slots__ = ("voice", "update_mask")
    VOICE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    voice: Voice
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, voice: _Optional[_Union[Voice, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateVoiceResponse(_message.Message):
    __slots__ = ("voice",)
    VOICE_FIELD_NUMBER: _ClassVar[int]
    voice: Voice
    def __init__(self, voice: _Optional[_Union[Voice, _Mapping]] = ...) -> None: ...

class DeleteVoiceRequest(_message.Message):
    __slots__ = ("voice_id", "etag")
    VOICE_ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    voice_id: str
    etag: str
    def __init__(self, voice_id: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class DeleteVoiceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
