"""Choosing codes from logits on the device, for every row of a step at once.

The processors are the reference's (Hugging Face `generate`), applied to all rows together with
per-row parameters held as tensors:

- codebook 0 (talker): logits to float32; repetition penalty over the codes this utterance has
  generated (a per-row mask of seen codes, so nothing goes back to the host); EOS forbidden until
  `MIN_NEW_TOKENS` codes exist; every control id except EOS suppressed;
- codebooks 1-15 (code predictor): no penalty, no suppression;
- then, for rows that sample, temperature, top-k (ties with the k-th kept) and top-p (rows whose
  top_p is 1.0 skip it, as the reference does), and a draw; greedy rows take the argmax.

The draw is the Gumbel-max trick: argmax(scores + Gumbel noise) picks a code with exactly the
softmax probabilities, in one kernel for the whole batch. The noise is counter-based: a hash of
the row's seed, its draw counter (one per frame), the codebook and the code. A seeded request
therefore gives the same audio whatever else the engine is running, and no random state lives on
the host. Nothing here syncs with the host.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from shared.limits import sampling_problem

MIN_NEW_TOKENS = 2
_MASK32 = 0xFFFFFFFF
_MIX = 0x45D9F3B  # below 2**31: products of 32-bit values stay inside int64
_GOLDEN = 0x9E3779B1


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


# Per-row parameter columns (floats and ints), as the model runner stores them per slot.
FLOAT_PARAMS = ("temperature", "top_p", "repetition_penalty", "subtalker_temperature", "subtalker_top_p")
INT_PARAMS = ("do_sample", "top_k", "subtalker_do_sample", "subtalker_top_k")
_F = {name: i for i, name in enumerate(FLOAT_PARAMS)}
_I = {name: i for i, name in enumerate(INT_PARAMS)}


def param_rows(params: SamplingParams) -> tuple[list[float], list[int]]:
    """The float and int columns of one row (FLOAT_PARAMS, INT_PARAMS)."""
    return [float(getattr(params, n)) for n in FLOAT_PARAMS], [int(getattr(params, n)) for n in INT_PARAMS]


@dataclass(frozen=True)
class Warping:
    """What the rows of a step need beyond argmax, known on the host when the step is planned, so
    that a step's shape (and a captured graph) does not depend on tensor values."""

    sample: bool  # some row samples: draw noise
    top_k: int  # candidates top-k keeps at most (0: no row uses top-k)
    top_p: bool  # some row has top_p < 1

    @classmethod
    def of(cls, params: list[SamplingParams], vocab: int, predictor: bool) -> Warping:
        prefix = "subtalker_" if predictor else ""
        sampling = [p for p in params if getattr(p, prefix + "do_sample")]
        ks = [getattr(p, prefix + "top_k") or vocab for p in sampling]
        top_k = min(vocab, 1 << (max(ks) - 1).bit_length()) if ks else 0
        return cls(bool(sampling), top_k, any(getattr(p, prefix + "top_p") < 1.0 for p in sampling))


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xorshift-multiply), in int64 arithmetic that cannot overflow."""
    x = x & _MASK32
    x = (((x >> 16) ^ x) * _MIX) & _MASK32
    x = (((x >> 16) ^ x) * _MIX) & _MASK32
    return (x >> 16) ^ x


def gumbel_noise(seeds: torch.Tensor, draws: torch.Tensor, codebooks: range, vocab: int) -> torch.Tensor:
    """Gumbel(0, 1) noise of shape (rows, len(codebooks), vocab), a pure function of (seed, draw,
    codebook, code), element by element: computing several codebooks at once gives each the same
    values as alone, in one pass instead of one per codebook."""
    books = torch.arange(codebooks.start, codebooks.stop, device=seeds.device, dtype=torch.int64)
    row = _mix32(_mix32(seeds[:, None] ^ _mix32(draws[:, None] * 16 + books)) ^ (seeds[:, None] >> 32))
    codes = torch.arange(vocab, device=seeds.device, dtype=torch.int64)
    bits = _mix32(row[:, :, None] ^ ((codes * _GOLDEN) & _MASK32))
    return -torch.log(-torch.log(open_unit_interval(bits)))


def open_unit_interval(bits: torch.Tensor) -> torch.Tensor:
    """float32 uniforms strictly inside (0, 1) from 32-bit integers: the top 23 bits, centred in
    their interval, so the largest is 1 - 2**-24, which float32 holds exactly. (24 bits plus
    2**-25 round to 1.0 at the top: noise +inf, which turned a suppressed code's -inf score into
    NaN, and argmax picks NaN.)"""
    return ((bits >> 9).to(torch.float32) + 0.5) * 2.0**-23


def _warp(
    scores: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, warping: Warping
) -> torch.Tensor:
    """Temperature, top-k, top-p with per-row values; scores (rows, vocab) float32."""
    scores = scores / temperature[:, None]
    if warping.top_k:
        k = torch.where(top_k > 0, top_k.clamp(max=warping.top_k), warping.top_k)
        kth = torch.topk(scores, warping.top_k).values.gather(-1, (k - 1)[:, None])
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if warping.top_p:
        ascending, order = torch.sort(scores)
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
        drop = (cumulative <= (1 - top_p)[:, None]) & (top_p < 1.0)[:, None]
        drop[:, -1] = False  # the most likely code always stays
        scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return scores


def _choose(
    scores: torch.Tensor,
    floats: torch.Tensor,
    ints: torch.Tensor,
    noise: torch.Tensor | None,
    predictor: bool,
    warping: Warping,
) -> torch.Tensor:
    """Greedy rows: the argmax of `scores` (no warper touches them, as in the reference: dividing
    by a temperature can round the two best scores to one value and move the argmax). Sampling
    rows: a draw, with `noise`, from the scores warped with the talker's parameters or the
    predictor's (subtalker_*)."""
    greedy = scores.argmax(dim=-1)
    if not warping.sample:
        return greedy
    prefix = "subtalker_" if predictor else ""
    temperature, top_p = floats[:, _F[prefix + "temperature"]], floats[:, _F[prefix + "top_p"]]
    warped = _warp(scores, temperature, ints[:, _I[prefix + "top_k"]], top_p, warping)
    return torch.where(ints[:, _I[prefix + "do_sample"]].bool(), _draw(warped, noise), greedy)


