"""The model runner: the talker and code predictor of one model over a fixed set of slots.

Everything an utterance keeps between steps lives on the device, in per-slot tensors allocated once:
the talker's keys and values (`kv`, up to `max_positions` per slot), the number of positions
cached (set by each frame: a prompt's runs fill the cache, the frame that ends it sets the count),
the embedding of the last frame, the codes seen (for the repetition penalty), the count of codes
generated, the sampling parameters, the seed and the draw counter. Nothing is allocated or
freed while utterances come and go; an utterance is admitted into a free slot and leaves it.

One step runs, for a batch of rows:

1. the talker over a flat batch of tokens: one token per decoding row (its text vector, computed on
   the device from its text id, plus the embedding of its last frame), then runs of prompt tokens of
   prefilling rows; one matrix product per weight for all of them;
2. attention against the slots: decoding rows are slots 0..n-1 (the engine arranges that), so one
   batched, length-masked call per layer reads a view of the cache, never a copy; prompt runs attend
   on their own;
3. codebook 0 for every row that ends its known input, then the predictor's 15 codebooks for all of
   them, one static-shape region with sampling on the device (sampler.py);
4. the per-slot state is updated in place, and the frames (with a flag per row saying the scores
   were finite) reach the host in one copy: the step's only sync.

A step of decoding rows alone has static shapes for a given (rows, positions) bucket, with no host
reads: on CUDA it is captured once per bucket as a CUDA graph and replayed (`use_graphs`), padding
rows writing to a scratch position and changing no state. A step with prompt runs is made static
the same way (`padded_mixed_step`): the runs padded to a count and each to one length bucket,
attending to a bucket of their slots' positions under a mask, padding tokens writing to the
scratch position; so a new request's first frame is one replay too, not some thousand launches.
On CPU steps run eagerly, each prompt run with its exact length.
`torch.compile(fullgraph=True)` compiles the decode step without a graph break (`compiled`;
bench/bench_engine.py checks it). On CPU the compiled step measured 4x slower than eager, after
minutes of compiling per bucket, so the service does not use it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.layers import rope_table
from models.qwen3_tts.modeling_qwen3_tts import Qwen3TTSTalker

from .sampler import (
    FLOAT_PARAMS,
    INT_PARAMS,
    SamplingParams,
    Warping,
    param_rows,
    predictor_codes,
    predictor_noise,
    suppressed_mask,
    talker_codes,
)

log = logging.getLogger(__name__)

# Text track of a decoding row: a text token, tts_eos (the text has just ended) or tts_pad.
TEXT_TOKEN, TEXT_EOS, TEXT_PAD = 0, 1, 2
MIN_VIEW = 64  # the smallest attention view (positions), so that short utterances share graphs
MIN_RUN = 16  # the shortest padded prompt run of a captured mixed step
# Captured steps kept per runner: each holds its kernels' parameters on the device, and the buckets
# of steps with prompt runs (rows x positions x runs x run length x prompt positions) have no small
# bound, so a long-lived process under a varied load would otherwise keep capturing.
MAX_GRAPHS = 256


def _bucket(n: int, low: int = 1) -> int:
    return max(low, 1 << (n - 1).bit_length())


def _buckets(low: int, high: int) -> list[int]:
    """The buckets of sizes 1..high (each at most `high`)."""
    return sorted({min(_bucket(n, low), high) for n in range(1, high + 1)})


@dataclass
class Prefill:
    """A run of prompt tokens of one slot: input vectors (count, hidden), from position `start`;
    `last` when the run ends the prompt, so that its last token's output is codebook 0."""

    slot: int
    start: int
    vectors: torch.Tensor
    last: bool


@dataclass
class DecodeRow:
    """The one token of a decoding row (slot = its row index): its text track."""

    text_kind: int
    text_id: int = 0


