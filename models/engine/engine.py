"""Incremental, batched generation: the serving core of the generator.

A `Session` is one utterance. Its text arrives in token chunks (`add_text`) until `close_text`;
frames (16 codes, 80 ms of audio each) come out as they are produced. `Engine.step()` advances
every session that can make progress by one position in a single batched talker pass (sessions
whose prompt is still being fed are prefilled on their own), then expands every new codebook-0
code into a full frame in one batched code-predictor pass. Sessions join and leave between steps;
each keeps its own KV cache, so nothing is ever recomputed.

A session whose text has run out before its input was closed is not stepped: it waits for more
text instead of being pushed towards an early end of speech. (Feeding padding there would tell
the model the text is over.)

Threads: `step` runs on one engine thread. `add_text`, `close_text` and `cancel` may come from
another thread (the gRPC event loop) while a step runs: they only touch state under the engine's
lock, `step` works from a snapshot taken under it, and frames of a session cancelled mid-step are
dropped. `start` computes the prompt embeddings, so call it off the event loop.
"""

from __future__ import annotations

import enum
import itertools
import threading
from dataclasses import dataclass, field

import torch

from models.qwen3_tts.prompts import PromptPlan

from .kv_cache import RaggedBatchCache
from .sampling import SamplingParams, choose, predictor_scores, suppressed_ids, talker_scores


class FinishReason(str, enum.Enum):
    EOS = "eos"  # the model ended the utterance
    LENGTH = "length"  # max_new_tokens codes were generated
    BUDGET = "budget"  # stopped by the caller's runaway guard (more frames than the text warrants)
    CANCELLED = "cancelled"


@dataclass
class Session:
    id: int
    params: SamplingParams
    prefix: torch.Tensor | None  # (P, hidden) inputs before the zipped streams; None once fed
    template: list[torch.Tensor]  # codec-track vectors before the first generated frame
    text_ids: list[int]  # the text stream's tokens: reference transcript, then target text
    ref_text_len: int
    generator: torch.Generator | None
    closed: bool = False
    codec: list[torch.Tensor] | None = None  # the codec stream, once it is known
    fed: int = 0  # stream positions fed to the talker
    cache: object = None
    codes0: list[int] = field(default_factory=list)  # codebook-0 history (for the penalty)
    frames: list[torch.Tensor] = field(default_factory=list)
    finish_reason: FinishReason | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def text_consumed(self) -> int:
        """How many target-text tokens the talker has read so far."""
        return max(0, min(self.fed, len(self.text_ids)) - self.ref_text_len)


@dataclass
class StepOutput:
    session: Session
    frame: torch.Tensor | None  # (16,) int64, or None when the session only finished
    finished: bool