def _draw(warped: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Gumbel-max: one code per row from softmax(warped), (rows, vocab) -> (rows,)."""
    return (warped + noise).argmax(dim=-1)


def talker_codes(
    logits: torch.Tensor,
    seen: torch.Tensor,
    generated: torch.Tensor,
    floats: torch.Tensor,
    ints: torch.Tensor,
    seeds: torch.Tensor,
    draws: torch.Tensor,
    *,
    eos_id: int,
    suppressed: torch.Tensor,
    warping: Warping,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codebook 0 for each row: (codes (rows,), finite (rows,) bool: the scores were usable).

    `seen` (rows, vocab) marks the codes each row generated so far; `generated` counts them;
    `floats`/`ints` hold the rows' FLOAT_PARAMS/INT_PARAMS columns."""
    scores = logits.float()
    finite = torch.isfinite(scores).all(dim=-1)
    penalty = floats[:, _F["repetition_penalty"], None]
    penalised = torch.where(scores < 0, scores * penalty, scores / penalty)
    scores = torch.where(seen, penalised, scores)
    scores[:, eos_id] = torch.where(generated < MIN_NEW_TOKENS, float("-inf"), scores[:, eos_id])
    scores = scores.masked_fill(suppressed, float("-inf"))
    noise = gumbel_noise(seeds, draws, range(1), scores.shape[-1])[:, 0] if warping.sample else None
    return _choose(scores, floats, ints, noise, False, warping), finite


def predictor_noise(seeds: torch.Tensor, draws: torch.Tensor, vocab: int, warping: Warping) -> torch.Tensor | None:
    """The Gumbel noise of codebooks 1-15 for every row, (rows, 15, vocab), computed before the
    predictor's passes in one go; None when no row samples."""
    return gumbel_noise(seeds, draws, range(1, 16), vocab) if warping.sample else None


def predictor_codes(
    logits: torch.Tensor,
    codebook: int,
    floats: torch.Tensor,
    ints: torch.Tensor,
    noise: torch.Tensor | None,
    *,
    warping: Warping,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codebook `codebook` (1-15) for each row: (codes, finite); `noise` from predictor_noise()."""
    scores = logits.float()
    finite = torch.isfinite(scores).all(dim=-1)
    noise = None if noise is None else noise[:, codebook - 1]
    return _choose(scores, floats, ints, noise, True, warping), finite


def suppressed_mask(vocab_size: int, eos_id: int, device=None) -> torch.Tensor:
    """Control ids the talker may never emit: the top 1024 of its vocabulary except EOS."""
    mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    mask[vocab_size - 1024 :] = True
    mask[eos_id] = False
    return mask
