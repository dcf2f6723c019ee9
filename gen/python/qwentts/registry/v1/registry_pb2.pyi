import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from qwentts.codec.v1 import codec_pb2 as _codec_pb2
from qwentts.v1 import voices_pb2 as _voices_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SpeakerEmbedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class VoiceAssets(_message.Message):
    __slots__ = ("reference_flac", "reference_frames", "speaker_embeddings")
    class SpeakerEmbeddingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: SpeakerEmbedding
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[SpeakerEmbedding, _Mapping]] = ...) -> None: ...
    REFERENCE_FLAC_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FRAMES_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    reference_flac: bytes
    reference_frames: _codec_pb2.Frames
    speaker_embeddings: _containers.MessageMap[str, SpeakerEmbedding]
    def __init__(self, reference_flac: _Optional[bytes] = ..., reference_frames: _Optional[_Union[_codec_pb2.Frames, _Mapping]] = ..., speaker_embeddings: _Optional[_Mapping[str, SpeakerEmbedding]] = ...) -> None: ...

class CreateVoiceRequest(_message.Message):
    __slots__ = ("tenant", "voice", "assets", "request_id", "request_digest")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    ASSETS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_DIGEST_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    voice: _voices_pb2.Voice
    assets: VoiceAssets
    request_id: str
    request_digest: bytes
    def __init__(self, tenant: _Optional[str] = ..., voice: _Optional[_Union[_voices_pb2.Voice, _Mapping]] = ..., assets: _Optional[_Union[VoiceAssets, _Mapping]] = ..., request_id: _Optional[str] = ..., request_digest: _Optional[bytes] = ...) -> None: ...

class CreateVoiceResponse(_message.Message):
    __slots__ = ("voice",)
    VOICE_FIELD_NUMBER: _ClassVar[int]
    voice: _voices_pb2.Voice
    def __init__(self, voice: _Optional[_Union[_voices_pb2.Voice, _Mapping]] = ...) -> None: ...

class GetVoiceRequest(_message.Message):
    __slots__ = ("tenant", "voice_id", "include_assets")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    VOICE_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ASSETS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    voice_id: str
    include_assets: bool
    def __init__(self, tenant: _Optional[str] = ..., voice_id: _Optional[str] = ..., include_assets: _Optional[bool] = ...) -> None: ...

class GetVoiceResponse(_message.Message):
    __slots__ = ("voice", "assets")
    VOICE_FIELD_NUMBER: _ClassVar[int]
    ASSETS_FIELD_NUMBER: _ClassVar[int]
    voice: _voices_pb2.Voice
    assets: VoiceAssets
    def __init__(self, voice: _Optional[_Union[_voices_pb2.Voice, _Mapping]] = ..., assets: _Optional[_Union[VoiceAssets, _Mapping]] = ...) -> None: ...

class ListVoicesRequest(_message.Message):
    __slots__ = ("tenant", "page_size", "page_token", "kind", "language", "tag")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    page_size: int
    page_token: str
    kind: _voices_pb2.VoiceKind
    language: str
    tag: str
    def __init__(self, tenant: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., kind: _Optional[_Union[_voices_pb2.VoiceKind, str]] = ..., language: _Optional[str] = ..., tag: _Optional[str] = ...) -> None: ...

class ListVoicesResponse(_message.Message):
    __slots__ = ("voices", "next_page_token")
    VOICES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    voices: _containers.RepeatedCompositeFieldContainer[_voices_pb2.Voice]
    next_page_token: str
    def __init__(self, voices: _Optional[_Iterable[_Union[_voices_pb2.Voice, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateVoiceRequest(_message.Message):
    __slots__ = ("tenant", "voice", "update_mask")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    voice: _voices_pb2.Voice
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, tenant: _Optional[str] = ..., voice: _Optional[_Union[_voices_pb2.Voice, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateVoiceResponse(_message.Message):
    __slots__ = ("voice",)
    VOICE_FIELD_NUMBER: _ClassVar[int]
    voice: _voices_pb2.Voice
    def __init__(self, voice: _Optional[_Union[_voices_pb2.Voice, _Mapping]] = ...) -> None: ...

class DeleteVoiceRequest(_message.Message):
    __slots__ = ("tenant", "voice_id", "etag")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    VOICE_ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    voice_id: str
    etag: str
    def __init__(self, tenant: _Optional[str] = ..., voice_id: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class DeleteVoiceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PutSpeakerEmbeddingRequest(_message.Message):
    __slots__ = ("tenant", "voice_id", "model", "embedding")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    VOICE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    voice_id: str
    model: str
    embedding: SpeakerEmbedding
    def __init__(self, tenant: _Optional[str] = ..., voice_id: _Optional[str] = ..., model: _Optional[str] = ..., embedding: _Optional[_Union[SpeakerEmbedding, _Mapping]] = ...) -> None: ...

class PutSpeakerEmbeddingResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Preview(_message.Message):
    __slots__ = ("description", "text", "language", "audio_flac", "frames")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FLAC_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    description: str
    text: str
    language: str
    audio_flac: bytes
    frames: _codec_pb2.Frames
    def __init__(self, description: _Optional[str] = ..., text: _Optional[str] = ..., language: _Optional[str] = ..., audio_flac: _Optional[bytes] = ..., frames: _Optional[_Union[_codec_pb2.Frames, _Mapping]] = ...) -> None: ...

class SavePreviewRequest(_message.Message):
    __slots__ = ("tenant", "preview", "ttl_seconds")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    preview: Preview
    ttl_seconds: int
    def __init__(self, tenant: _Optional[str] = ..., preview: _Optional[_Union[Preview, _Mapping]] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class SavePreviewResponse(_message.Message):
    __slots__ = ("preview_id", "expire_time")
    PREVIEW_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    preview_id: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, preview_id: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetPreviewRequest(_message.Message):
    __slots__ = ("tenant", "preview_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    preview_id: str
    def __init__(self, tenant: _Optional[str] = ..., preview_id: _Optional[str] = ...) -> None: ...

class GetPreviewResponse(_message.Message):
    __slots__ = ("preview",)
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    preview: Preview
    def __init__(self, preview: _Optional[_Union[Preview, _Mapping]] = ...) -> None: ...
