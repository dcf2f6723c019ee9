"""Serving semantics of the incremental engine, on a small random talker (no reference needed).

Parity with the reference is in test_generation_parity.py; here: text arriving in pieces, waiting
when text runs dry, batching and joining, cancellation, limits and seeds.
"""

import pytest
import torch

from models.engine.engine import Engine, FinishReason
from models.engine.sampling import SamplingParams
from models.qwen3_tts.configuration_qwen3_tts import DecoderConfig, TalkerConfig
from models.qwen3_tts.modeling_qwen3_tts import Talker
from models.qwen3_tts.prompts import ClonePrompt, PromptPlan

GREEDY = SamplingParams(do_sample=False, subtalker_do_sample=False, max_new_tokens=12)
TEXT = [5, 17, 9, 30, 2, 44, 8, 21]


@pytest.fixture(scope="module")
def talker():
    torch.manual_seed(0)
    predictor = DecoderConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        intermediate_size=64,
        rms_norm_eps=1e-6,
        rope_theta=1e6,
        vocab_size=2048,
    )
    config = TalkerConfig(
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=12,
        intermediate_size=96,
        rms_norm_eps=1e-6,
        rope_theta=1e6,
        vocab_size=3072,
        text_vocab_size=64,
        text_hidden_size=40,
        num_code_groups=16,
        codec_pad_id=2148,
        codec_bos_id=2149,
        codec_eos_token_id=2150,
        codec_think_id=2154,
        codec_nothink_id=2155,
        codec_think_bos_id=2156,
        codec_think_eos_id=2157,
        code_predictor=predictor,
    )
    model = Talker(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5 if p.dim() == 2 else 0.05) if p.dim() > 1 else p.fill_(1.0)
        model.codec_head.weight[2150] = 0  # keep EOS out of greedy runs
    return model


def make_engine(talker):
    return Engine(talker, pad_id=2148, bos_id=2149, eos_id=2150, text_ids={"tts_pad": 61, "tts_bos": 62, "tts_eos": 63})


def plan(non_streaming=False, clone=None):
    return PromptPlan(
        role_ids=[60, 1, 2],
        codec_tags=[2155, 2156, 2157],
        speaker_codec_id=2500,
        clone=clone,
        non_streaming=non_streaming,
    )


def engine_with_sessions(talker, count):
    """An engine with `count` identical greedy sessions whose whole text is in and closed."""
    engine = make_engine(talker)
    sessions = [engine.start(plan(), GREEDY) for _ in range(count)]
    for session in sessions:
        engine.add_text(session, TEXT)
        engine.close_text(session)
    return engine, sessions


def run_whole(talker, plan_, params=GREEDY, text=TEXT):
    engine = make_engine(talker)
    session = engine.start(plan_, params)
    engine.add_text(session, text)
    engine.close_text(session)
    while engine.active:
        engine.step()
    return torch.stack(session.frames), session


@pytest.mark.parametrize("non_streaming", [False, True])
def test_text_in_pieces_with_pauses_matches_whole_text(talker, non_streaming):
    expected, _ = run_whole(talker, plan(non_streaming))
    engine = make_engine(talker)
    session = engine.start(plan(non_streaming), GREEDY)
    for piece in (TEXT[:1], TEXT[1:3], TEXT[3:4], TEXT[4:]):
        engine.add_text(session, piece)
        for _ in range(3):  # more steps than the text allows: the session must wait, not end
            engine.step()
        assert not session.finished
    engine.close_text(session)
    while engine.active:
        engine.step()
    assert torch.equal(torch.stack(session.frames), expected)


def test_session_waits_when_text_runs_dry(talker):
    engine = make_engine(talker)
    session = engine.start(plan(), GREEDY)
    engine.add_text(session, TEXT[:2])
    produced = []
    for _ in range(10):
        produced += [o for o in engine.step() if o.session is session]
    # Streaming: the talker reads one text token per frame, so two tokens give two frames; then
    # the session has nothing to read and is left alone (no padding, no early end).
    assert len(session.frames) == 2 and session.fed == 2
    assert not session.finished and session.text_consumed == 2
    assert engine.step() == []
    engine.add_text(session, TEXT[2:3])
    assert len([o for o in engine.step() if o.frame is not None]) == 1


def test_non_streaming_waits_for_the_whole_text(talker):
    engine = make_engine(talker)
    session = engine.start(plan(non_streaming=True), GREEDY)
    engine.add_text(session, TEXT)
    for _ in range(3):
        engine.step()
    assert session.frames == []
    engine.close_text(session)
    engine.step()
    assert len(session.frames) == 1


def test_batched_sessions_and_late_joiners_match_solo_runs(talker):
    texts = [TEXT, TEXT[:3], TEXT[2:] + TEXT]
    solo = [run_whole(talker, plan(ns), text=t)[0] for t, ns in zip(texts, (False, True, False))]
    engine = make_engine(talker)
    sessions = []
    for i, (text, ns) in enumerate(zip(texts, (False, True, False))):
        session = engine.start(plan(ns), GREEDY)
        engine.add_text(session, text)
        engine.close_text(session)
        sessions.append(session)
        for _ in range(3 * i):  # later sessions join while earlier ones are mid-utterance
            engine.step()
    while engine.active:
        engine.step()
    for session, expected in zip(sessions, solo):
        assert torch.equal(torch.stack(session.frames), expected)


