"""`SpeechTokenizer`: the 12 Hz codec behind one object (encode, decode, exact streaming decode).

    tok = SpeechTokenizer.from_pretrained("ckpt/Qwen3-TTS-12Hz-0.6B-Base", dtype="bfloat16")
    codes = tok.encode([wav_24k_mono])            # [LongTensor (F, 16)]
    wavs = tok.decode(codes)                      # [np.ndarray float32 (F * 1920,)]
    stream = tok.stream()
    for frames in producer:                       # LongTensor (n, 16), any n
        play(stream.push(frames))                 # n * 1920 final samples

Audio handed to `encode` must already be 24 kHz mono float (shared/audio.py decodes and resamples).
See docs/codec.md for the design and the exactness guarantees.
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import CheckpointError, load_module_weights, parse_dtype, read_json, read_safetensors

from .configuration_tokenizer_12hz import MODEL_TYPE, Qwen3TTSTokenizerConfig
from .modeling_tokenizer_12hz import DecoderState, Qwen3TTSTokenizerDecoder, Qwen3TTSTokenizerEncoder

CODEC_SUBDIR = "speech_tokenizer"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

# Frames per decoder call inside `decode` and `push`: bounds activation memory (the last stages
# run at 24 kHz with 96+ channels) without changing the result, since chunks carry exact state.
DEFAULT_MAX_CHUNK_FRAMES = 300
# The longest push that runs as a CUDA graph: the gateway's chunks (1, 2, 4, 8 frames by default)
# and its shorter last ones. Longer pushes (whole-utterance decodes) run eagerly.
MAX_GRAPH_FRAMES = 8

log = logging.getLogger(__name__)


def resolve_codec_dir(path: str | Path) -> Path:
    """The codec directory: `path` itself (standalone codec) or `path/speech_tokenizer` (TTS checkpoint)."""
    path = Path(path)
    sub = path / CODEC_SUBDIR
    if sub.is_dir():
        return sub
    root_config = path / CONFIG_NAME
    if not root_config.is_file():
        if not path.is_dir():
            raise CheckpointError(f"{path}: checkpoint directory not found")
        raise CheckpointError(f"{root_config}: file not found")
    model_type = read_json(root_config).get("model_type")
    if model_type != MODEL_TYPE:
        # A TTS checkpoint (or something else) without its codec.
        raise CheckpointError(f"{sub / CONFIG_NAME}: file not found (model_type of {root_config} is {model_type!r})")
    return path


class StreamStates:
    """The decoder states of a tokenizer's open streams, resident in one `DecoderState` of `capacity`
    rows: a stream holds a row from creation until it is closed or garbage-collected.

    A batched push gathers its streams' rows (`index_select`), advances them in one decoder call
    and writes them back (`index_copy_`): no per-stream tensors are stacked, split or cloned, and
    for a given (streams, frames) the step has static shapes. The buffers grow (doubling) when more
    streams are open than ever before; a freed row is reused, and zeroed by its new stream's first
    push, on the thread that pushes, so a push still running on the old stream cannot undo it.
    Row 0 belongs to no stream: it pads the rows of a captured push (below).
    Pushes are serialised by a lock (the buffers are shared). Creating and closing streams takes
    no lock: `list.pop`/`append` and `next(count)` are atomic under the GIL, and a lock there could
    deadlock when a stream is garbage-collected (its finalizer releases the row) while the same
    thread holds it.

    With `use_graphs` (CUDA only) a push of at most `MAX_GRAPH_FRAMES` frames runs as a CUDA graph,
    captured on first use for its bucket (streams rounded up to a power of two, frames): the bucket's
    extra rows decode row 0 from a fresh state, and change no stream. A capture that fails turns
    graphs off (logged); pushes then run eagerly, with the same results.
    """

    def __init__(self, decoder: Qwen3TTSTokenizerDecoder, use_graphs: bool = False):
        self._decoder = decoder
        self._lock = threading.Lock()
        self._free: list[int] = []
        self._new_rows = itertools.count(1)
        self._state: DecoderState | None = None
        self.row_nbytes = decoder.new_state(1).nbytes()
        param = next(decoder.parameters())
        self.dtype, self.device = param.dtype, param.device
        self.use_graphs = use_graphs and self.device.type == "cuda"
        self._graphs: dict[tuple[int, int], _CapturedPush] = {}
        # The RoPE table they read. Holding it keeps it alive for them when another thread's
        # `decode` regrows the decoder's table; the next push then sees the new one and recaptures.
        self._graphs_table = None
        # One memory pool for every captured push: they never run at once, and each output is
        # copied to the host before the next replay.
        self._graph_pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        self._padding = torch.zeros(1, dtype=torch.long, device=self.device)

    def acquire(self) -> int:
        try:
            return self._free.pop()
        except IndexError:
            return next(self._new_rows)

    def release(self, row: int) -> None:
        self._free.append(row)

    def advance(self, streams: list[CodecStream], codes: torch.Tensor, run) -> np.ndarray:
        """Decode `codes` (streams, frames, K) on the gathered state of `streams` (one row each) and
        write it back; `run(codes, state)` is the eager decode. Returns the float32 samples on the
        host (copied under the lock: a captured push's output is overwritten by the next replay)."""
        with self._lock:
            self._grow(1 + max(s._row for s in streams))
            fresh = [s._row for s in streams if s._frames == 0]
            if fresh:
                self._state.reset(torch.tensor(fresh, device=self.device))
            rows = [s._row for s in streams]
            count, frames = codes.shape[:2]
            max_position = max(s._frames for s in streams)
            captured = None
            if self.use_graphs and frames <= MAX_GRAPH_FRAMES:
                captured = self._captured(count, frames, max_position)
            if captured is not None:
                wav = captured.replay(rows, codes)
            else:
                index = torch.tensor(rows, device=self.device)
                state = self._state.select(index, max_position)
                wav = run(codes, state)
                self._state.assign(index, state)
            for s in streams:
                s._frames += frames
            return wav.to(torch.float32).cpu().numpy()

    def warm_up(self, streams: int, frames: int) -> int:
        """Before serving: grow the resident buffers to `streams` streams and the RoPE table to
        `frames` frames a stream, and capture the push of every bucket (1 to `streams` streams
        rounded up to a power of two; 1 to MAX_GRAPH_FRAMES frames). Otherwise the first pushes
        of each bucket capture while streams play, and so does every bucket again each time the
        buffers grow or the table regrows (either drops every capture). Returns how many captured
        pushes it leaves ready: none without graphs or after a failed capture."""
        with self._lock:
            if not self.use_graphs:
                return 0
            self._grow(1 + streams)
            for count in range(1, streams + 1):  # `_captured` rounds to its bucket, captured once
                for chunk in range(1, MAX_GRAPH_FRAMES + 1):
                    if self._captured(count, chunk, frames - chunk) is None:  # graphs are off now
                        return 0
            return len(self._graphs)

    def _grow(self, rows: int) -> None:
        """At least `rows` rows of resident state (doubling); captures read the old buffers, so
        growing drops them."""
        capacity = self._state.batch if self._state is not None else 0
        if rows > capacity:
            capacity = max(rows, 2 * capacity, 8)
            self._state = self._decoder.new_state(capacity) if self._state is None else self._state.grown(capacity)
            self._graphs.clear()

    def bucket_push(self, rows: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """A push with static shapes and no host reads, what a CUDA graph captures: gather `rows`
        (a device index; row 0 pads the bucket), decode `codes` (rows, frames, K), write back. The
        padding row is made fresh first, so padding decodes from zeros at position 0 however often
        it ran before. The RoPE table must already cover the rows' positions (`_captured` sizes it)."""
        self._state.reset(self._padding)
        state = self._state.select(rows, max_position=0)
        wav = self._decoder(codes, state)
        self._state.assign(rows, state)
        return wav

    def _captured(self, count: int, frames: int, max_position: int) -> _CapturedPush | None:
        """The captured push of the bucket of `count` streams pushing `frames`, captured now if it is
        new; None when the capture fails, which turns graphs off for good (logged)."""
        # The RoPE table that captured pushes read; when a stream outgrows it, it is regrown
        # elsewhere in memory and every capture is stale.
        table = self._decoder.pre_transformer.rope_table(max_position + frames, self.dtype, self.device)
        if table is not self._graphs_table:
            self._graphs.clear()
            self._graphs_table = table
        key = (1 << (count - 1).bit_length(), frames)  # streams rounded up to a power of two
        if key not in self._graphs:
            try:
                self._graphs[key] = _CapturedPush(self, *key)
            except RuntimeError as error:
                log.warning("capturing a codec push failed; pushes run eagerly from now on: %s", error)
                self.use_graphs = False
                return None
        return self._graphs[key]


class _CapturedPush:
    """`StreamStates.bucket_push` captured as a CUDA graph for one (rows, frames) bucket: static
    row-index and code buffers, replayed with the next push's copied in (padding: row 0, code 0)."""

    def __init__(self, states: StreamStates, rows: int, frames: int):
        quantizers = states._decoder.config.num_quantizers
        self.rows = torch.zeros(rows, dtype=torch.long, device=states.device)
        self.codes = torch.zeros((rows, frames, quantizers), dtype=torch.long, device=states.device)
        self.output = self._capture(states)
        log.info("captured the codec push for %d streams, %d frames", rows, frames)

    def _capture(self, states: StreamStates) -> torch.Tensor:
        # Warm-up (allocator, cuBLAS/cuDNN handles) and capture on padding rows only: row 0 alone
        # changes, so no stream's state needs restoring.
        current = torch.cuda.current_stream(states.device)
        stream = torch.cuda.Stream(states.device)
        stream.wait_stream(current)
        with torch.cuda.stream(stream):
            states.bucket_push(self.rows, self.codes)
        current.wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA work of another thread (the tokenizer may be used from several: a
        # `decode` meanwhile) neither breaks the capture nor is broken by it, as torch's default
        # ("global") would have it.
        with torch.cuda.graph(self.graph, pool=states._graph_pool, capture_error_mode="thread_local"):
            return states.bucket_push(self.rows, self.codes)

    def replay(self, rows: list[int], codes: torch.Tensor) -> torch.Tensor:
        count = len(rows)
        self.rows.copy_(torch.tensor(rows + [0] * (len(self.rows) - count)))
        self.codes[:count].copy_(codes)
        self.codes[count:].zero_()
        return self._run()[:count]

    def _run(self) -> torch.Tensor:
        self.graph.replay()
        return self.output


class CodecStream:
    """One streaming decode: push frames, get their final samples. `close()` (or dropping the
    object) ends it and frees its state row for another stream.

    The state lives in the tokenizer's `StreamStates`; the model is shared.
    """

    def __init__(self, tokenizer: SpeechTokenizer):
        self._tokenizer = tokenizer
        self._frames = 0  # frames decoded; 0 also tells `StreamStates` that the row is not reset yet
        self._row = tokenizer._states.acquire()
        self._release = weakref.finalize(self, tokenizer._states.release, self._row)

    @property
    def frames_decoded(self) -> int:
        return self._frames

    @property
    def state_nbytes(self) -> int:
        return self._tokenizer._states.row_nbytes

    @property
    def closed(self) -> bool:
        return not self._release.alive

    def close(self) -> None:
        """Free the state row; pushing afterwards is an error. Idempotent."""
        self._release()

    def push(self, frames) -> np.ndarray:
        """Decode the next frames, a (n, num_quantizers) integer array; returns n * 1920 float32 samples.

        The samples equal those of a full decode of the whole stream at the same positions.
        """
        return self._tokenizer.push_many([self], [frames])[0]


class SpeechTokenizer:
    """Qwen3-TTS 12 Hz speech tokenizer: 24 kHz mono audio <-> (frames, 16) codes at 12.5 Hz."""

    def __init__(
        self,
        config: Qwen3TTSTokenizerConfig,
        decoder: Qwen3TTSTokenizerDecoder,
        encoder: Qwen3TTSTokenizerEncoder | None,
        dtype: torch.dtype,
        device: torch.device,
        max_chunk_frames: int = DEFAULT_MAX_CHUNK_FRAMES,
        use_graphs: bool = False,
    ):
        self.config = config
        self.decoder = decoder
        self.encoder = encoder
        self._dtype = dtype
        self._device = device
        self.max_chunk_frames = max_chunk_frames
        self._states = StreamStates(decoder, use_graphs=use_graphs)

    # ------------------------------------------------------------------------------------------
    # Loading
    # ------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: str | torch.dtype = "float32",
        device: str | torch.device = "cpu",
        load_encoder: bool = True,
        use_graphs: bool = False,
    ) -> SpeechTokenizer:
        """Load a standalone codec dir or the `speech_tokenizer/` of a TTS checkpoint dir.

        The codec runs in `dtype` (the weights are stored in float32). `load_encoder=False` skips
        the Mimi encoder for decode-only services. `use_graphs` (CUDA only) replays streaming
        pushes of up to `MAX_GRAPH_FRAMES` frames as CUDA graphs (`StreamStates`).
        """
        torch_dtype = parse_dtype(dtype)
        device = torch.device(device)
        codec_dir = resolve_codec_dir(path)
        config = Qwen3TTSTokenizerConfig.from_json_file(codec_dir / CONFIG_NAME)
        weights_path = codec_dir / WEIGHTS_NAME
        tensors = read_safetensors(weights_path)

        decoder = Qwen3TTSTokenizerDecoder(config.decoder)
        load_module_weights(decoder, tensors, "decoder.", weights_path)
        decoder.to(device=device, dtype=torch_dtype).eval()

        encoder = None
        if load_encoder:
            encoder = Qwen3TTSTokenizerEncoder(config)
            encoder.load_checkpoint_tensors(tensors, weights_path)
            encoder.to(device=device)
            encoder.cast_(torch_dtype)
            encoder.eval()
        del tensors
        return cls(config, decoder, encoder, torch_dtype, device, use_graphs=use_graphs)

    # ------------------------------------------------------------------------------------------
    # Properties
    # ------------------------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return self.config.output_sample_rate

    @property
    def input_sample_rate(self) -> int:
        return self.config.input_sample_rate

    @property
    def samples_per_frame(self) -> int:
        return self.config.decode_upsample_rate

    @property
    def num_quantizers(self) -> int:
        return self.config.num_quantizers

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    # ------------------------------------------------------------------------------------------
    # Encode
    # ------------------------------------------------------------------------------------------

    def encode(self, audios: list[np.ndarray], sample_rate: int = 24000) -> list[torch.Tensor]:
        """Encode 24 kHz mono float waveforms; returns one (ceil(n_i / 1920), 16) int64 tensor each.

        Like the reference, the batch is right-padded with zeros and encoded together without a
        padding mask (Mimi has none): everything is causal, but the last frame of a shorter item
        can differ from encoding it alone. The audio is cast to the model dtype first.
        """
        if self.encoder is None:
            raise RuntimeError("this SpeechTokenizer was loaded with load_encoder=False")
        if sample_rate != self.input_sample_rate:
            raise ValueError(
                f"audio must be at {self.input_sample_rate} Hz (got sample_rate={sample_rate}); "
                "resample it first (shared.audio)"
            )
        if isinstance(audios, (np.ndarray, torch.Tensor)):
            raise ValueError("encode takes a list of 1-D waveforms; wrap a single waveform in a list")
        waves = [self._check_audio(a, i) for i, a in enumerate(audios)]
        if not waves:
            return []
        lengths = [w.shape[0] for w in waves]
        batch = np.zeros((len(waves), max(lengths)), dtype=np.float32)
        for i, w in enumerate(waves):
            batch[i, : w.shape[0]] = w
        audio = torch.from_numpy(batch).to(device=self._device, dtype=self._dtype)
        with torch.inference_mode():
            codes = self.encoder(audio)  # (B, K, F)
        spf = self.config.encode_downsample_rate
        out = []
        for i, n in enumerate(lengths):
            frames = -(-n // spf)
            out.append(codes[i, :, :frames].transpose(0, 1).to(device="cpu", dtype=torch.int64).contiguous())
        return out

    def _check_audio(self, audio, index: int) -> np.ndarray:
        if isinstance(audio, torch.Tensor):
            audio = audio.detach().to("cpu").numpy()
        if not isinstance(audio, np.ndarray):
            raise ValueError(f"audio {index}: expected a numpy array, got {type(audio).__name__}")
        if audio.ndim != 1:
            raise ValueError(
                f"audio {index}: expected a 1-D mono waveform, got shape {tuple(audio.shape)} "
                "(downmix with shared.audio first)"
            )
        if audio.shape[0] == 0:
            raise ValueError(f"audio {index}: empty waveform")
        if not np.issubdtype(audio.dtype, np.floating):
            raise ValueError(f"audio {index}: expected float samples in [-1, 1], got dtype {audio.dtype}")
        audio = audio.astype(np.float32, copy=False)
        if not np.isfinite(audio).all():
            raise ValueError(f"audio {index}: contains NaN or infinite samples")
        return audio

    # ------------------------------------------------------------------------------------------
    # Decode
    # ------------------------------------------------------------------------------------------

    def decode(self, codes: list[torch.Tensor]) -> list[np.ndarray]:
        """Decode (T_i, 16) code tensors; returns float32 waveforms of T_i * 1920 samples.

        This is the exact full-sequence decode (equal to streaming the same frames), not the
        reference's 300-frame windows with 25 frames of context: the two agree on the first 300
        frames and differ after (docs/codec.md).
        """
        if isinstance(codes, (np.ndarray, torch.Tensor)):
            raise ValueError("decode takes a list of (frames, codebooks) code tensors; wrap a single one in a list")
        items = [self._check_codes(c, f"codes {i}") for i, c in enumerate(codes)]
        if not items:
            return []
        lengths = [c.shape[0] for c in items]
        batch = torch.zeros((len(items), max(lengths), self.num_quantizers), dtype=torch.int64)
        for i, c in enumerate(items):
            batch[i, : c.shape[0]] = c  # right padding with code 0: causal, trimmed below
        wav = self._run_decoder(batch, self.decoder.new_state(len(items)))
        wav = wav.to(torch.float32).cpu().numpy()
        spf = self.samples_per_frame
        return [wav[i, : n * spf].copy() for i, n in enumerate(lengths)]

    def warm_up(self, streams: int, frames: int) -> int:
        """Capture the streaming pushes of up to `streams` streams of up to `frames` frames each
        before serving (StreamStates.warm_up); the number captured, none without CUDA graphs."""
        with torch.inference_mode():
            return self._states.warm_up(streams, frames)

    def stream(self) -> CodecStream:
        """A new streaming decode (exact: same samples as `decode` of the concatenated frames)."""
        return CodecStream(self)

    def push_many(self, streams: list[CodecStream], frames: list) -> list[np.ndarray]:
        """`streams[i].push(frames[i])` for all i in one batched decoder call.

        Every item must have the same number of frames; the streams may be at any positions. The
        result equals pushing each stream on its own (to float rounding), but the weights are read
        once for the whole batch, which is what makes many concurrent streams cheap.
        """
        if len(streams) != len(frames):
            raise ValueError(f"{len(streams)} streams but {len(frames)} frame chunks")
        if len({id(s) for s in streams}) != len(streams):
            raise ValueError("a stream appears more than once")
        for s in streams:
            if not isinstance(s, CodecStream) or s._tokenizer is not self:
                raise ValueError("push_many takes streams created by this tokenizer's stream()")
            if s.closed:
                raise ValueError("a stream is closed")
        items = [self._check_codes(f, f"frames {i}", allow_empty=True) for i, f in enumerate(frames)]
        if not items:
            return []
        counts = {c.shape[0] for c in items}
        if len(counts) != 1:
            raise ValueError(f"push_many needs the same number of frames for every stream, got {sorted(counts)}")
        if counts == {0}:
            return [np.zeros(0, dtype=np.float32) for _ in items]
        with torch.inference_mode():
            wav = self._states.advance(streams, torch.stack(items), self._run_decoder)
        return [w.copy() for w in wav]

    def _run_decoder(self, codes: torch.Tensor, state: DecoderState) -> torch.Tensor:
        codes = codes.to(self._device)
        step = self.max_chunk_frames or codes.shape[1]
        pieces = []
        with torch.inference_mode():
            for start in range(0, codes.shape[1], step):
                pieces.append(self.decoder(codes[:, start : start + step], state))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)

    def _check_codes(self, codes, what: str, allow_empty: bool = False) -> torch.Tensor:
        if isinstance(codes, np.ndarray):
            if not np.issubdtype(codes.dtype, np.integer):
                raise ValueError(f"{what}: expected integer codes, got dtype {codes.dtype}")
            codes = torch.from_numpy(codes)
        if not isinstance(codes, torch.Tensor):
            raise ValueError(
                f"{what}: expected a tensor of shape (frames, {self.num_quantizers}), got {type(codes).__name__}"
            )
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise ValueError(f"{what}: expected integer codes, got dtype {codes.dtype}")
        if codes.dim() != 2 or codes.shape[1] != self.num_quantizers:
            raise ValueError(
                f"{what}: expected shape (frames, {self.num_quantizers}) (one column per codebook), "
                f"got {tuple(codes.shape)}"
            )
        if codes.shape[0] == 0:
            if allow_empty:
                return codes.to(device="cpu", dtype=torch.int64)
            raise ValueError(f"{what}: no frames to decode")
        codes = codes.detach().to(device="cpu", dtype=torch.int64)
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= self.codebook_size:
            bad = low if low < 0 else high
            raise ValueError(f"{what}: code {bad} out of range [0, {self.codebook_size - 1}]")
        return codes
