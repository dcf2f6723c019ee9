"""The on-device sampler: the reference's processors with per-row parameters, and Gumbel-max draws
from counter-based noise that follow the softmax probabilities exactly (statistically)."""

import dataclasses
import math

import pytest
import torch

from models.engine.sampler import (
    SamplingParams,
    Warping,
    gumbel_noise,
    open_unit_interval,
    param_rows,
    predictor_codes,
    predictor_noise,
    suppressed_mask,
    talker_codes,
)

VOCAB = 3072
EOS = 2150


def rows_of(params: list[SamplingParams]):
    floats, ints = zip(*(param_rows(p) for p in params))
    return torch.tensor(floats), torch.tensor(ints)


def reference_scores(logits, history, p: SamplingParams):
    """The processors one row at a time, written plainly after Hugging Face's classes."""
    scores = logits.float().clone()
    if history:
        seen = torch.tensor(sorted(set(history)))
        prev = scores[seen]
        scores[seen] = torch.where(prev < 0, prev * p.repetition_penalty, prev / p.repetition_penalty)
    if len(history) < 2:
        scores[EOS] = -math.inf
    scores[suppressed_mask(VOCAB, EOS)] = -math.inf
    scores = scores / p.temperature
    if p.top_k:
        scores[scores < torch.topk(scores, min(p.top_k, VOCAB)).values[-1]] = -math.inf
    if p.top_p < 1:
        ordered, order = torch.sort(scores)
        drop = ordered.softmax(-1).cumsum(-1) <= 1 - p.top_p
        drop[-1] = False
        scores[order[drop]] = -math.inf
    return scores


def test_per_row_processors_match_the_plain_ones():
    torch.manual_seed(0)
    params = [
        SamplingParams(top_k=50, top_p=1.0),
        SamplingParams(top_k=0, top_p=0.7, temperature=0.5),
        SamplingParams(top_k=3, top_p=0.9, repetition_penalty=1.3),
        SamplingParams(do_sample=False),
    ]
    logits = torch.randn(len(params), VOCAB) * 4
    histories = [[1, 2, 2, 40], [], [7], [1, 5]]
    seen = torch.zeros(len(params), VOCAB, dtype=torch.bool)
    for row, history in enumerate(histories):
        seen[row, history] = True
    floats, ints = rows_of(params)
    warping = Warping.of(params, VOCAB, predictor=False)
    # Every row greedy: the argmax of the penalised, suppressed scores (warpers are for draws).
    greedy_ints = ints.clone()
    greedy_ints[:, 0] = 0
    codes, finite = talker_codes(
        logits,
        seen,
        torch.tensor([len(h) for h in histories]),
        floats,
        greedy_ints,
        torch.zeros(4, dtype=torch.long),
        torch.zeros(4, dtype=torch.long),
        eos_id=EOS,
        suppressed=suppressed_mask(VOCAB, EOS),
        warping=warping,
    )
    for row, (p, history) in enumerate(zip(params, histories)):
        unwarped = dataclasses.replace(p, temperature=1.0, top_k=0, top_p=1.0)
        assert codes[row] == reference_scores(logits[row], history, unwarped).argmax()
    assert finite.all()


def test_greedy_rows_ignore_the_temperature():
    """Dividing by 0.9 rounds two adjacent scores in [0.9, 1) to one value, and argmax would then
    take the first: a greedy row keeps the true best code, as the reference's greedy search does."""
    temperature = torch.tensor(0.9)
    best = next(
        b
        for b in torch.linspace(0.9, 1.0, 1000)
        if b / temperature == torch.nextafter(b, torch.tensor(0.0)) / temperature
    )
    logits = torch.full((2, 2048), -10.0)
    logits[:, 3] = torch.nextafter(best, torch.tensor(0.0))
    logits[:, 5] = best
    params = [SamplingParams(do_sample=False, subtalker_do_sample=False), SamplingParams(subtalker_top_k=0, seed=1)]
    floats, ints = rows_of(params)
    warping = Warping.of(params, 2048, predictor=True)  # the second row samples: warpers run
    noise = predictor_noise(torch.tensor([0, 1]), torch.zeros(2, dtype=torch.long), 2048, warping)
    codes, _ = predictor_codes(logits, 1, floats, ints, noise, warping=warping)
    assert codes[0] == 5


