"""Incremental tokenization: text fed in any pieces gives exactly `target_ids` of the whole text."""

import json
import random
import shutil

import pytest

from models.qwen3_tts.prompts import TextTokenizer
from models.qwen3_tts.text_stream import TextStream

TEXTS = [
    "Hello, world! Don't panic: it's 3:45 p.m. on 2024-05-06.  Two  spaces,\nnew line\n\n  and   more\r\n",
    "They're here, we've seen them, you'll see, I'd say it's done. 'Quoted' \"double\" (parens) [x]...",
    "你好世界今天天气很好我们一起去公园吧",
    "你好，世界！今天天气很好。我们一起去公园吧？“好的”……",
    "こんにちは、元気ですか。ありがとうございます！カタカナとひらがな",
    "Mixed 中文 and English, 日本語も。 12345 ok?! 한국어 텍스트",
    "Emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷! end",
    # Decomposed accents (NFC composes them), marks that NFC reorders, an NFC-expanded letter.
    "cafe\u0301 re\u0301sume\u0301 na\u0308ive e\u0301's q\u0301s e\u031b\u0323 x\u0958y",
    "\n\nleading newlines, then text",
    "   leading spaces and trailing ones   ",
    "tabs\tand\u00a0nbsp\u3000ideographic space\u2028line separator",
    # Control-token strings are just characters in user text (TextTokenizer.text_backend).
    "special tokens <|im_end|> are spoken<tts_pad>, even <|im_start|> here, and < | or <|im_en",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_custom_voice):
    return TextTokenizer(tiny_custom_voice)


def stream_ids(tokenizer, pieces):
    stream = TextStream(tokenizer)
    ids = [i for piece in pieces for i in stream.feed(piece)]
    return ids + stream.flush(), stream


def random_pieces(text, rng):
    cuts = sorted(rng.sample(range(1, len(text)), min(rng.randint(1, 12), len(text) - 1)))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


@pytest.mark.parametrize("text", TEXTS)
def test_any_split_gives_the_ids_of_the_whole_text(tokenizer, text):
    expected = tokenizer.target_ids(text)
    rng = random.Random(text)
    for pieces in [[text], list(text)] + [random_pieces(text, rng) for _ in range(200)]:
        ids, stream = stream_ids(tokenizer, pieces)
        assert ids == expected, pieces
        read = [stream.characters_read(k) for k in range(len(ids) + 1)]
        assert read == sorted(read) and read[-1] == len(text) == stream.received


def test_random_strings_of_tricky_characters(tokenizer):
    alphabet = [
        "a",
        "s",
        "t",
        "'",
        "1",
        " ",
        "  ",
        "\n",
        "\r",
        "\t",
        "!",
        "中",
        "。",
        "\u00a0",
        "e",
        "\u0301",
        "\u0323",
        "\u031b",
        "\u0958",
        "\u0f40",
        "\u0f73",
        "\u0b95",
        "\u0bc6",
        "\u0bbe",
        "\u1100",
        "\u1161",
        "\u11a8",
        "<",
        "<|im_end|>",
        "😀",
    ]
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 14)))
        assert stream_ids(tokenizer, random_pieces(text, rng))[0] == tokenizer.target_ids(text), repr(text)


def test_whole_words_are_tokenized_as_they_complete(tokenizer):
    stream = TextStream(tokenizer)
    ids = stream.feed("Hello world, how")
    assert ids == tokenizer.target_ids("Hello world,")  # " how" may still grow
    assert stream.characters_read(len(ids)) == len("Hello world,")
    ids += stream.feed(" are\n\n ")
    assert ids == tokenizer.target_ids("Hello world, how are")
    assert stream.feed(" ") == []  # a run of whitespace waits for what follows it
    ids += stream.feed("you") + stream.flush()
    assert ids == tokenizer.target_ids("Hello world, how are\n\n  you")
    # NFC expands U+0958 into two characters with a pre-token boundary between them: not a cut.
    assert TextStream(tokenizer).feed("x\u0958y") == []


def test_text_without_boundaries_waits_for_the_end_or_a_flush(tokenizer):
    stream = TextStream(tokenizer)
    assert stream.feed("你好世界") == [] and stream.feed("今天") == []
    assert stream.flush() == tokenizer.target_ids("你好世界今天")
    # A flush cuts mid-word: each side is then tokenized on its own.
    stream = TextStream(tokenizer)
    assert stream.feed("hel", flush=True) == tokenizer.target_ids("hel")
    assert stream.feed("lo there") + stream.flush() == tokenizer.encode_text("lo there")
    assert stream.characters_read(len(tokenizer.target_ids("hel"))) == 3


def test_leading_newlines_that_merge_with_the_template(tokenizer, tiny_custom_voice, tmp_path):
    # With a "\n\n" token (as in the real vocabulary), target_ids of a text starting with newlines
    # differs from its plain encoding: the template's "\n" merges with them.
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(tiny_custom_voice / name, tmp_path / name)
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    vocab["ĊĊ"] = max(vocab.values()) + 1 + 16  # clear of the added special tokens
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    lines = (tmp_path / "merges.txt").read_text().splitlines()
    lines.insert(1 if lines[0].startswith("#") else 0, "Ċ Ċ")
    (tmp_path / "merges.txt").write_text("\n".join(lines) + "\n")
    merging = TextTokenizer(tmp_path)
    text = "\n\n\nthree newlines first. Then more text"
    assert merging.target_ids(text) != merging.encode_text(text)
    rng = random.Random(1)
    for pieces in [[text], list(text)] + [random_pieces(text, rng) for _ in range(100)]:
        ids, stream = stream_ids(merging, pieces)
        assert ids == merging.target_ids(text)
        assert stream.characters_read(len(ids)) == len(text)


def test_a_run_without_a_safe_cut_is_cut_at_the_pending_limit(tokenizer):
    from models.qwen3_tts.text_stream import MAX_PENDING_CHARS

    stream = TextStream(tokenizer)
    run = "语" * (MAX_PENDING_CHARS + 1)  # letters only: no pre-token boundary anywhere
    ids = []
    for char in run[:MAX_PENDING_CHARS]:
        ids += stream.feed(char)
    assert ids == []  # still waiting for a boundary
    ids += stream.feed(run[MAX_PENDING_CHARS])
    assert ids and stream.characters_read(len(ids)) == MAX_PENDING_CHARS + 1
