"""The audio the client asked for: sample-rate conversion and encoding, chunk by chunk.

An `AudioWriter` turns the model's float32 24 kHz samples into the requested encoding as they
arrive. Concatenating everything it returns (every `write`, then `finish`) gives one valid
stream of the format, which is what the streaming RPCs send chunk by chunk and what Synthesize
sends whole:

- PCM16, PCM_F32, MULAW: headerless samples.
- WAV: a 44-byte header first. A stream's header gives its sizes as 0xFFFFFFFF (unknown, the
  convention of streaming WAV producers); `whole_file` fixes them for a clip sent in one piece.
- FLAC, MP3, OGG_OPUS, ALAW: libsndfile's encoders (through soundfile), fed incrementally into a
  file object whose bytes leave as soon as libsndfile writes them. What libsndfile rewrites at
  the end (FLAC's STREAMINFO sizes, MP3's LAME/Info frame) cannot be sent back in time, so:
  - a FLAC stream's STREAMINFO says "total samples unknown" (valid FLAC; decoders such as ffmpeg
    and flac accept it);
  - an MP3 stream starts with a silent frame where the whole file has its Info frame, so it
    decodes one frame plus the encoder delay longer (about 90 ms at 24 kHz), which decoders trim
    from the whole file with the Info frame's gapless data. It is constant bit rate, so decoders
    that estimate the length from the first frame (without an Info frame) get it right;
  - Ogg/Opus pages are flushed every 40 ms (SFC_SET_OGG_PAGE_LATENCY_MS), so each chunk is whole
    pages; its stream and whole file are the same bytes, as are A-law's (headerless).
  Synthesize, which has the whole clip, sends the finished file.
- MP3 and Opus take only some rates (`RATES`); others are refused before any model work
  (`rate_problem`) rather than silently resampled to a rate the caller did not ask for.

Resampling uses one soxr stream per request, so chunk boundaries leave no seams.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import soundfile
import soxr

from qwentts.v1 import audio_pb2
from shared.audio import MODEL_SAMPLE_RATE

MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 48000
Encoding = audio_pb2.AudioEncoding

# Encodings libsndfile writes: (format, subtype).
SNDFILE_FORMATS = {
    Encoding.AUDIO_ENCODING_FLAC: ("FLAC", "PCM_16"),
    Encoding.AUDIO_ENCODING_MP3: ("MP3", "MPEG_LAYER_III"),
    Encoding.AUDIO_ENCODING_OGG_OPUS: ("OGG", "OPUS"),
    Encoding.AUDIO_ENCODING_ALAW: ("RAW", "ALAW"),
}
# The only rates these encoders take: MPEG-1/2/2.5 Layer III, and Opus.
RATES = {
    Encoding.AUDIO_ENCODING_MP3: (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
    Encoding.AUDIO_ENCODING_OGG_OPUS: (8000, 12000, 16000, 24000, 48000),
}
# libsndfile maps this to a constant bit rate by MPEG version: 64 kbit/s at 16-24 kHz, 128 at
# 32-48 kHz, 32 at 8-12 kHz (LAME rounds to the nearest legal rate). Plenty for one voice.
MP3_COMPRESSION_LEVEL = 0.63
# sndfile.h's SFC_SET_OGG_PAGE_LATENCY_MS, which soundfile does not wrap: a page (and so a
# streamed chunk) leaves every 40 ms of audio instead of every second, so that the first 80 ms
# chunk already carries audio beside the Opus headers.
SFC_SET_OGG_PAGE_LATENCY_MS = 0x1302
OGG_PAGE_LATENCY_MS = 40.0


def rate_problem(encoding: int, rate: int) -> str | None:
    """Why `rate` (0: the model's) cannot be written in `encoding`, or None."""
    rate = rate or MODEL_SAMPLE_RATE
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        return f"{rate} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} (0 means {MODEL_SAMPLE_RATE})"
    allowed = RATES.get(encoding)
    if allowed and rate not in allowed:
        name = Encoding.Name(encoding).removeprefix("AUDIO_ENCODING_")
        return f"{name} takes only {', '.join(map(str, allowed))} Hz, not {rate}"
    return None


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")


def to_mulaw(samples: np.ndarray) -> bytes:
    """G.711 mu-law, bit-exact with the ITU reference encoder (14-bit input, bias 33)."""
    pcm = to_pcm16(samples).astype(np.int32) >> 2
    negative = pcm < 0
    magnitude = np.minimum(np.where(negative, -pcm, pcm), 8159) + 33
    segment = np.floor(np.log2(magnitude)).astype(np.int32) - 5
    code = (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)  # full scale lies past the last segment
    return (code ^ np.where(negative, 0x7F, 0xFF)).astype(np.uint8).tobytes()


def wav_header(sample_rate: int, data_bytes: int | None) -> bytes:
    """A 16-bit mono PCM RIFF/WAVE header; `data_bytes=None` writes the "unknown" sizes."""
    data_size = 0xFFFFFFFF if data_bytes is None else data_bytes
    riff_size = 0xFFFFFFFF if data_bytes is None else 36 + data_bytes
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        riff_size,
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        sample_rate,
        sample_rate * 2,
        2,
        16,
        b"data",
        data_size,
    )


