"""The toy byte-level BPE text tokenizer: vocab.json, merges.txt and tokenizer_config.json.

Every preset uses this tokenizer instead of the real 151936-token Qwen2 vocabulary: the 256 byte
symbols of GPT-2 style byte-level BPE, merges learnt by a small hand-written trainer from a built-in
corpus, the whole words "assistant" and "user" as single tokens, then the six special tokens. That
makes `text_vocab_size` about 1k; the toy tokenizer cannot produce larger ids, so the smaller
text-embedding table changes nothing else. The special-token ids in config.json point at these ids.

The files load with the `Qwen2Tokenizer` of transformers (and the reference package); the trainer is
deterministic, so every checkpoint has the same vocabulary. The `tokenizers` package's BpeTrainer
is not a substitute: it cannot rank the forced words first and breaks count ties by token id, so
its merges differ from these.
"""

from __future__ import annotations

import functools
import re
from collections import Counter

# Training text for the toy merges: short, mixed, deterministic. Changing it changes every
# checkpoint's vocabulary (bump FORMAT_VERSION in default_models.py).
_CORPUS = """
Hello, world! This is a small test of the text to speech system. The quick brown fox jumps over
the lazy dog. She sells sea shells by the sea shore. How are you today? I am fine, thank you very
much. We are going to the park this afternoon, and then we will have dinner with our friends.
Please speak slowly and clearly, with a warm and friendly voice. Read the following sentence in a
calm tone: the weather is nice and the sun is shining. It was the best of times, it was the worst
of times. Good morning, good evening, good night. What time is it? It is ten past three. One, two,
three, four, five, six, seven, eight, nine, ten. The number is 1234567890. Speech synthesis turns
written text into spoken words. A happy young woman with a bright voice tells a story about a
little cat that lives in a big house near the river. An old man with a deep voice reads the news.
Welcome to the service. Your order has been confirmed and will arrive tomorrow. Thank you for
calling, please hold the line. The meeting starts at nine o'clock; don't be late. They're here,
we've seen them, you'll see, I'd say it's done.
Guten Morgen, wie geht es dir? Ich bin sehr gut, danke. Das Wetter ist heute schön.
Bonjour, comment allez-vous? Je vais très bien, merci. C'est une belle journée.
Hola, ¿cómo estás? Muy bien, gracias. Buenos días a todos.
Ciao, come stai? Bene, grazie. Olá, tudo bem? Obrigado.
Привет, как дела? Спасибо, хорошо.
你好，世界！今天天气很好。我们一起去公园吧。这是一个语音合成的测试。谢谢你的帮助。
こんにちは、元気ですか。ありがとうございます。
안녕하세요, 감사합니다.
"""
_FORCED_WORDS = ("assistant", "user")
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<tts_pad>",
    "<tts_text_bos>",
    "<tts_text_eod>",
)
_TEXT_VOCAB_TARGET = 1024  # byte symbols + merges + special tokens, when the corpus allows
# Approximates the Qwen2 pre-tokenizer, only to decide which merges to learn.
_PRETOKENIZE = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+|\d| ?[^\s\w]+|\s+")


def _byte_symbols() -> tuple[list[str], dict[int, str]]:
    """The 256 printable stand-ins for bytes used by GPT-2 style byte-level BPE: (in id order, by byte).

    Printable bytes map to themselves; the others are shifted to code points from 256 upwards.
    With this order "\\n" (byte 10) gets id 198 and " " (byte 32) the symbol "Ġ", as in Qwen2.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)
            shift += 1
    order = printable + [b for b in range(256) if b not in printable]
    return [table[b] for b in order], table


def _to_symbols(text: str, table: dict[int, str]) -> tuple[str, ...]:
    return tuple(table[b] for b in text.encode("utf-8"))


def _apply_merge(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


@functools.lru_cache(maxsize=1)
def toy_tokenizer() -> dict:
    """The toy vocabulary: {"vocab": {token: id}, "merges": [(a, b)], "special": {token: id}}."""
    symbols, table = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    merges: list[tuple[str, str]] = []

    def add_merge(pair):
        merges.append(pair)
        vocab[pair[0] + pair[1]] = len(vocab)

    # Whole words first (lowest rank), built left to right, so they always come out as one token.
    for word in _FORCED_WORDS:
        parts = _to_symbols(word, table)
        current = parts[0]
        for nxt in parts[1:]:
            if current + nxt not in vocab:
                add_merge((current, nxt))
            current = current + nxt

    counts = Counter(_PRETOKENIZE.findall(_CORPUS))
    words: Counter = Counter()  # corpus pieces as symbol tuples, with the forced merges applied
    for piece, n in counts.items():
        if piece.isspace() and "\n" in piece:  # the corpus's line breaks are not text to learn from
            continue
        w = _to_symbols(piece, table)
        for pair in merges:
            w = _apply_merge(w, pair)
        words[w] += n

    n_merges = _TEXT_VOCAB_TARGET - len(SPECIAL_TOKENS) - 256
    while len(merges) < n_merges:
        pairs: Counter = Counter()
        for w, n in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += n
        pairs = {p: n for p, n in pairs.items() if p[0] + p[1] not in vocab}
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))  # most frequent; ties to the smallest pair
        add_merge(best)
        merged: Counter = Counter()
        for w, n in words.items():
            merged[_apply_merge(w, best)] += n
        words = merged

    special = {tok: len(vocab) + i for i, tok in enumerate(SPECIAL_TOKENS)}
    return {"vocab": vocab, "merges": merges, "special": special}


def text_vocab_size() -> int:
    """The number of text ids: vocabulary plus special tokens (the talker's `text_vocab_size`)."""
    tok = toy_tokenizer()
    return len(tok["vocab"]) + len(tok["special"])


def tokenizer_files() -> dict[str, dict | str]:
    """{file name: content} of the tokenizer files: JSON files as dicts, merges.txt as text."""
    tok = toy_tokenizer()
    added = {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t, i in tok["special"].items()
    }
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [t for t in SPECIAL_TOKENS if t != "<|endoftext|>"],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    return {
        "vocab.json": tok["vocab"],
        "merges.txt": "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in tok["merges"]),
        "tokenizer_config.json": config,
    }