class _SlotAttention:
    """One step's attention over the slots: `decode_rows` single-token rows in slots 0..n-1 (a
    view of the cache, masked by position), then the prompt runs: each run alone (causal), or all
    of them as one padded batch (`padded`, a captured step's static shapes). Every token's key and
    value are first written at (its slot, its position) in one indexed store."""

    def __init__(
        self,
        kv,
        slots,
        positions,
        decode_rows: int,
        view: int,
        prefills: list[Prefill],
        padded: _PaddedRuns | None = None,
    ):
        self.kv, self.slots, self.positions = kv, slots, positions
        self.decode_rows, self.view, self.prefills, self.padded = decode_rows, view, prefills, padded
        if decode_rows:
            visible = torch.arange(view, device=kv.device)[None, :] <= positions[:decode_rows, None]
            self.mask = visible[:, None, None, :]

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        cache = self.kv[layer]
        cache[0, self.slots, :, self.positions] = k
        cache[1, self.slots, :, self.positions] = v
        outputs = []
        n = self.decode_rows
        if n:
            view = slice(0, self.view)
            out = _one_query(q[:n, :, None], cache[0, :n, :, view], cache[1, :n, :, view], self.mask)
            outputs.append(out[:, :, 0])
        if self.padded is not None:
            outputs.append(self.padded.attend(cache, q[n:]))
        offset = n
        for run in self.prefills:
            count = len(run.vectors)
            end = run.start + count
            query = q[offset : offset + count].transpose(0, 1)[None]
            out = _causal(query, cache[0, run.slot, :, :end][None], cache[1, run.slot, :, :end][None], run.start)
            outputs.append(out[0].transpose(0, 1))
            offset += count
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


@dataclass
class _PaddedRuns:
    """Prompt runs padded to one shape: `slots` (runs,) hold (runs, length) tokens, and each token
    sees the first `keys` positions of its slot where `visible` (runs, 1, length, keys) says so
    (up to its own position: padding tokens, past a run's end, are never seen by real ones)."""

    slots: torch.Tensor
    visible: torch.Tensor

    def attend(self, cache: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        runs, _, length, keys = self.visible.shape
        query = q.view(runs, length, *q.shape[1:]).transpose(1, 2)
        k, v = cache[0, self.slots, :, :keys], cache[1, self.slots, :, :keys]
        out = F.scaled_dot_product_attention(query, k, v, attn_mask=self.visible, enable_gqa=True)
        return out.transpose(1, 2).flatten(0, 1)


class _FrameAttention:
    """The code predictor's attention: every row at the same positions of a fresh 16-position
    sequence per frame, in a scratch cache of the runner."""

    def __init__(self, kv, rows: int, start: int, count: int):
        self.kv, self.rows, self.start, self.count = kv, rows, start, count

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        rows, count, end = self.rows, self.count, self.start + self.count
        cache = self.kv[layer]
        cache[0, :rows, :, self.start : end] = k.view(rows, count, *k.shape[1:]).transpose(1, 2)
        cache[1, :rows, :, self.start : end] = v.view(rows, count, *v.shape[1:]).transpose(1, 2)
        query = q.view(rows, count, *q.shape[1:]).transpose(1, 2)
        out = _causal(query, cache[0, :rows, :, :end], cache[1, :rows, :, :end], self.start)
        return out.transpose(1, 2).reshape(rows * count, *q.shape[1:])


def _causal(q, k, v, offset: int):
    """Queries at positions offset.. attend to every key before them and causally among themselves."""
    if q.shape[-2] == 1:
        return _one_query(q, k, v)
    if offset == 0:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    allowed = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril(diagonal=offset)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, enable_gqa=True)


