"""Where the CLI's results go: audio files (the encoding from the extension, WAV sizes fixed at the
end), the progress line and summary on stderr, JSON and tables on stdout."""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

from google.protobuf import json_format

from qwentts.v1 import audio_pb2, tts_pb2

ENCODINGS = {
    "pcm16": audio_pb2.AUDIO_ENCODING_PCM16,
    "wav": audio_pb2.AUDIO_ENCODING_WAV,
    "flac": audio_pb2.AUDIO_ENCODING_FLAC,
    "mulaw": audio_pb2.AUDIO_ENCODING_MULAW,
    "pcm_f32": audio_pb2.AUDIO_ENCODING_PCM_F32,
    "alaw": audio_pb2.AUDIO_ENCODING_ALAW,
    "mp3": audio_pb2.AUDIO_ENCODING_MP3,
    "opus": audio_pb2.AUDIO_ENCODING_OGG_OPUS,
}

EXTENSIONS = {
    ".wav": "wav",
    ".flac": "flac",
    ".raw": "pcm16",
    ".pcm": "pcm16",
    ".ulaw": "mulaw",
    ".alaw": "alaw",
    ".mp3": "mp3",
    ".ogg": "opus",
    ".opus": "opus",
}


def choose_encoding(out: str, encoding: str | None) -> str:
    """--encoding if given, else the one the extension of --out names."""
    if encoding:
        return encoding
    try:
        return EXTENSIONS[Path(out).suffix.lower()]
    except KeyError:
        raise ValueError(
            f"cannot tell the encoding from {out!r} (extensions: {', '.join(EXTENSIONS)}); pass --encoding"
        ) from None


def fix_wav_sizes(file) -> None:
    """Set the RIFF and data chunk sizes of the WAV file open in `file` (read-write) from its length."""
    size = file.seek(0, os.SEEK_END)
    file.seek(0)
    if file.read(4) != b"RIFF":
        return
    offset = 12
    while offset + 8 <= size:
        file.seek(offset)
        chunk_id, chunk_size = struct.unpack("<4sI", file.read(8))
        if chunk_id == b"data":
            file.seek(4)
            file.write(struct.pack("<I", min(size - 8, 0xFFFFFFFF)))
            file.seek(offset + 4)
            file.write(struct.pack("<I", min(size - offset - 8, 0xFFFFFFFF)))
            return
        offset += 8 + chunk_size + chunk_size % 2


class Output:
    """Where the audio goes: a file ("-": stdout) created at the first write, so that a call that
    fails before any audio leaves an existing file alone. Closing sets a WAV file's header sizes."""

    def __init__(self, path: str, encoding: str):
        self.path, self.encoding = path, encoding
        self.file = None

    def write(self, data: bytes) -> None:
        if self.file is None:
            self.file = sys.stdout.buffer if self.path == "-" else open(self.path, "w+b")  # noqa: SIM115 - kept for the stream
        self.file.write(data)
        self.file.flush()

    def close(self) -> None:
        if self.file is None or self.file is sys.stdout.buffer:
            return
        if self.encoding == "wav":
            fix_wav_sizes(self.file)
        self.file.close()


class Progress:
    """One status line on stderr: text read by the model and audio received."""

    def __init__(self, total_characters: int | None = None):
        self.total = total_characters
        self.consumed = self.received = 0
        self.audio_seconds = 0.0

    def on_response(self, response) -> None:
        kind = response.WhichOneof("response")
        if kind == "audio":
            self.audio_seconds += response.audio.duration_seconds
        elif kind == "progress":
            self.consumed = response.progress.characters_consumed
            self.received = response.progress.characters_received
        else:
            return
        if self.total:
            done = round(30 * min(self.consumed / self.total, 1))
            text = f"[{'#' * done}{'.' * (30 - done)}] text {self.consumed}/{self.total}"
        else:
            text = f"text {self.consumed}/{self.received}"
        print(f"\r{text} characters, audio {self.audio_seconds:.2f} s", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        print(file=sys.stderr)


def receive(responses, out, progress: Progress) -> tts_pb2.SynthesisSummary | None:
    """Write the audio of a response stream to `out` as it arrives; the summary."""
    summary = None
    try:
        for response in responses:
            progress.on_response(response)
            kind = response.WhichOneof("response")
            if kind == "audio":
                out.write(response.audio.audio)
            elif kind == "summary":
                summary = response.summary
    finally:
        progress.close()
    return summary


def report(out: str, summary: tts_pb2.SynthesisSummary | None) -> None:
    if summary is None:
        print(f"wrote {out}; the stream ended without a summary", file=sys.stderr)
        return
    fmt = summary.output_format
    print(
        f"wrote {out}: {summary.usage.audio_seconds:.2f} s of audio at {fmt.sample_rate_hz} Hz "
        f"({audio_pb2.AudioEncoding.Name(fmt.encoding).removeprefix('AUDIO_ENCODING_')}), model {summary.model}, "
        f"{tts_pb2.FinishReason.Name(summary.finish_reason).removeprefix('FINISH_REASON_')}, "
        f"{summary.usage.input_characters} characters",
        file=sys.stderr,
    )


def print_json(message) -> None:
    print(json.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True), indent=2))


def print_table(rows: list[tuple[str, ...]]) -> None:
    """Columns padded to their widest cell; the last column is not padded."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]))
