"""Serving semantics of the incremental engine, on a small random talker (no reference needed).

Parity with the reference is in test_generation_parity.py; here: text arriving in pieces, waiting
when text runs dry, batching and joining, slots, cancellation, limits, seeds, chunked prefill and
the failure of one session's step.
"""

import numpy as np
import pytest
import torch

from models.cpu_kernels import kernels_built, use_fused_ops
from models.engine import model_runner
from models.engine.engine import Engine, FinishReason, SchedulerLimits
from models.engine.model_runner import _one_query
from models.engine.sampler import SamplingParams
from models.qwen3_tts.configuration_qwen3_tts import Qwen3TTSDecoderConfig, Qwen3TTSTalkerConfig
from models.qwen3_tts.modeling_qwen3_tts import Qwen3TTSTalker
from models.qwen3_tts.prompts import ClonePrompt, PromptPlan

GREEDY = SamplingParams(do_sample=False, subtalker_do_sample=False, max_new_tokens=12)
TEXT = [5, 17, 9, 30, 2, 44, 8, 21]


@pytest.fixture(scope="module")
def talker():
    return tiny_talker()


def tiny_talker(dtype=torch.float32):
    torch.manual_seed(0)
    predictor = Qwen3TTSDecoderConfig(
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
    config = Qwen3TTSTalkerConfig(
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
    model = Qwen3TTSTalker(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5 if p.dim() == 2 else 0.05) if p.dim() > 1 else p.fill_(1.0)
        model.codec_head.weight[2150] = 0  # keep EOS out of greedy runs
    model.to(dtype).fuse()
    return model


def make_engine(talker, **limits):
    return Engine(
        talker,
        pad_id=2148,
        bos_id=2149,
        eos_id=2150,
        text_ids={"tts_pad": 61, "tts_bos": 62, "tts_eos": 63},
        limits=SchedulerLimits(**limits),
    )


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


def start_whole(engine, params=GREEDY, plan_=None):
    """A session started with the whole TEXT, closed."""
    session = engine.start(plan_ or plan(), params)
    engine.add_text(session, TEXT)
    engine.close_text(session)
    return session


def run_whole(talker, plan_, params=GREEDY, text=TEXT):
    engine = make_engine(talker)
    session = engine.start(plan_, params)
    engine.add_text(session, text)
    engine.close_text(session)
    while engine.active:
        engine.step()
    return np.stack(session.frames), session


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
    assert np.array_equal(np.stack(session.frames), expected)


def test_session_waits_when_text_runs_dry(talker):
    engine = make_engine(talker)
    session = engine.start(plan(), GREEDY)
    engine.add_text(session, TEXT[:2])
    produced = []
    for _ in range(10):
        produced += [o for o in engine.step() if o.session is session]
    # Streaming: the talker reads one text token per frame, so two tokens give two frames; then
    # the session has nothing to read and is left alone (no padding, no early end).
    assert len(session.frames) == 2 and session.zipped_fed == 2
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
        assert np.array_equal(np.stack(session.frames), expected)


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
    assert drop.finish_reason is FinishReason.CANCELLED and drop not in engine.sessions
    assert engine.active == 1
    while engine.active:
        engine.step()
    assert np.array_equal(np.stack(keep.frames), expected)


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
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_text_after_close_is_refused(talker):
    engine = make_engine(talker)
    session = engine.start(plan(), GREEDY)
    engine.close_text(session)
    with pytest.raises(ValueError):
        engine.add_text(session, [1])


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


def test_seeded_sampling_gives_the_same_audio_alone_or_in_a_batch(talker):
    """Draws are a function of the session's seed and its own counters, never of its neighbours."""
    seeded = SamplingParams(max_new_tokens=8, seed=1234)
    alone, _ = run_whole(talker, plan(), seeded)
    engine = make_engine(talker)
    sessions = []
    for params, text in (
        (SamplingParams(max_new_tokens=10, seed=7, top_k=5), TEXT[:4]),
        (seeded, TEXT),
        (SamplingParams(max_new_tokens=6, temperature=1.5, top_p=0.8), TEXT[2:]),
    ):
        session = engine.start(plan(), params)
        engine.add_text(session, text)
        engine.close_text(session)
        sessions.append(session)
        engine.step()  # the seeded session joins others mid-utterance
    while engine.active:
        engine.step()
    assert np.array_equal(np.stack(sessions[1].frames), alone)


def test_a_failing_step_ends_only_its_session(talker, caplog):
    """An exception in one session's step: it ends (ERROR), the others go on with the right frames."""
    expected, _ = run_whole(talker, plan())
    engine = make_engine(talker)
    doomed = SamplingParams(do_sample=False, subtalker_do_sample=False, max_new_tokens=12)  # its own object
    keep = [engine.start(plan(), GREEDY) for _ in range(2)]
    victim = engine.start(plan(), doomed)
    for session in (*keep, victim):
        engine.add_text(session, TEXT)
        engine.close_text(session)
    real_step = engine.runner.step

    def step(decode, prefills, params, view):
        if any(p is doomed for p in params) and engine.runner.step_count >= 3:
            raise RuntimeError("injected failure in one session's step")
        engine.runner.step_count += 1
        return real_step(decode, prefills, params, view)

    engine.runner.step_count = 0
    engine.runner.step = step
    while engine.active:
        engine.step()
    assert victim.finish_reason is FinishReason.ERROR and 0 < len(victim.frames) < len(expected)
    for session in keep:
        assert session.finish_reason is FinishReason.LENGTH
        assert np.array_equal(np.stack(session.frames), expected)
    assert any("failed in its step" in r.getMessage() for r in caplog.records)


def test_non_finite_scores_end_only_their_session(talker):
    expected, _ = run_whole(talker, plan())
    original = talker.codec_head

    class FirstRowNaN(torch.nn.Module):
        def forward(self, hidden):
            logits = original(hidden)
            if len(logits) > 1:
                logits[0] = float("nan")
            return logits

    engine, (first, second) = engine_with_sessions(talker, 2)
    engine.step()  # both prompts, no NaN yet: two rows only from the first decoding step on
    talker.codec_head = FirstRowNaN()
    try:
        while engine.active:
            engine.step()
    finally:
        talker.codec_head = original
    assert first.finish_reason is FinishReason.ERROR
    assert np.array_equal(np.stack(second.frames), expected)


def test_long_prompts_are_fed_in_chunks_between_decoding_steps(talker):
    """A long prompt never holds up the decoding sessions: each gets a frame every step while the
    prompt goes in at most `prefill_chunk` positions a step, and chunking changes no code."""
    long_plan = PromptPlan(
        instruct_ids=list(range(3, 60)) * 5, role_ids=[60, 1, 2], codec_tags=[2155, 2156, 2157], speaker_codec_id=2500
    )
    expected_long, _ = run_whole(talker, long_plan)
    expected_short, _ = run_whole(talker, plan())
    engine = make_engine(talker, prefill_chunk=32, prefill_budget=32)
    short = [engine.start(plan(), GREEDY) for _ in range(2)]
    for session in short:
        engine.add_text(session, TEXT)
        engine.close_text(session)
    engine.step()
    long = engine.start(long_plan, GREEDY)
    engine.add_text(long, TEXT)
    engine.close_text(long)
    prompt = len(long_plan.instruct_ids) + 8 + 1
    steps = 0
    while not long.frames:
        before = [len(s.frames) for s in short]
        fed = long.fed
        engine.step()
        steps += 1
        assert [len(s.frames) for s in short] == [n + 1 for n in before]  # a frame every step
        assert long.fed - fed <= 32
    assert steps == -(-prompt // 32)
    while engine.active:
        engine.step()
    assert np.array_equal(np.stack(long.frames), expected_long)
    for session in short:
        assert np.array_equal(np.stack(session.frames), expected_short)


def test_no_step_feeds_a_prefix_alone(talker):
    """A prompt starts once its first text position is known, and its first step makes a frame."""
    engine = make_engine(talker)
    streaming = engine.start(plan(), GREEDY)
    non_streaming = engine.start(plan(non_streaming=True), GREEDY)
    engine.step()
    assert streaming.fed == non_streaming.fed == 0  # no text yet: nothing fed
    engine.add_text(streaming, TEXT[:1])
    engine.add_text(non_streaming, TEXT)
    engine.step()
    assert len(streaming.frames) == 1 and non_streaming.fed == 0  # non-streaming waits for the end
    engine.close_text(non_streaming)
    engine.step()
    assert len(non_streaming.frames) == 1


def test_slots_rearranged_as_sessions_come_go_and_wait(talker):
    """Sessions that stall, leave and join make the engine move others between slots; no session's
    frames change for it."""
    expected, _ = run_whole(talker, plan())
    engine = make_engine(talker, slots=3)
    a, b, c = (engine.start(plan(), GREEDY) for _ in range(3))
    engine.add_text(a, TEXT[:2])  # a stalls after two frames: b and c move ahead of it
    for session in (b, c):
        engine.add_text(session, TEXT)
        engine.close_text(session)
    for _ in range(4):
        engine.step()
    engine.cancel(b)  # frees slot of b
    d = engine.start(plan(), GREEDY)
    engine.add_text(d, TEXT)
    engine.close_text(d)
    for _ in range(3):
        engine.step()
    engine.add_text(a, TEXT[2:])
    engine.close_text(a)
    while engine.active:
        engine.step()
    for session in (a, c, d):
        assert np.array_equal(np.stack(session.frames), expected)


@pytest.mark.slow
def test_compiled_decode_steps_give_the_eager_codes(talker, monkeypatch):
    """torch.compile(fullgraph=True) of the decode step (padded to its bucket) changes no code.

    Compiled here with the aot_eager backend (dynamo's whole-graph capture and AOT tracing, eager
    kernels): inductor's C++ build of this graph takes 4-14 minutes on a 2-core machine. With
    inductor the codes were the same too (run by hand; make bench-engine checks the graph)."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **options: compile_(fn, **{**options, "backend": "aot_eager"}))
    sampled = SamplingParams(max_new_tokens=GREEDY.max_new_tokens, seed=11)  # rows end together: one bucket
    expected = {}
    for compiled in (False, True):
        engine = Engine(
            talker,
            pad_id=2148,
            bos_id=2149,
            eos_id=2150,
            text_ids={"tts_pad": 61, "tts_bos": 62, "tts_eos": 63},
            limits=SchedulerLimits(slots=4),
            compiled=compiled,
        )
        sessions = []
        for params in (GREEDY, sampled, GREEDY):  # three rows: padded to a bucket of four
            session = engine.start(plan(), params)
            engine.add_text(session, TEXT)
            engine.close_text(session)
            sessions.append(session)
        while engine.active:
            engine.step()
        frames = [np.stack(s.frames) for s in sessions]
        if not compiled:
            expected = frames
    for got, want in zip(frames, expected):
        assert np.array_equal(got, want)


class _EagerStep(model_runner.EagerReplay):
    """A captured step played on the CPU (EagerReplay), with the real capture's warm-up on the
    zeroed buffers (whose state updates the capture undoes). Records the buckets captured."""

    buckets: list[tuple] = []

    def _capture(self, runner, function):
        type(self).buckets.append(self.key[:-1])
        function(*self.inputs)
        super()._capture(runner, function)


def test_captured_steps_give_the_eager_codes(talker, monkeypatch):
    """The graph path of a step (rows padded to a bucket, inputs copied into the captured step's
    buffers, the view bucketed, captured once per bucket) gives the eager codes: decode steps of
    greedy and seeded rows, rows that end at different steps (buckets of 4, 2 and 1), and the
    steps with prompt runs (runs padded to a bucket and a length, chunks that do not end their
    prompt, a prompt that ends beside decoding rows: a row that joins late)."""
    monkeypatch.setattr(model_runner, "_CapturedStep", _EagerStep)
    monkeypatch.setattr(_EagerStep, "buckets", [])
    sampled = SamplingParams(max_new_tokens=30, seed=11)
    schedule = [GREEDY, sampled, SamplingParams(do_sample=False, subtalker_do_sample=False, max_new_tokens=70)]
    runs = []
    for use_graphs in (False, True):
        engine = make_engine(talker, slots=4, prefill_chunk=8, prefill_budget=12)
        engine.runner.use_graphs = use_graphs
        sessions = [start_whole(engine, params) for params in schedule]
        for _ in range(5):
            engine.step()
        late = start_whole(engine)
        while engine.active:
            engine.step()
        runs.append([np.stack(s.frames) for s in sessions + [late]])
    for got, want in zip(*runs):
        assert np.array_equal(got, want)
    decode = [bucket[1:] for bucket in _EagerStep.buckets if bucket[0] == "decode"]
    assert {rows for rows, _ in decode} == {4, 2, 1}
    assert {view for _, view in decode} == {64, 128}
    # Steps with prompt runs (chunks of at most 8 positions, 12 a step): the three prompts alone
    # (2 and 4 runs a step, padded), then the late one's beside 2 and 3 decoding rows.
    mixed = [bucket[1:] for bucket in _EagerStep.buckets if bucket[0] == "mixed"]
    assert {(rows, runs) for rows, _, runs, _, _ in mixed} == {(0, 2), (0, 4), (2, 1), (3, 1)}
    assert len(_EagerStep.buckets) == len(set(_EagerStep.buckets))  # each captured once


def test_past_the_graph_limit_the_least_recently_replayed_graph_makes_room(talker, monkeypatch):
    """With room for 2 graphs: 3 streams' prompt step and decode steps (4 rows), a late stream's
    prompt step beside them, their decode steps again, then 2 rows when the first stream ends.
    The 2-row capture drops the late prompt step's graph (replayed longest ago), not the 4-row
    decode step's (captured earlier, replayed since), and the codes are the eager ones."""
    monkeypatch.setattr(model_runner, "_CapturedStep", _EagerStep)
    monkeypatch.setattr(_EagerStep, "buckets", [])
    monkeypatch.setattr(model_runner, "MAX_GRAPHS", 2)
    runs = []
    for use_graphs in (False, True):
        engine = make_engine(talker, slots=4)
        engine.runner.use_graphs = use_graphs
        lengths = (12, 30, 70)  # greedy, frames each
        sessions = [
            start_whole(engine, SamplingParams(do_sample=False, subtalker_do_sample=False, max_new_tokens=n))
            for n in lengths
        ]
        for _ in range(5):
            engine.step()
        late = start_whole(engine)
        kept = []
        while engine.active:
            engine.step()
            kept.append([key[:2] for key in engine.runner._graphs])
        runs.append([np.stack(s.frames) for s in sessions + [late]])
    for got, want in zip(*runs):
        assert np.array_equal(got, want)
    assert max(map(len, kept)) == 2
    two_rows = next(keys for keys in kept if ("decode", 2) in keys)
    assert two_rows == [("decode", 4), ("decode", 2)]


def test_warm_up_captures_the_first_requests_graphs_and_changes_no_codes(talker, monkeypatch):
    """Warming up captures the first-frame step of a lone request at every prompt length bucket
    and the decode steps at every rows and view bucket (played on CPU by the stand-in capture);
    requests served after it replay those graphs, capture nothing more, and get the codes of an
    engine that never warmed up. It refuses once sessions exist: it runs dummy rows in the slots."""
    monkeypatch.setattr(model_runner, "_CapturedStep", _EagerStep)
    monkeypatch.setattr(_EagerStep, "buckets", [])
    expected = [frames for frames, _ in (run_whole(talker, plan()), run_whole(talker, plan(non_streaming=True)))]
    engine = make_engine(talker, slots=4, max_positions=200, prefill_chunk=40)
    engine.runner.use_graphs = True
    captured = engine.warm_up(GREEDY)
    lengths, views = [16, 32, 64], [64, 128, 200]
    assert sorted(_EagerStep.buckets) == sorted(
        [("mixed", 0, 0, 1, length, 64) for length in lengths]
        + [("decode", rows, view) for rows in (1, 2, 4) for view in views]
    )
    assert captured == len(_EagerStep.buckets)
    got = []
    for plan_ in (plan(), plan(non_streaming=True)):
        session = start_whole(engine, GREEDY, plan_)
        while engine.active:
            engine.step()
        got.append(np.stack(session.frames))
    assert captured == len(_EagerStep.buckets)  # every step replayed a warmed graph
    for frames, want in zip(got, expected):
        assert np.array_equal(frames, want)
    engine.start(plan(), GREEDY)
    with pytest.raises(RuntimeError, match="before the first session"):
        engine.warm_up(GREEDY)


def test_a_failed_graph_capture_falls_back_to_eager_steps(talker, monkeypatch, caplog):
    """A decode step whose CUDA graph cannot be captured runs eagerly, as does every later one:
    the same codes, a warning with the reason, graphs off. (Played on CPU: the runner is told it
    uses graphs, and the capture fails as torch's does.)"""

    def failing_capture(runner, rows, view, warping):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(model_runner, "_CapturedStep", failing_capture)
    expected = [frames for frames, _ in (run_whole(talker, plan()) for _ in range(2))]
    engine, sessions = engine_with_sessions(talker, 2)
    engine.runner.use_graphs = True
    with caplog.at_level("WARNING", logger=model_runner.__name__):
        while engine.active:
            engine.step()
    assert engine.runner.use_graphs is False
    assert "operation not permitted when stream is capturing" in caplog.text
    for session, want in zip(sessions, expected):
        assert np.array_equal(np.stack(session.frames), want)


@pytest.mark.skipif(not kernels_built(), reason="the CPU kernels are not built here")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_cpu_norms_and_rope_give_the_same_codes(dtype):
    """The talker's norms and RoPE as the project's CPU operators (how the loader runs it on CPU):
    the codes of batched sessions, prompts and decoding alike, are the torch ops' codes."""
    frames = {}
    for fused in (False, True):
        model = tiny_talker(dtype)
        if fused:
            assert use_fused_ops(model) > 0
        engine, sessions = engine_with_sessions(model, 3)
        while engine.active:
            engine.step()
        frames[fused] = [np.stack(s.frames) for s in sessions]
    for got, want in zip(frames[True], frames[False]):
        assert np.array_equal(got, want)


@pytest.mark.parametrize("masked", [False, True])
def test_bfloat16_single_query_attention_folds_heads_without_changing_a_bit(masked):
    torch.manual_seed(0)
    q = torch.randn(5, 16, 1, 128, dtype=torch.bfloat16)
    k, v = torch.randn(2, 5, 8, 40, 128, dtype=torch.bfloat16)
    mask = torch.rand(5, 1, 1, 40) > 0.2 if masked else None
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    assert torch.equal(_one_query(q, k, v, mask), expected)
