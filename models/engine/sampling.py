"""Choosing codes from logits, exactly as the reference's Hugging Face `generate` does.

Codebook 0 (talker), in order: logits to float32, repetition penalty over the codes generated so
far in this utterance, EOS forbidden until `MIN_NEW_TOKENS` codes exist, every control id except
EOS suppressed; then, when sampling, temperature, top-k and top-p (skipped at 1.0); then softmax
and a draw, or argmax when greedy. Codebooks 1-15 (code predictor): temperature, top-k, top-p only.

Unlike the reference, which draws from the global torch RNG, every utterance may carry its own
seed, so a request is reproducible whatever else the engine is running.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from shared.limits import sampling_problem

MIN_NEW_TOKENS = 2


@dataclass(frozen=True)
class SamplingParams:
    do_sample: bool = True
    temperature: float = 0.9
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.05
    subtalker_do_sample: bool = True
    subtalker_temperature: float = 0.9
    subtalker_top_k: int = 50
    subtalker_top_p: float = 1.0
    max_new_tokens: int = 8192
    seed: int | None = None

    # generation_config.json spells the predictor's switch `subtalker_dosample`.
    _FILE_NAMES = {"subtalker_dosample": "subtalker_do_sample"}

    @classmethod
    def from_generation_config(cls, raw: dict) -> SamplingParams:
        names = {f.name for f in fields(cls)}
        values = {}
        for key, value in raw.items():
            key = cls._FILE_NAMES.get(key, key)
            if key in names:
                values[key] = value
        return cls(**values)

    def with_overrides(self, **overrides) -> SamplingParams:
        """A copy with the given fields replaced; None means "keep the default"."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def validate(self) -> None:
        """ValueError naming the first value outside its range (shared/limits.py)."""
        for prefix in ("", "subtalker_"):
            for name in ("temperature", "top_k", "top_p"):
                value = getattr(self, prefix + name)
                problem = sampling_problem(name, value)
                if problem:
                    raise ValueError(f"{prefix}{name} {problem}, got {value}")
        problem = sampling_problem("repetition_penalty", self.repetition_penalty)
        if problem:
            raise ValueError(f"repetition_penalty {problem}, got {self.repetition_penalty}")
        if self.max_new_tokens < 2:
            raise ValueError(f"max_new_tokens must be >= 2, got {self.max_new_tokens}")

    def make_generator(self, device) -> torch.Generator | None:
        if self.seed is None:
            return None
        generator = torch.Generator(device=device)
        generator.manual_seed(self.seed)
        return generator


def warp(scores: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Temperature, then top-k (ties with the k-th kept), then top-p; scores (..., V) float32."""
    if temperature != 1.0:
        scores = scores / temperature
    if top_k:
        k = min(top_k, scores.shape[-1])
        kth = torch.topk(scores, k).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative <= (1 - top_p)
        drop_sorted[..., -1:] = False  # always keep the most likely token
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    return scores


def talker_scores(
    logits: torch.Tensor, history: list[int], params: SamplingParams, eos_id: int, suppressed: torch.Tensor
) -> torch.Tensor:
    """The processed codebook-0 scores of one utterance: logits (V,) -> float32 (V,)."""
    scores = logits.float()
    if history and params.repetition_penalty != 1.0:
        seen = torch.tensor(history, dtype=torch.long, device=scores.device)
        previous = scores.gather(0, seen)
        penalised = torch.where(
            previous < 0, previous * params.repetition_penalty, previous / params.repetition_penalty
        )
        scores = scores.scatter(0, seen, penalised)
    if len(history) < MIN_NEW_TOKENS:
        scores[eos_id] = float("-inf")
    scores[suppressed] = float("-inf")
    if params.do_sample:
        scores = warp(scores, params.temperature, params.top_k, params.top_p)
    return scores


def predictor_scores(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    scores = logits.float()
    if params.subtalker_do_sample:
        scores = warp(scores, params.subtalker_temperature, params.subtalker_top_k, params.subtalker_top_p)
    return scores


def choose(scores: torch.Tensor, do_sample: bool, generator: torch.Generator | None) -> int:
    """Draw from softmax(scores), or take the argmax when greedy. scores: (V,)."""
    if not do_sample:
        return int(scores.argmax())
    probs = scores.softmax(dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def suppressed_ids(vocab_size: int, eos_id: int, device=None) -> torch.Tensor:
    """Control ids the talker may never emit: the top 1024 of its vocabulary except EOS."""
    ids = [i for i in range(vocab_size - 1024, vocab_size) if i != eos_id]
    return torch.tensor(ids, dtype=torch.long, device=device)