class Engine:
    def __init__(self, talker, *, pad_id: int, bos_id: int, eos_id: int, text_ids: dict[str, int]):
        """`talker`: a loaded modeling.Talker; `text_ids`: the tts_pad/tts_bos/tts_eos token ids."""
        self.talker = talker
        param = next(talker.parameters())
        self.dtype, self.device = param.dtype, param.device
        self.codec_pad_id, self.codec_bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.suppressed = suppressed_ids(talker.config.vocab_size, eos_id, self.device)
        with torch.inference_mode():
            ids = torch.tensor([[text_ids["tts_bos"], text_ids["tts_eos"], text_ids["tts_pad"]]], device=self.device)
            self.tts_bos, self.tts_eos, self.tts_pad = talker.embed_text(ids)[0]
            self.codec_bos = talker.embed_codec(torch.tensor(bos_id, device=self.device))
            self.codec_pad = talker.embed_codec(torch.tensor(pad_id, device=self.device))
        self.sessions: dict[int, Session] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # ----- session lifecycle (may be called from other threads) -----

    @torch.inference_mode()
    def start(self, plan: PromptPlan, params: SamplingParams) -> Session:
        """A new session; raises ValueError for inputs that would fail inside a step."""
        params.validate()
        if plan.clone is not None:
            self.check_clone(plan.clone)
        self.check_text_ids(plan.instruct_ids + plan.role_ids + plan.ref_text_ids)
        prefix = self._prefix(plan)
        template = [self.codec_bos]
        if plan.clone is not None and plan.clone.in_context:
            ref_frames = plan.clone.ref_codes.to(self.device)
            template += list(self.talker.embed_frames(ref_frames))
        session = Session(
            id=next(self._ids),
            params=params,
            prefix=prefix,
            template=template,
            text_ids=list(plan.ref_text_ids),
            ref_text_len=len(plan.ref_text_ids),
            generator=params.make_generator(self.device),
            cache=self.talker.new_cache(dtype=self.dtype, device=self.device),
        )
        if not plan.non_streaming:
            session.codec = list(template)
        with self._lock:
            self.sessions[session.id] = session
        return session

    def add_text(self, session: Session, token_ids: list[int]) -> None:
        self.check_text_ids(token_ids)
        with self._lock:
            if session.closed:
                raise ValueError("text was added after the input was closed")
            session.text_ids.extend(token_ids)

    def close_text(self, session: Session) -> None:
        with self._lock:
            session.closed = True

    def cancel(self, session: Session, reason: FinishReason = FinishReason.CANCELLED) -> None:
        """End a session now and free its cache (mid-step: when the step ends)."""
        self._finish(session, reason)

    def can_progress(self) -> bool:
        """Whether a step would do any work (some session has input it can feed)."""
        with self._lock:
            return any(s.prefix is not None or self._ready_positions(s) > 0 for s in self.sessions.values())

    @property
    def active(self) -> int:
        return len(self.sessions)

    def check_text_ids(self, token_ids: list[int]) -> None:
        vocab = self.talker.config.text_vocab_size
        bad = [t for t in token_ids if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the text vocabulary [0, {vocab})")

    def check_clone(self, clone) -> None:
        embedding = clone.speaker_embedding
        hidden = self.talker.config.hidden_size
        if embedding.shape != (hidden,):
            raise ValueError(f"the speaker embedding has shape {tuple(embedding.shape)}, expected size {hidden}")
        if not torch.isfinite(embedding).all():
            raise ValueError("the speaker embedding has non-finite values")
        if clone.ref_codes is not None:
            codes = clone.ref_codes
            groups = self.talker.config.num_code_groups
            if codes.dim() != 2 or codes.shape[1] != groups or len(codes) == 0:
                raise ValueError(f"reference codes have shape {tuple(codes.shape)}, expected (frames, {groups})")
            codebook = self.talker.config.code_predictor.vocab_size
            if codes.min() < 0 or codes.max() >= codebook:
                raise ValueError(f"reference codes are outside [0, {codebook})")

    # ----- stepping (engine thread) -----

    @torch.inference_mode()
    def step(self) -> list[StepOutput]:
        """Advance every session that can progress; returns the frames produced and the sessions
        that finished. Returns [] when no session can progress (all waiting for text)."""
        with self._lock:
            work = [(s, self._ready_positions(s)) for s in list(self.sessions.values())]
            work = [(s, n) for s, n in work if n > 0 or s.prefix is not None]
            batched = [s for s, n in work if n == 1 and s.prefix is None]
            alone = [(s, n) for s, n in work if not (n == 1 and s.prefix is None)]
            inputs = {s.id: self._inputs(s, n) for s, n in work}
            # Held for the whole step: a concurrent cancel() drops the session's reference, and
            # the memory goes when this step lets go of it.
            caches = {s.id: s.cache for s, _ in work}

        sampled: list[tuple[Session, torch.Tensor]] = []
        for session, n in alone:
            hidden = self._run_talker([session], inputs[session.id].unsqueeze(0), caches)
            session.fed += n
            if self._wants_logits(session):
                sampled.append((session, hidden[0, -1]))
        if batched:
            hidden = self._run_talker(batched, torch.stack([inputs[s.id] for s in batched]), caches)
            for b, session in enumerate(batched):
                session.fed += 1
                if self._wants_logits(session):
                    sampled.append((session, hidden[b, -1]))
        outputs = self._sample_and_expand(sampled)
        # A session ended by cancel() while this step ran gets nothing more.
        return [o for o in outputs if o.session.finish_reason not in (FinishReason.CANCELLED, FinishReason.BUDGET)]

    def _ready_positions(self, s: Session) -> int:
        """How many stream positions of `s` can be fed now (text and codec both known)."""
        if s.finished:
            return 0
        if s.codec is None:  # non-streaming: the codec stream is known once the text is complete
            if not s.closed:
                return 0
            s.codec = [self.codec_pad] * (len(s.text_ids) + 1) + s.template
        text_known = float("inf") if s.closed else len(s.text_ids)
        return int(min(text_known, len(s.codec))) - s.fed

    def _text_vector(self, s: Session, j: int, projected: dict) -> torch.Tensor:
        if j < len(s.text_ids):
            return projected[j]
        return self.tts_eos if j == len(s.text_ids) else self.tts_pad

    def _inputs(self, s: Session, n: int) -> torch.Tensor:
        """Input vectors (T, hidden) for the prefix (if not fed yet) and the next `n` positions."""
        positions = range(s.fed, s.fed + n)
        token_positions = [j for j in positions if j < len(s.text_ids)]
        projected = {}
        if token_positions:
            ids = torch.tensor([s.text_ids[j] for j in token_positions], device=self.device)
            projected = dict(zip(token_positions, self.talker.embed_text(ids)))
        rows = [self._text_vector(s, j, projected) + s.codec[j] for j in positions]
        parts = ([s.prefix] if s.prefix is not None else []) + ([torch.stack(rows)] if rows else [])
        s.prefix = None
        return torch.cat(parts)

    def _wants_logits(self, s: Session) -> bool:
        """Whether the last fed position ends the known codec stream (template or generated
        frames): its output is then the next codebook-0 code."""
        return s.codec is not None and s.fed == len(s.codec) and not s.finished

    def _run_talker(self, sessions: list[Session], inputs: torch.Tensor, caches: dict) -> torch.Tensor:
        batch_cache = RaggedBatchCache([caches[s.id] for s in sessions])
        start = torch.tensor([c.length for c in batch_cache.caches], device=self.device)
        positions = start[:, None] + torch.arange(inputs.shape[1], device=self.device)
        return self.talker.forward_step(inputs, positions, batch_cache)

    def _sample_and_expand(self, sampled) -> list[StepOutput]:
        if not sampled:
            return []
        hidden = torch.stack([h for _, h in sampled])
        logits = self.talker.codec_head(hidden)
        outputs, expand = [], []
        for (session, h), row in zip(sampled, logits):
            scores = talker_scores(row, session.codes0, session.params, self.eos_id, self.suppressed)
            code = choose(scores, session.params.do_sample, session.generator)
            session.codes0.append(code)
            if code == self.eos_id:
                self._finish(session, FinishReason.EOS)
            elif len(session.codes0) >= session.params.max_new_tokens:
                # The last code is never expanded, matching the reference's frame count.
                self._finish(session, FinishReason.LENGTH)
            else:
                expand.append((session, h, code))
                continue
            outputs.append(StepOutput(session, None, True))
        if expand:
            frames = self._predict_frames(expand)
            frame_inputs = self.talker.embed_frames(frames)
            for (session, _, _), frame, vector in zip(expand, frames, frame_inputs):
                session.frames.append(frame)
                session.codec.append(vector)
                outputs.append(StepOutput(session, frame, False))
        return outputs

    def _predict_frames(self, expand) -> torch.Tensor:
        """Codebooks 1..15 for each (session, talker hidden, codebook-0 code): frames (B, 16)."""
        predictor = self.talker.code_predictor
        sessions = [s for s, _, _ in expand]
        codes = torch.tensor([[c] for _, _, c in expand], device=self.device)
        cache = predictor.new_cache(len(expand), dtype=self.dtype, device=self.device)
        x = torch.cat([torch.stack([h for _, h, _ in expand])[:, None], self.talker.embed_codec(codes)], dim=1)
        columns = [codes[:, 0]]
        for j, head in enumerate(predictor.lm_head):
            hidden = predictor.forward_step(x, cache)
            logits = head(hidden)
            picked = [
                choose(predictor_scores(row, s.params), s.params.subtalker_do_sample, s.generator)
                for s, row in zip(sessions, logits)
            ]
            column = torch.tensor(picked, device=self.device)
            columns.append(column)
            if j + 1 < len(predictor.lm_head):
                x = predictor.model.codec_embedding[j](column)[:, None]
        return torch.stack(columns, dim=1)

    def _finish(self, session: Session, reason: FinishReason) -> None:
        with self._lock:
            if session.finished:
                return
            session.finish_reason = reason
            # Frees the KV cache now (or, mid-step, when the step ends), not when the caller
            # drops the session.
            session.cache = None
            self.sessions.pop(session.id, None)

    # ----- prompt embedding -----

    def _prefix(self, plan: PromptPlan) -> torch.Tensor:
        """Instruct block, role and codec-tag positions: everything before the zipped streams."""
        talker = self.talker
        parts = []
        if plan.instruct_ids:
            parts.append(talker.embed_text(torch.tensor(plan.instruct_ids, device=self.device)))
        parts.append(talker.embed_text(torch.tensor(plan.role_ids, device=self.device)))
        codec = [talker.embed_codec(torch.tensor(plan.codec_tags, device=self.device))]
        if plan.speaker_codec_id is not None:
            codec.append(talker.embed_codec(torch.tensor([plan.speaker_codec_id], device=self.device)))
        elif plan.clone is not None:
            codec.append(plan.clone.speaker_embedding.to(self.device, self.dtype).reshape(1, -1))
        codec.append(self.codec_pad[None])
        codec = torch.cat(codec)
        text = torch.cat([self.tts_pad.expand(len(codec) - 1, -1), self.tts_bos[None]])
        parts.append(text + codec)
        return torch.cat(parts)