def _one_query(q, k, v, mask=None):
    """One query per row, q (rows, heads, 1, head_dim), against k and v (rows, kv_heads, keys,
    head_dim); `mask` (rows, 1, 1, keys) or None. In bfloat16 the query heads that share a key
    head go in as a query sequence of the group's length instead of through enable_gqa: the same
    bits, and 3-4 times faster on CPU (torch's bfloat16 GQA kernel). float32 keeps enable_gqa,
    which the fold would change in the last bits for no measurable gain."""
    if q.dtype != torch.bfloat16:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    rows, heads, _, head_dim = q.shape
    grouped = q.view(rows, k.shape[1], heads // k.shape[1], head_dim)
    return F.scaled_dot_product_attention(grouped, k, v, attn_mask=mask).view(q.shape)


class ModelRunner:
    """The talker of one checkpoint with per-slot state for `slots` utterances (module docstring)."""

    def __init__(
        self,
        talker: Qwen3TTSTalker,
        *,
        slots: int,
        max_positions: int,
        eos_id: int,
        text_ids: dict[str, int],
        use_graphs: bool = False,
        compiled: bool = False,
    ):
        self.talker = talker
        config = talker.config
        predictor = config.code_predictor
        param = next(talker.parameters())
        self.dtype, self.device = param.dtype, param.device
        self.slots, self.max_positions, self.eos_id = slots, max_positions, eos_id
        self.groups = config.num_code_groups
        device = self.device
        # Keys and values: (layers, k|v, slot, kv_heads, position, head_dim). Position
        # max_positions is scratch, written by padding rows and never attended to.
        shape = (config.num_hidden_layers, 2, slots, config.num_key_value_heads, max_positions + 1, config.head_dim)
        # A decoding row's attention reads its slot's whole view; positions it has not written are
        # masked, but must not hold NaN (0 x NaN is NaN). On CUDA the cache starts zeroed. On CPU
        # pages are committed as they are touched, so a slot is zeroed on demand up to what a step
        # reads (`_clean` positions per slot): memory follows the utterances actually served.
        if device.type == "cuda":
            self.kv = torch.zeros(shape, dtype=self.dtype, device=device)
            self._clean = [max_positions + 1] * slots
        else:
            self.kv = torch.empty(shape, dtype=self.dtype, device=device)
            self._clean = [0] * slots
        self.predictor_kv = torch.zeros(
            (predictor.num_hidden_layers, 2, slots, predictor.num_key_value_heads, self.groups, predictor.head_dim),
            dtype=self.dtype,
            device=device,
        )
        self.lengths = torch.zeros(slots, dtype=torch.long, device=device)
        self.frame_vectors = torch.zeros(slots, config.hidden_size, dtype=self.dtype, device=device)
        self.seen = torch.zeros(slots, config.vocab_size, dtype=torch.bool, device=device)
        self.generated = torch.zeros(slots, dtype=torch.long, device=device)
        self.floats = torch.ones(slots, len(FLOAT_PARAMS), dtype=torch.float32, device=device)
        self.ints = torch.zeros(slots, len(INT_PARAMS), dtype=torch.long, device=device)
        self.seeds = torch.zeros(slots, dtype=torch.long, device=device)
        self.draws = torch.zeros(slots, dtype=torch.long, device=device)
        self._slot_state = (
            self.lengths,
            self.frame_vectors,
            self.seen,
            self.generated,
            self.floats,
            self.ints,
            self.seeds,
            self.draws,
        )
        self.cos, self.sin = rope_table(config.head_dim, config.rope_theta, max_positions + 1, self.dtype, device)
        cos, sin = rope_table(predictor.head_dim, predictor.rope_theta, self.groups, self.dtype, device)
        self.frame_cos, self.frame_sin = cos, sin
        self.suppressed = suppressed_mask(config.vocab_size, eos_id, device)
        with torch.inference_mode():
            ids = torch.tensor([text_ids["tts_eos"], text_ids["tts_pad"]], device=device)
            self.tts_eos, self.tts_pad = talker.embed_text(ids)
        self.use_graphs = use_graphs and device.type == "cuda"
        # Compiled for static shapes: one compilation per (rows, view, sampling) bucket.
        self._compiled = torch.compile(self.decode_step, fullgraph=True, dynamic=False) if compiled else None
        self._graphs: dict[tuple, _CapturedStep] = {}
        # One memory pool for every captured step: they never run at once, and each output is
        # copied to the host before the next replay.
        self._graph_pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        self._download = torch.empty((slots, self.groups + 1), dtype=torch.long, pin_memory=device.type == "cuda")

    # ----- slots -----

    @torch.inference_mode()
    def assign(self, slot: int, params: SamplingParams, seed: int) -> None:
        """Start a new utterance in `slot`: empty history, its sampling parameters and seed."""
        floats, ints = param_rows(params)
        self.floats[slot] = self.upload(floats, torch.float32)
        self.ints[slot] = self.upload(ints, torch.long)
        self.seeds[slot] = seed
        for state in (self.lengths, self.generated, self.draws, self.seen):
            state[slot] = 0

    @torch.inference_mode()
    def swap(self, a: int, b: int) -> None:
        """Exchange two slots' state: their cached positions and everything else."""
        positions = max(self._clean[a], self._clean[b])
        self._make_clean((a, b), positions)
        pair, flipped = [a, b], [b, a]
        self.kv[:, :, pair, :, :positions] = self.kv[:, :, flipped, :, :positions]
        for state in self._slot_state:
            state[pair] = state[flipped]

    def _make_clean(self, slots, positions: int) -> None:
        for slot in slots:
            if self._clean[slot] < positions:
                self.kv[:, :, slot, :, self._clean[slot] : positions].zero_()
                self._clean[slot] = positions

    def upload(self, values, dtype) -> torch.Tensor:
        """Host values to the device without a blocking copy (pinned staging on CUDA)."""
        host = torch.tensor(values, dtype=dtype)
        if self.device.type == "cpu":
            return host
        return host.pin_memory().to(self.device, non_blocking=True)

    @torch.inference_mode()
    def warm_up(self, params: SamplingParams, longest_run: int) -> int:
        """Capture, before serving, the CUDA graphs that the first requests sampled like `params`
        would otherwise each capture on their way (tens of milliseconds of a step apiece): the
        step of a new request's first frame with no one else speaking, for every prompt length
        bucket up to `longest_run`, and decode steps at every rows and view bucket. It runs them
        as steps of dummy rows in the slots, whose state `assign` resets when an utterance is
        admitted. The rest (a prompt beside speaking streams, other sampling) is captured on
        first use. Returns how many graphs it captured: none without graphs."""
        captured = len(self._graphs)
        hidden = self.talker.config.hidden_size
        counts = _buckets(MIN_RUN, longest_run)  # one prompt length per length bucket
        steps = [
            ([], [Prefill(0, 0, torch.zeros(count, hidden, dtype=self.dtype, device=self.device), True)], [params], 0)
            for count in counts
            if count < self.max_positions
        ]
        steps += [
            ([DecodeRow(TEXT_PAD)] * rows, [], [params] * rows, view)
            for rows in _buckets(1, self.slots)
            for view in _buckets(MIN_VIEW, self.max_positions)
        ]
        for decode, prefills, row_params, view in steps:
            if not self.use_graphs:  # off from the start, or a capture failed
                break
            self.lengths.zero_()
            self.step(decode, prefills, row_params, view)
        self.lengths.zero_()
        return len(self._graphs) - captured

    # ----- a step -----

    @torch.inference_mode()
    def step(
        self, decode: list[DecodeRow], prefills: list[Prefill], params: list[SamplingParams], view: int
    ) -> np.ndarray:
        """Run one step; `params` holds the sampling parameters of every row that produces a code
        (the decoding rows, then the prefill runs that end their prompt), `view` the positions the
        decoding rows' attention must see (at least their longest history plus one). Returns
        (rows, 17) int64 on the host: the 16 codes of each such row's frame and a flag that its
        scores were finite."""
        vocab, predictor_vocab = self.talker.config.vocab_size, self.talker.config.code_predictor.vocab_size
        warping = (Warping.of(params, vocab, predictor=False), Warping.of(params, predictor_vocab, predictor=True))
        keep = None  # the rows of a padded output that are answers, in order
        if prefills and self.use_graphs:
            out, keep = self._captured_mixed_step(decode, prefills, view, warping)
        elif not prefills and (self.use_graphs or self._compiled is not None):
            rows = min(_bucket(len(decode)), self.slots)
            view = min(_bucket(view, MIN_VIEW), self.max_positions)
            self._make_clean(range(rows), view)
            inputs = self._decode_inputs(decode, rows)
            if self.use_graphs:
                step = lambda inputs: self.decode_step(inputs, view, warping)  # noqa: E731
                out = self._replay(("decode", rows, view, warping), step, (inputs,))
            else:
                out = self._compiled(inputs, view, warping)
            keep = range(len(decode))
        else:
            self._make_clean(range(len(decode)), view)
            for run in prefills:
                self._clean[run.slot] = max(self._clean[run.slot], run.start + len(run.vectors))
            if prefills:
                out = self._mixed_step(decode, prefills, view, warping)
            else:
                out = self.decode_step(self._decode_inputs(decode, len(decode)), view, warping)
        host = self._download[: len(out)]
        host.copy_(out, non_blocking=True)
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()  # the step's one sync
        return host.numpy().copy() if keep is None else host.numpy()[list(keep)]

    def _replay(self, key: tuple, function, values: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """`function(*values)` from the CUDA graph of its bucket `key`, captured on first use over
        static buffers shaped like `values`. At most MAX_GRAPHS are kept: a new bucket's capture
        drops the graph replayed longest ago. A capture that fails (an operation this torch or
        driver cannot capture) is logged and turns graphs off: this call and every later one run
        eagerly, with the same results, instead of failing every request."""
        captured = self._graphs.pop(key, None)
        if captured is None:
            if len(self._graphs) >= MAX_GRAPHS:
                del self._graphs[next(iter(self._graphs))]
            try:
                captured = _CapturedStep(self, key, function, tuple(torch.zeros_like(v) for v in values))
            except RuntimeError as error:
                log.warning("capturing a step failed; steps run eagerly from now on: %s", error)
                self.use_graphs = False
                return function(*values)
        self._graphs[key] = captured  # the most recently replayed last
        return captured.replay(values)

    def _decode_inputs(self, decode: list[DecodeRow], rows: int) -> torch.Tensor:
        """(3, rows): text ids, text kinds, and which rows are real (the rest pad a bucket)."""
        values = [[r.text_id for r in decode], [r.text_kind for r in decode], [1] * len(decode)]
        return self.upload([column + [0] * (rows - len(decode)) for column in values], torch.long)

    def decode_step(self, inputs: torch.Tensor, view: int, warping: tuple[Warping, Warping]) -> torch.Tensor:
        """A step of decoding rows alone, with static shapes and no host reads: what a CUDA graph
        captures and what torch.compile compiles. Rows whose `inputs[2]` is 0 pad the batch: they
        write to the scratch position and change no state."""
        text_ids, kinds, real = inputs
        rows = inputs.shape[1]
        real = real.bool()
        positions = torch.where(real, self.lengths[:rows], self.max_positions)
        x = self._text_vectors(text_ids, kinds) + self.frame_vectors[:rows]
        attention = _SlotAttention(self.kv, torch.arange(rows, device=self.device), positions, rows, view, [])
        hidden = self.talker.model(x, self.cos[positions], self.sin[positions], attention)
        return self._frames(hidden, torch.arange(rows, device=self.device), real, positions + 1, warping)

    def _mixed_step(
        self, decode: list[DecodeRow], prefills: list[Prefill], view: int, warping: tuple[Warping, Warping]
    ) -> torch.Tensor:
        """A step with prompt runs: one flat batch of every row's tokens."""
        device, n = self.device, len(decode)
        slots = list(range(n))
        starts = [0] * n
        for run in prefills:
            slots += [run.slot] * len(run.vectors)
            starts += range(run.start, run.start + len(run.vectors))
        slots, positions = self.upload([slots, starts], torch.long)
        if n:
            positions[:n] = self.lengths[:n]
        parts = []
        if n:
            text_ids, kinds, _ = self._decode_inputs(decode, n)
            parts.append(self._text_vectors(text_ids, kinds) + self.frame_vectors[:n])
        parts += [run.vectors for run in prefills]
        x = torch.cat(parts) if len(parts) > 1 else parts[0]
        attention = _SlotAttention(self.kv, slots, positions, n, view, prefills)
        hidden = self.talker.model(x, self.cos[positions], self.sin[positions], attention)
        # The rows that produce a code: every decoding row, and each run that ends its prompt.
        ends, row_slots = list(range(n)), list(range(n))
        offset = n
        for run in prefills:
            offset += len(run.vectors)
            if run.last:
                ends.append(offset - 1)
                row_slots.append(run.slot)
        if ends:
            index, slots = self.upload([ends, row_slots], torch.long)
            real = torch.ones(len(ends), dtype=torch.bool, device=device)
            out = self._frames(hidden[index], slots, real, positions[index] + 1, warping)
        else:
            out = torch.zeros((0, self.groups + 1), dtype=torch.long, device=device)
        return out

    def _captured_mixed_step(
        self, decode: list[DecodeRow], prefills: list[Prefill], view: int, warping: tuple[Warping, Warping]
    ) -> tuple[torch.Tensor, list[int]]:
        """A step with prompt runs from the CUDA graph of its bucket: the decoding rows padded to
        a rows bucket, the runs to a runs bucket and each to one length bucket, their attention to
        a keys bucket (`padded_mixed_step`). Padding rows and runs take slots no real one has, so
        the step's indexed stores never meet twice in a slot. Returns the padded output and which
        of its rows answer `step`."""
        n, count = len(decode), len(prefills)
        runs = min(_bucket(count), self.slots - n)
        rows = min(_bucket(n), self.slots - runs) if n else 0
        length = _bucket(max(len(run.vectors) for run in prefills), MIN_RUN)
        keys = min(_bucket(max(run.start + len(run.vectors) for run in prefills), MIN_VIEW), self.max_positions)
        view = min(_bucket(view, MIN_VIEW), self.max_positions) if n else 0
        taken = set(range(n)) | {run.slot for run in prefills}
        free = [slot for slot in range(self.slots) if slot not in taken]
        padding_rows, padding_runs = free[: rows - n], free[rows - n : rows - n + runs - count]
        run_slots = [run.slot for run in prefills] + padding_runs
        self._make_clean(range(rows), view)
        self._make_clean(run_slots, keys)
        blank = [0] * (rows - n)
        decode_inputs = self.upload(
            [
                [r.text_id for r in decode] + blank,
                [r.text_kind for r in decode] + blank,
                [1] * n + blank,
                list(range(n)) + padding_rows,
            ],
            torch.long,
        )
        vectors = torch.zeros((runs, length, self.talker.config.hidden_size), dtype=self.dtype, device=self.device)
        for r, run in enumerate(prefills):
            vectors[r, : len(run.vectors)] = run.vectors
        blank = [0] * (runs - count)
        run_inputs = self.upload(
            [
                run_slots,
                [run.start for run in prefills] + blank,
                [len(run.vectors) for run in prefills] + blank,
                [int(run.last) for run in prefills] + blank,
            ],
            torch.long,
        )
        step = lambda *inputs: self.padded_mixed_step(*inputs, view, keys, warping)  # noqa: E731
        key = ("mixed", rows, view, runs, length, keys, warping)
        out = self._replay(key, step, (decode_inputs, vectors, run_inputs))
        return out, list(range(n)) + [rows + r for r, run in enumerate(prefills) if run.last]

    def padded_mixed_step(
        self,
        decode_inputs: torch.Tensor,
        vectors: torch.Tensor,
        run_inputs: torch.Tensor,
        view: int,
        keys: int,
        warping: tuple[Warping, Warping],
    ) -> torch.Tensor:
        """A step with prompt runs, with static shapes and no host reads (what a CUDA graph
        captures): `decode_inputs` (4, rows) text ids, text kinds, real flags and slots of the
        decoding rows; `vectors` (runs, length, hidden) the runs' input vectors, padded;
        `run_inputs` (4, runs) their slots, starts, token counts and whether they end their
        prompt. Padding tokens write to the scratch position; a padding row or run (real flag or
        count 0) changes no state. Returns (rows + runs, 17): a frame per decoding row, then per
        run (a real one only where the run ends its prompt)."""
        text_ids, kinds, real, slots = decode_inputs
        run_slots, starts, counts, ends = run_inputs
        rows, (runs, length) = decode_inputs.shape[1], vectors.shape[:2]
        device, real = self.device, real.bool()
        offsets = torch.arange(length, device=device)
        token_positions = starts[:, None] + offsets
        run_positions = torch.where(offsets < counts[:, None], token_positions, self.max_positions)
        positions = torch.cat([torch.where(real, self.lengths[slots], self.max_positions), run_positions.flatten()])
        x = vectors.flatten(0, 1)
        if rows:
            x = torch.cat([self._text_vectors(text_ids, kinds) + self.frame_vectors[slots], x])
        visible = torch.arange(keys, device=device) <= token_positions[:, :, None]
        padded = _PaddedRuns(run_slots, visible[:, None])
        token_slots = torch.cat([slots, run_slots[:, None].expand(runs, length).flatten()])
        attention = _SlotAttention(self.kv, token_slots, positions, rows, view, [], padded)
        hidden = self.talker.model(x, self.cos[positions], self.sin[positions], attention)
        # Code rows: every decoding row, then each run's last token (a code where it ends the prompt).
        last = rows + torch.arange(runs, device=device) * length + (counts - 1).clamp(min=0)
        index = torch.cat([torch.arange(rows, device=device), last])
        ends = ends.bool() & (counts > 0)
        return self._frames(
            hidden[index], torch.cat([slots, run_slots]), torch.cat([real, ends]), positions[index] + 1, warping
        )

    def _text_vectors(self, text_ids: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
        tokens = self.talker.embed_text(text_ids)
        return torch.where(
            (kinds == TEXT_TOKEN)[:, None],
            tokens,
            torch.where((kinds == TEXT_EOS)[:, None], self.tts_eos, self.tts_pad),
        )

    def _frames(
        self,
        hidden: torch.Tensor,
        slots: torch.Tensor,
        real: torch.Tensor,
        lengths: torch.Tensor,
        warping: tuple[Warping, Warping],
    ) -> torch.Tensor:
        """Codebook 0 from each row's talker output, the predictor's 15 codebooks, and the rows'
        state updated in place (real rows only). Returns (rows, 17): codes and finite flags."""
        talker = self.talker
        floats, ints, seeds, draws = self.floats[slots], self.ints[slots], self.seeds[slots], self.draws[slots]
        code0, finite = talker_codes(
            talker.codec_head(hidden),
            self.seen[slots],
            self.generated[slots],
            floats,
            ints,
            seeds,
            draws,
            eos_id=self.eos_id,
            suppressed=self.suppressed,
            warping=warping[0],
        )
        codes = [code0]
        rows = hidden.shape[0]
        predictor = talker.code_predictor
        noise = predictor_noise(seeds, draws, predictor.config.vocab_size, warping[1])
        x = torch.stack([hidden, talker.embed_codec(code0)], dim=1).flatten(0, 1)
        cos, sin = self.frame_cos[:2].repeat(rows, 1), self.frame_sin[:2].repeat(rows, 1)
        out = predictor(x, cos, sin, _FrameAttention(self.predictor_kv, rows, 0, 2)).view(rows, 2, -1)[:, -1]
        for j, head in enumerate(predictor.lm_head):
            code, ok = predictor_codes(head(out), j + 1, floats, ints, noise, warping=warping[1])
            codes.append(code)
            finite = finite & ok
            if j + 1 < len(predictor.lm_head):
                position = j + 2
                cos, sin = self.frame_cos[position].expand(rows, -1), self.frame_sin[position].expand(rows, -1)
                out = predictor(
                    predictor.model.codec_embedding[j](code),
                    cos,
                    sin,
                    _FrameAttention(self.predictor_kv, rows, position, 1),
                )
        frames = torch.stack(codes, dim=1)
        # Commit: only real rows change state (padding rows may alias other slots).
        keep = real[:, None]
        self.frame_vectors[slots] = torch.where(keep, talker.embed_frames(frames), self.frame_vectors[slots])
        self.seen[slots, code0] |= real
        self.lengths[slots] = torch.where(real, lengths, self.lengths[slots])
        self.generated[slots] += real
        self.draws[slots] += real
        return torch.cat([frames, finite[:, None]], dim=1)


class _CapturedStep:
    """`function(*inputs)` captured as a CUDA graph over static input buffers (captured while
    they hold zeros, which every step function treats as padding rows), replayed with new values
    copied in: a decode step for one (rows, view, sampling) bucket, or a step with prompt runs for
    one (rows, view, runs, run length, keys, sampling) bucket."""

    def __init__(self, runner: ModelRunner, key: tuple, function, inputs: tuple[torch.Tensor, ...]):
        self.key, self.inputs = key, inputs
        state = [t.clone() for t in runner._slot_state]
        try:
            self.output = self._capture(runner, function)
        finally:  # undo the warm-up's updates, if any, also when the capture fails
            for live, saved in zip(runner._slot_state, state):
                live.copy_(saved)
        log.info("captured a step: %s", key[:-1])  # (kind, rows[, view]), its sampling left out

    def _capture(self, runner: ModelRunner, function) -> torch.Tensor:
        stream = torch.cuda.Stream(runner.device)
        stream.wait_stream(torch.cuda.current_stream(runner.device))
        with torch.cuda.stream(stream):  # warm-up (allocator, cuBLAS handles) on padding rows only
            function(*self.inputs)
        torch.cuda.current_stream(runner.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=runner._graph_pool):
            return function(*self.inputs)

    def replay(self, values: tuple[torch.Tensor, ...]) -> torch.Tensor:
        for buffer, value in zip(self.inputs, values):
            buffer.copy_(value)
        return self._run()

    def _run(self) -> torch.Tensor:
        self.graph.replay()
        return self.output


class EagerReplay(_CapturedStep):
    """The graph path without CUDA: 'capturing' keeps the step function, and a replay runs it on
    the static buffers, as a CUDA graph replays its kernels on them. Installed in place of
    `_CapturedStep` (with `use_graphs` set on a CPU runner), it lets the host side of the graph
    path (padding to buckets, buffers, one capture per bucket) run on CPU: in tests, which compare
    its codes with the eager ones, and in bench/bench_engine.py, which counts what a replay
    leaves to launch one by one."""

    def _capture(self, runner: ModelRunner, function) -> torch.Tensor:
        self._function = function

    def _run(self) -> torch.Tensor:
        return self._function(*self.inputs)