class _StreamSink(io.RawIOBase):
    """A file for libsndfile that hands out bytes once they are appended; rewrites of bytes
    already handed out (the final STREAMINFO update) are kept locally and not sent."""

    def __init__(self):
        self._buffer = bytearray()
        self._position = 0
        self._sent = 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        end = self._position + len(data)
        if end > len(self._buffer):
            self._buffer.extend(bytes(end - len(self._buffer)))
        self._buffer[self._position : end] = data
        self._position = end
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._buffer)}[whence]
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def read(self, size: int = -1) -> bytes:
        end = len(self._buffer) if size < 0 else min(len(self._buffer), self._position + size)
        data = bytes(self._buffer[self._position : end])
        self._position = end
        return data

    def take(self) -> bytes:
        data = bytes(self._buffer[self._sent :])
        self._sent = len(self._buffer)
        return data

    def whole(self) -> bytes:
        return bytes(self._buffer)


class AudioWriter:
    """One request's output: `write(samples)` per decoded chunk, then `finish()`."""

    def __init__(self, encoding: int, sample_rate: int):
        self.encoding = encoding or Encoding.AUDIO_ENCODING_PCM16
        self.sample_rate = sample_rate or MODEL_SAMPLE_RATE
        self._resampler = (
            None
            if self.sample_rate == MODEL_SAMPLE_RATE
            else soxr.ResampleStream(MODEL_SAMPLE_RATE, self.sample_rate, 1, dtype="float32", quality="HQ")
        )
        self._started = False
        self.samples_written = 0
        self._encoder = None
        if self.encoding in SNDFILE_FORMATS:
            self._sink = _StreamSink()
            self._encoder = _sndfile_encoder(self._sink, self.encoding, self.sample_rate)

    def write(self, samples: np.ndarray) -> bytes:
        """Encoded bytes for the next 24 kHz samples (possibly empty while a resampler fills)."""
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples.astype(np.float32), last=False)
        return self._encode(samples)

    def finish(self) -> bytes:
        """The rest: resampler tail, encoder flush."""
        rest = np.zeros(0, np.float32)
        if self._resampler is not None:
            rest = self._resampler.resample_chunk(rest, last=True)
        tail = self._encode(rest)  # also the WAV header of a request that made no audio
        if self._encoder is not None:
            self._encoder.close()
            tail += self._sink.take()
        return tail

    def whole_file(self, data: bytes) -> bytes:
        """All the bytes of a finished request as a standalone file, sizes filled in."""
        if self.encoding == Encoding.AUDIO_ENCODING_WAV:
            return wav_header(self.sample_rate, len(data) - 44) + data[44:]
        if self._encoder is not None:
            return self._sink.whole()
        return data

    def _encode(self, samples: np.ndarray) -> bytes:
        self.samples_written += len(samples)
        encoding = self.encoding
        if self._encoder is not None:
            if len(samples):  # as 16-bit PCM: rounded and clipped like every other encoding
                self._encoder.write(to_pcm16(samples))
            return self._sink.take()
        if encoding == Encoding.AUDIO_ENCODING_PCM_F32:
            return samples.astype("<f4").tobytes()
        if encoding == Encoding.AUDIO_ENCODING_MULAW:
            return to_mulaw(samples)
        data = to_pcm16(samples).tobytes()
        if encoding == Encoding.AUDIO_ENCODING_WAV and not self._started:
            data = wav_header(self.sample_rate, None) + data
        self._started = True
        return data


def _sndfile_encoder(sink: _StreamSink, encoding: int, rate: int) -> soundfile.SoundFile:
    format, subtype = SNDFILE_FORMATS[encoding]
    options = {}
    if encoding == Encoding.AUDIO_ENCODING_MP3:
        options = {"compression_level": MP3_COMPRESSION_LEVEL, "bitrate_mode": "CONSTANT"}
    encoder = soundfile.SoundFile(sink, "w", samplerate=rate, channels=1, format=format, subtype=subtype, **options)
    if encoding == Encoding.AUDIO_ENCODING_OGG_OPUS:
        latency = soundfile._ffi.new("double *", OGG_PAGE_LATENCY_MS)
        soundfile._snd.sf_command(encoder._file, SFC_SET_OGG_PAGE_LATENCY_MS, latency, soundfile._ffi.sizeof("double"))
    return encoder