def test_noise_is_a_function_of_seed_draw_and_codebook():
    seeds, draws = torch.tensor([1, 1, 2]), torch.tensor([0, 0, 0])
    a = gumbel_noise(seeds, draws, range(1), 2048)[:, 0]
    assert torch.equal(a[0], a[1]) and not torch.equal(a[0], a[2])
    assert not torch.equal(a[0], gumbel_noise(seeds, draws + 1, range(1), 2048)[0, 0])
    assert not torch.equal(a[0], gumbel_noise(seeds, draws, range(1, 2), 2048)[0, 0])
    # Codebooks computed together: each one's noise is what it is alone, to the bit.
    together = gumbel_noise(seeds, draws, range(1, 16), 2048)
    for codebook in range(1, 16):
        alone = gumbel_noise(seeds, draws, range(codebook, codebook + 1), 2048)
        assert torch.equal(together[:, codebook - 1], alone[:, 0])
    # Standard Gumbel: mean is the Euler-Mascheroni constant, variance pi^2 / 6.
    many = gumbel_noise(torch.arange(64), torch.zeros(64, dtype=torch.long), range(3, 4), 4096)
    assert abs(many.mean().item() - 0.5772) < 0.01
    assert abs(many.var().item() - math.pi**2 / 6) < 0.03


def test_noise_is_finite_for_every_hash_value():
    """Every value the hash's top 23 bits take (low bits set: the largest inputs) gives a uniform
    strictly inside (0, 1), so the noise is finite and a suppressed code's -inf score stays -inf.
    With 24 bits plus 2**-25 the top value rounded to 1.0: +inf noise, NaN, and argmax picked it."""
    bits = (torch.arange(2**23, dtype=torch.int64) << 9) | 0x1FF
    uniform = open_unit_interval(bits)
    assert uniform.min() > 0 and uniform.max() < 1
    assert bool((uniform[1:] > uniform[:-1]).all())  # no two values collapse into one
    noise = -torch.log(-torch.log(uniform))
    assert torch.isfinite(noise).all()
    assert bool(torch.isneginf(float("-inf") + noise).all())


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(subtalker_top_k=0),
        SamplingParams(subtalker_top_k=20),
        SamplingParams(subtalker_top_k=0, subtalker_top_p=0.8, subtalker_temperature=1.3),
    ],
)
def test_draws_follow_the_processed_probabilities(params):
    """Over many draws (one per draw counter), each code comes up as often as its probability."""
    torch.manual_seed(1)
    vocab, draws = 64, 40_000
    logits = torch.randn(vocab) * 1.5
    floats, ints = rows_of([params] * draws)
    warping = Warping.of([params], vocab, predictor=True)
    noise = predictor_noise(torch.full((draws,), 99), torch.arange(draws), vocab, warping)
    codes, _ = predictor_codes(logits.expand(draws, vocab), 1, floats, ints, noise, warping=warping)
    scores = logits / params.subtalker_temperature
    if params.subtalker_top_k:
        scores[scores < torch.topk(scores, params.subtalker_top_k).values[-1]] = -math.inf
    if params.subtalker_top_p < 1:
        ordered, order = torch.sort(scores)
        drop = ordered.softmax(-1).cumsum(-1) <= 1 - params.subtalker_top_p
        drop[-1] = False
        scores[order[drop]] = -math.inf
    expected = scores.softmax(-1) * draws
    observed = torch.bincount(codes, minlength=vocab).float()
    assert observed[expected == 0].sum() == 0  # never a code the warpers removed
    kept = expected > 0
    chi2 = (((observed - expected)[kept] ** 2) / expected[kept]).sum().item()
    dof = int(kept.sum()) - 1
    assert chi2 < dof + 5 * math.sqrt(2 * dof)  # far inside the tail of chi-square(dof)