def test_in_context_clone_prompt_runs_and_continues_reference_frames(talker):
    ref = torch.randint(0, 2048, (5, 16))
    clone = ClonePrompt(speaker_embedding=torch.randn(48), ref_codes=ref, ref_text_ids=[3, 4])
    frames, session = run_whole(talker, plan(clone=clone))
    assert frames.shape == (GREEDY.max_new_tokens - 1, 16)
    assert session.text_consumed == len(TEXT)


def test_cancel_frees_the_session_and_spares_the_others(talker):
    expected, _ = run_whole(talker, plan())
    engine, (keep, drop) = engine_with_sessions(talker, 2)
    engine.step()
    engine.step()
    engine.cancel(drop)
    assert drop.finish_reason is FinishReason.CANCELLED and drop.cache is None
    assert engine.active == 1
    while engine.active:
        engine.step()
    assert torch.equal(torch.stack(keep.frames), expected)


def test_max_new_tokens_ends_with_length_and_reference_frame_count(talker):
    frames, session = run_whole(
        talker, plan(), SamplingParams(do_sample=False, subtalker_do_sample=False, max_new_tokens=5)
    )
    assert session.finish_reason is FinishReason.LENGTH
    assert len(frames) == 4  # the last sampled code is never expanded, as in the reference


class PreferEOS(torch.nn.Module):
    """A codec head whose EOS logit always wins: the model 'wants' to stop at once."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, hidden):
        logits = self.head(hidden)
        logits[..., 2150] = logits.abs().max() + 1
        return logits


def test_eos_ends_the_utterance(talker):
    original = talker.codec_head
    talker.codec_head = PreferEOS(original)
    try:
        frames, session = run_whole(talker, plan())
    finally:
        talker.codec_head = original
    assert session.finish_reason is FinishReason.EOS
    # EOS is forbidden for the first two codes (min_new_tokens = 2), so exactly two frames exist.
    assert len(frames) == 2


def test_seeded_sampling_is_reproducible(talker):
    sampled = SamplingParams(max_new_tokens=8, seed=1234, top_k=0)
    a, _ = run_whole(talker, plan(), sampled)
    b, _ = run_whole(talker, plan(), sampled)
    c, _ = run_whole(talker, plan(), SamplingParams(max_new_tokens=8, seed=99, top_k=0))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_text_after_close_is_refused(talker):
    engine = make_engine(talker)
    session = engine.start(plan(), GREEDY)
    engine.close_text(session)
    with pytest.raises(ValueError):
        engine.add_text(session, [1])


def test_cancel_while_a_step_is_running(talker):
    """A cancel from another thread can land mid-step: the step must neither crash nor emit
    frames for the cancelled session, and the others must be unaffected."""
    expected, _ = run_whole(talker, plan())
    engine, (keep, drop) = engine_with_sessions(talker, 2)
    real_forward = talker.forward_step
    calls = []

    def forward_then_cancel(*args):
        out = real_forward(*args)
        if not calls:
            # As if the client hung up while the talker ran the first prefill of this step,
            # before the step reached the second session's own prefill.
            engine.cancel(drop)
        calls.append(1)
        return out

    talker.forward_step = forward_then_cancel
    try:
        outputs = engine.step()
    finally:
        del talker.forward_step
    assert all(o.session is keep for o in outputs)
    assert drop.finish_reason is FinishReason.CANCELLED and drop.cache is None
    while engine.active:
        engine.step()
    assert torch.equal(torch.stack(keep.frames), expected)


def test_bad_inputs_are_refused_at_the_boundary_not_inside_a_step(talker):
    """One client's bad data must never reach step(), where an error would stop every session."""
    engine = make_engine(talker)
    session = engine.start(plan(), GREEDY)
    for bad in ([64], [-1], [3, 1000]):  # the text vocabulary has 64 ids
        with pytest.raises(ValueError, match="token id"):
            engine.add_text(session, bad)
    assert session.text_ids == []
    bad_voices = {
        "speaker embedding": ClonePrompt(speaker_embedding=torch.full((48,), float("nan"))),
        r"shape \(47,\)": ClonePrompt(speaker_embedding=torch.randn(47)),
        "codes": ClonePrompt(speaker_embedding=torch.randn(48), ref_codes=torch.full((4, 16), 2048), ref_text_ids=[1]),
        "shape": ClonePrompt(
            speaker_embedding=torch.randn(48), ref_codes=torch.zeros(4, 8, dtype=torch.long), ref_text_ids=[1]
        ),
    }
    for match, voice in bad_voices.items():
        with pytest.raises(ValueError, match=match):
            engine.start(plan(clone=voice), GREEDY)
    assert engine.active == 1
