"""Incremental, batched generation: the serving core of the generator.

A `Session` is one utterance. Its text arrives in token chunks (`add_text`) until `close_text`;
frames (16 codes, 80 ms of audio each) come out as they are produced. `Engine.step()` asks the
scheduler what runs (scheduler.py), has the model runner feed it in one batched pass and expand
every new codebook-0 code into a full frame (model_runner.py, sampler.py), and turns the frames
that reach the host into outputs. Sessions join and leave between steps.

The engine is used from one thread (the service's model thread, or the caller of the offline API):
it keeps no lock. A step that fails is retried one session at a time, and only the sessions whose
own step fails end (FinishReason.ERROR); the others go on as if nothing happened.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from dataclasses import dataclass

import numpy as np
import torch

from models.qwen3_tts.modeling_qwen3_tts import Qwen3TTSTalker
from models.qwen3_tts.prompts import ClonePrompt, PromptPlan

from .model_runner import TEXT_EOS, TEXT_PAD, TEXT_TOKEN, DecodeRow, ModelRunner, Prefill
from .sampler import SamplingParams
from .scheduler import FinishReason, Plan, Run, Scheduler, SchedulerLimits, Session

log = logging.getLogger(__name__)

__all__ = ["ContextTooLong", "Engine", "FinishReason", "SchedulerLimits", "Session", "StepOutput"]


class ContextTooLong(ValueError):
    """A prompt (and, in non-streaming mode, its text) that leaves no room for a frame in a slot."""


@dataclass
class StepOutput:
    session: Session
    frame: np.ndarray | None  # (16,) int64, or None when the session only finished
    finished: bool


class Engine:
    def __init__(
        self,
        talker: Qwen3TTSTalker,
        *,
        pad_id: int,
        bos_id: int,
        eos_id: int,
        text_ids: dict[str, int],
        limits: SchedulerLimits = SchedulerLimits(),
        use_graphs: bool = False,
        compiled: bool = False,
    ):
        """`talker`: a loaded (and fused) Qwen3TTSTalker; `text_ids`: the tts_pad/tts_bos/tts_eos
        token ids."""
        self.talker = talker
        self.scheduler = Scheduler(limits)
        self.runner = ModelRunner(
            talker,
            slots=limits.slots,
            max_positions=limits.max_positions,
            eos_id=eos_id,
            text_ids=text_ids,
            use_graphs=use_graphs,
            compiled=compiled,
        )
        self.device, self.dtype = self.runner.device, self.runner.dtype
        self.eos_id = eos_id
        with torch.inference_mode():
            ids = torch.tensor([[text_ids["tts_bos"], text_ids["tts_eos"], text_ids["tts_pad"]]], device=self.device)
            self.tts_bos, self.tts_eos, self.tts_pad = talker.embed_text(ids)[0]
            self.codec_bos = talker.embed_codec(torch.tensor(bos_id, device=self.device))
            self.codec_pad = talker.embed_codec(torch.tensor(pad_id, device=self.device))
        self._ids = itertools.count(1)

    def warm_up(self, params: SamplingParams) -> int:
        """Capture the CUDA graphs the first requests sampled like `params` would meet, before the
        first session (ModelRunner.warm_up: it runs dummy rows in the slots). Returns how many."""
        if self.active:
            raise RuntimeError("warm_up runs before the first session: it uses the slots")
        return self.runner.warm_up(params, self.scheduler.limits.prefill_chunk)

    # ----- sessions -----

    @property
    def sessions(self) -> list[Session]:
        """Every session not finished: running, then waiting for a slot."""
        return [*self.scheduler.running, *self.scheduler.waiting]

    @property
    def active(self) -> int:
        return len(self.scheduler.running) + len(self.scheduler.waiting)

    @torch.inference_mode()
    def start(self, plan: PromptPlan, params: SamplingParams, *, trace_id: str | None = None) -> Session:
        """A new session, waiting for a slot; ValueError for inputs that would fail inside a step."""
        params.validate()
        if plan.clone is not None:
            self.check_clone(plan.clone)
        self.check_text_ids(plan.instruct_ids + plan.role_ids + plan.ref_text_ids)
        self.check_context(plan, 0)
        ref = [self.codec_bos[None]]
        if plan.clone is not None and plan.clone.in_context:
            ref.append(self.talker.embed_frames(plan.clone.ref_codes.to(self.device)))
        session = Session(
            id=next(self._ids),
            params=params,
            seed=params.seed if params.seed is not None else secrets.randbits(63),
            prefix=self._prefix(plan),
            template=None,
            text_ids=list(plan.ref_text_ids),
            ref_text_len=len(plan.ref_text_ids),
            non_streaming=plan.non_streaming,
            ref_template=torch.cat(ref),
            trace_id=trace_id,
        )
        if not plan.non_streaming:
            session.template = session.ref_template
        self.scheduler.add(session)
        return session

    def check_context(self, plan: PromptPlan, text_tokens: int) -> None:
        """ValueError if the prompt (with `text_tokens` of text, in non-streaming mode) leaves no
        room in a slot for a frame; the scheduler would end such a session at once (LENGTH)."""
        if plan.prompt_length(text_tokens) >= self.scheduler.limits.max_positions:
            raise ContextTooLong(
                f"the prompt and text take {plan.prompt_length(text_tokens)} positions; this generator "
                f"keeps {self.scheduler.limits.max_positions} per utterance (GENERATOR_MAX_POSITIONS)"
            )

    def add_text(self, session: Session, token_ids: list[int]) -> None:
        self.check_text_ids(token_ids)
        if session.closed:
            raise ValueError("text was added after the input was closed")
        session.text_ids.extend(token_ids)

    def close_text(self, session: Session) -> None:
        session.closed = True
        if session.non_streaming and session.template is None:
            pads = self.codec_pad.expand(len(session.text_ids) + 1, -1)
            session.template = torch.cat([pads, session.ref_template])

    def cancel(self, session: Session, reason: FinishReason = FinishReason.CANCELLED) -> None:
        """End a session now and free its slot."""
        if not session.finished:
            session.finish_reason = reason
            self.scheduler.remove(session)

    def has_work(self) -> bool:
        """Whether a step would do any work (some session has input it can feed, or waits for a
        slot that is free)."""
        return self.scheduler.can_admit or bool(self.scheduler.plan())

    def check_text_ids(self, token_ids: list[int]) -> None:
        vocab = self.talker.config.text_vocab_size
        bad = [t for t in token_ids if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the text vocabulary [0, {vocab})")

    def check_clone(self, clone: ClonePrompt) -> None:
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

    # ----- stepping -----

    def step(self) -> list[StepOutput]:
        """Advance every session that can progress by one step; returns the frames produced and
        the sessions that finished ([] when nothing can progress)."""
        outputs = [StepOutput(s, None, True) for s in self._admit()]
        plan = self.scheduler.plan()
        if not plan:
            return outputs
        try:
            return outputs + self._run(plan)
        except Exception:
            log.exception("a step of %d sessions failed; running each alone", len(plan.decode) + len(plan.prompts))
        for part in plan.alone():
            try:
                outputs += self._run(part)
            except Exception:
                (session,) = part.decode or [run.session for run in part.prompts]
                log.exception(
                    "session %d failed in its step and ends",
                    session.id,
                    extra={"trace_id": session.trace_id} if session.trace_id else None,
                )
                outputs.append(self._finish(session, FinishReason.ERROR))
        return outputs

    def _admit(self) -> list[Session]:
        """Sessions that get a slot; returns those that could not start (none, normally)."""
        failed = []
        for session in self.scheduler.admit():
            try:
                self.runner.assign(session.slot, session.params, session.seed)
            except Exception:
                log.exception("session %d could not take its slot", session.id)
                self._finish(session, FinishReason.ERROR)
                failed.append(session)
        return failed

    @torch.inference_mode()
    def _run(self, plan: Plan) -> list[StepOutput]:
        """One step of `plan`. Until the model runner returns, no session has changed (an
        exception leaves them as they were); after, each session's outputs are its own affair."""
        self._arrange(plan.decode)
        rows = [self._decode_row(s) for s in plan.decode]
        runs = [self._prefill(run) for run in plan.prompts]
        producing = plan.decode + [run.session for run in plan.prompts if run.ends_prompt]
        view = max((s.fed + 1 for s in plan.decode), default=0)
        frames = self.runner.step(rows, runs, [s.params for s in producing], view)
        for session in plan.decode:
            session.fed += 1
        for run in plan.prompts:
            run.session.fed += run.count
        outputs = []
        for session, frame in zip(producing, frames):
            try:
                outputs += self._take(session, frame)
            except Exception:
                log.exception(
                    "session %d failed taking its frame and ends",
                    session.id,
                    extra={"trace_id": session.trace_id} if session.trace_id else None,
                )
                outputs.append(self._finish(session, FinishReason.ERROR))
        for session in list(self.scheduler.running):
            reason = self.scheduler.over_budget(session)
            if reason is not None:
                outputs.append(self._finish(session, reason))
        return outputs

    def _take(self, session: Session, row: np.ndarray) -> list[StepOutput]:
        """The host's part of a session's step: its new code, maybe a frame, maybe its end."""
        if not row[-1]:
            log.error(
                "session %d: the model's scores were not finite; it ends",
                session.id,
                extra={"trace_id": session.trace_id} if session.trace_id else None,
            )
            return [self._finish(session, FinishReason.ERROR)]
        session.codes += 1
        if row[0] == self.eos_id:
            return [self._finish(session, FinishReason.EOS)]
        if session.codes >= session.params.max_new_tokens:
            # The last code is never expanded, matching the reference's frame count.
            return [self._finish(session, FinishReason.LENGTH)]
        frame = row[:-1].copy()
        if session.first_frame_time is None:
            session.first_frame_time = time.monotonic()
        session.frames.append(frame)
        return [StepOutput(session, frame, False)]

    def _finish(self, session: Session, reason: FinishReason) -> StepOutput:
        self.cancel(session, reason)
        return StepOutput(session, None, True)

    def _arrange(self, decode: list[Session]) -> None:
        """Put the decoding sessions in slots 0..n-1, in order (model_runner.py)."""
        by_slot = {s.slot: s for s in self.scheduler.running}
        for row, session in enumerate(decode):
            if session.slot == row:
                continue
            self.runner.swap(row, session.slot)
            occupant = by_slot.get(row)
            if occupant is None:
                del by_slot[session.slot]
                self.scheduler.move(session, row)
            else:
                occupant.slot, session.slot = session.slot, row
                by_slot[occupant.slot] = occupant
            by_slot[row] = session

    def _decode_row(self, session: Session) -> DecodeRow:
        j = session.zipped_fed
        if j < len(session.text_ids):
            return DecodeRow(TEXT_TOKEN, session.text_ids[j])
        return DecodeRow(TEXT_EOS if j == len(session.text_ids) else TEXT_PAD)

    def _prefill(self, run: Run) -> Prefill:
        """The input vectors of a prompt run: prefix rows, then zipped template positions."""
        session = run.session
        start, end, prefix = session.fed, session.fed + run.count, len(session.prefix)
        parts = [session.prefix[start:end]] if start < prefix else []
        first, last = max(0, start - prefix), end - prefix
        if last > first:
            parts.append(self._text_vectors(session, first, last) + session.template[first:last])
        return Prefill(session.slot, start, torch.cat(parts) if len(parts) > 1 else parts[0], run.ends_prompt)

    def _text_vectors(self, session: Session, first: int, last: int) -> torch.Tensor:
        """Text-track vectors of zipped positions first..last-1."""
        tokens = session.text_ids[first:last]
        rows = [self.talker.embed_text(self.runner.upload(tokens, torch.long))] if tokens else []
        specials = last - first - len(tokens)
        if specials:
            ends = len(session.text_ids) >= first  # the first special position is tts_eos
            rows.append(torch.cat([self.tts_eos[None]] * ends + [self.tts_pad[None]] * (specials - ends)))
        return torch.cat(rows) if len(rows) > 1 else rows[0]

    # ----- prompt embedding -----

    def _prefix(self, plan: PromptPlan) -> torch.Tensor:
        """Instruct block, role and codec-tag positions: everything before the zipped streams."""
        talker, upload = self.talker, self.runner.upload
        parts = []
        if plan.instruct_ids:
            parts.append(talker.embed_text(upload(plan.instruct_ids, torch.long)))
        parts.append(talker.embed_text(upload(plan.role_ids, torch.long)))
        codec = [talker.embed_codec(upload(plan.codec_tags, torch.long))]
        if plan.speaker_codec_id is not None:
            codec.append(talker.embed_codec(upload([plan.speaker_codec_id], torch.long)))
        elif plan.clone is not None:
            codec.append(plan.clone.speaker_embedding.to(self.device, self.dtype).reshape(1, -1))
        codec.append(self.codec_pad[None])
        codec = torch.cat(codec)
        text = torch.cat([self.tts_pad.expand(len(codec) - 1, -1), self.tts_bos[None]])
        parts.append(text + codec)
        return torch.cat(parts)
