"""Which utterances hold a slot, and what each one feeds, at every step of the engine.

An utterance's talker input is a prefix (instruct, role, codec tags), then positions j = 0, 1, ...
each the sum of a text-track vector (text token j, then tts_eos, then tts_pad) and a codec-track
vector: the template (codec_bos, and an in-context clone's reference frames; in non-streaming mode
codec_pad for every text token first) and then each generated frame (models/qwen3_tts/prompts.py).

- **Admission.** Up to `slots` utterances hold a slot; later ones wait in arrival order.
- **Prompt runs.** An utterance still feeding its prefix and template feeds at most
  `prefill_chunk` positions a step, and all prompt runs of a step together at most
  `prefill_budget`: a long prompt is spread over several steps, and the frames of the decoding
  utterances never wait for more than one budget's worth of prompt. A prompt starts only once its
  first text position can be fed (non-streaming: once the text is complete), so no step feeds a
  prefix alone, and the step that feeds a prompt's last position also makes its first frame.
- **Decoding rows.** An utterance past its template feeds one position a step, once the frame it
  needs exists (always, after its first) and its text is known: text that runs dry makes it wait
  (no padding, which would tell the model the text is over). At most `max_rows` decode together;
  when more are ready, the ones furthest ahead of real time (audio made minus time since their
  first frame) wait a step.
- **Budgets.** Once its text is complete, an utterance ends (BUDGET) past `budget_base_frames +
  budget_frames_per_token * text tokens` frames (the models occasionally never end a sentence), and
  (LENGTH) when its history fills the slot (`max_positions`).
"""

from __future__ import annotations

import collections
import enum
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .sampler import SamplingParams

FRAME_SECONDS = 0.08


class FinishReason(str, enum.Enum):
    EOS = "eos"  # the model ended the utterance
    LENGTH = "length"  # max_new_tokens codes were generated, or the slot is full
    BUDGET = "budget"  # the runaway guard: more frames than the text warrants
    CANCELLED = "cancelled"
    ERROR = "error"  # its step failed, or its scores were not finite: it ends alone


@dataclass(frozen=True)
class SchedulerLimits:
    slots: int = 16
    max_positions: int = 4096
    prefill_chunk: int = 256
    prefill_budget: int = 512
    max_rows: int | None = None  # decoding rows per step; None: every slot
    budget_base_frames: int = 50
    budget_frames_per_token: float = 10.0


@dataclass(eq=False)
class Session:
    """One utterance, as the engine's thread sees it."""

    id: int
    params: SamplingParams
    seed: int
    prefix: torch.Tensor  # (P, hidden) vectors before the zipped positions
    template: torch.Tensor | None  # codec-track vectors of the template; None until known
    text_ids: list[int]  # the text track: reference transcript, then target text
    ref_text_len: int
    non_streaming: bool
    ref_template: torch.Tensor  # codec_bos and reference frame vectors (the template's tail)
    trace_id: str | None = None  # the request's, for logs
    closed: bool = False
    slot: int | None = None
    fed: int = 0  # positions fed to the talker: prefix, then zipped
    codes: int = 0  # codebook-0 codes generated (the last one may not become a frame)
    frames: list[np.ndarray] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    first_frame_time: float | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def prompt_length(self) -> int | None:
        """Prefix plus template positions; None while the template is not known."""
        return None if self.template is None else len(self.prefix) + len(self.template)

    @property
    def zipped_fed(self) -> int:
        return max(0, self.fed - len(self.prefix))

    @property
    def text_known(self) -> float:
        """Zipped positions whose text-track element is known."""
        return math.inf if self.closed else len(self.text_ids)

    @property
    def text_consumed(self) -> int:
        """How many target-text tokens the talker has read so far."""
        return max(0, min(self.zipped_fed, len(self.text_ids)) - self.ref_text_len)

    def ahead_seconds(self, now: float) -> float:
        if self.first_frame_time is None:
            return -math.inf
        return len(self.frames) * FRAME_SECONDS - (now - self.first_frame_time)


@dataclass
class Run:
    """What one session feeds in a step: `count` positions from `fed`."""

    session: Session
    count: int

    @property
    def ends_prompt(self) -> bool:
        return self.session.fed + self.count == self.session.prompt_length


@dataclass
class Plan:
    decode: list[Session]
    prompts: list[Run]

    def __bool__(self) -> bool:
        return bool(self.decode or self.prompts)

    def alone(self) -> list[Plan]:
        """The same work, one session per plan."""
        return [Plan([s], []) for s in self.decode] + [Plan([], [run]) for run in self.prompts]


class Scheduler:
    def __init__(self, limits: SchedulerLimits = SchedulerLimits()):
        self.limits = limits
        self.waiting: collections.deque[Session] = collections.deque()
        self.running: list[Session] = []
        self._free = list(range(limits.slots))

    def add(self, session: Session) -> None:
        self.waiting.append(session)

    def admit(self) -> list[Session]:
        """Waiting sessions that get a slot now, in arrival order."""
        admitted = []
        while self.waiting and self._free:
            session = self.waiting.popleft()
            session.slot = self._free.pop(0)
            self.running.append(session)
            admitted.append(session)
        return admitted

    @property
    def can_admit(self) -> bool:
        return bool(self.waiting) and bool(self._free)

    def move(self, session: Session, slot: int) -> None:
        """`session` moves to the free `slot` (its own becomes free)."""
        self._free.remove(slot)
        self._free.append(session.slot)
        self._free.sort()
        session.slot = slot

    def remove(self, session: Session) -> None:
        if session in self.running:
            self.running.remove(session)
            self._free.append(session.slot)
            self._free.sort()
        elif session in self.waiting:
            self.waiting.remove(session)

    def plan(self, now: float | None = None) -> Plan:
        decode, prompts, budget = [], [], self.limits.prefill_budget
        for session in self.running:
            if session.finished:
                continue
            end = session.prompt_length
            if end is None or session.fed < end:
                count = min(self._prompt_positions(session), self.limits.max_positions - session.fed)
                if count > 0 and budget:
                    run = Run(session, min(count, self.limits.prefill_chunk, budget))
                    prompts.append(run)
                    budget -= run.count
            elif session.zipped_fed < session.text_known and len(session.frames) > session.fed - end:
                decode.append(session)
        rows = self.limits.max_rows
        if rows is not None and len(decode) > rows:
            now = time.monotonic() if now is None else now
            decode = sorted(decode, key=lambda s: s.ahead_seconds(now))[:rows]
        return Plan(decode, prompts)

    def _prompt_positions(self, session: Session) -> int:
        """Prompt positions the session can feed now (0 until its first text position is known)."""
        if session.template is None:
            return 0
        prefix = len(session.prefix)
        known = prefix + min(len(session.template), session.text_known)
        if known <= prefix:
            return 0
        return known - session.fed

    def over_budget(self, session: Session) -> FinishReason | None:
        """Why a session must end now, by the guards (module docstring), if it must."""
        limits = self.limits
        if session.fed >= limits.max_positions:
            return FinishReason.LENGTH
        if session.closed:
            tokens = len(session.text_ids) - session.ref_text_len
            if len(session.frames) >= limits.budget_base_frames + limits.budget_frames_per_token * tokens:
                return FinishReason.BUDGET
        return None
