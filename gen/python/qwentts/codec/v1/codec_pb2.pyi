from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Frames(_message.Message):
    __slots__ = ("num_frames", "num_quantizers", "codes")
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    NUM_QUANTIZERS_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    num_frames: int
    num_quantizers: int
    codes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, num_frames: _Optional[int] = ..., num_quantizers: _Optional[int] = ..., codes: _Optional[_Iterable[int]] = ...) -> None: ...

class Samples(_message.Message):
    __slots__ = ("sample_rate_hz", "samples_f32le")
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_F32LE_FIELD_NUMBER: _ClassVar[int]
    sample_rate_hz: int
    samples_f32le: bytes
    def __init__(self, sample_rate_hz: _Optional[int] = ..., samples_f32le: _Optional[bytes] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("content", "pcm_sample_rate_hz", "pcm_channels")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    PCM_SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    PCM_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    content: bytes
    pcm_sample_rate_hz: int
    pcm_channels: int
    def __init__(self, content: _Optional[bytes] = ..., pcm_sample_rate_hz: _Optional[int] = ..., pcm_channels: _Optional[int] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("frames", "audio")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    frames: Frames
    audio: Samples
    def __init__(self, frames: _Optional[_Union[Frames, _Mapping]] = ..., audio: _Optional[_Union[Samples, _Mapping]] = ...) -> None: ...

class DecodeRequest(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: Frames
    def __init__(self, frames: _Optional[_Union[Frames, _Mapping]] = ...) -> None: ...

class DecodeResponse(_message.Message):
    __slots__ = ("audio",)
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    audio: Samples
    def __init__(self, audio: _Optional[_Union[Samples, _Mapping]] = ...) -> None: ...

class StreamDecodeRequest(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: Frames
    def __init__(self, frames: _Optional[_Union[Frames, _Mapping]] = ...) -> None: ...

class StreamDecodeResponse(_message.Message):
    __slots__ = ("audio",)
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    audio: Samples
    def __init__(self, audio: _Optional[_Union[Samples, _Mapping]] = ...) -> None: ...

class DescribeCodecRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeCodecResponse(_message.Message):
    __slots__ = ("sample_rate_hz", "samples_per_frame", "num_quantizers", "codebook_size")
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_FRAME_FIELD_NUMBER: _ClassVar[int]
    NUM_QUANTIZERS_FIELD_NUMBER: _ClassVar[int]
    CODEBOOK_SIZE_FIELD_NUMBER: _ClassVar[int]
    sample_rate_hz: int
    samples_per_frame: int
    num_quantizers: int
    codebook_size: int
    def __init__(self, sample_rate_hz: _Optional[int] = ..., samples_per_frame: _Optional[int] = ..., num_quantizers: _Optional[int] = ..., codebook_size: _Optional[int] = ...) -> None: ...
