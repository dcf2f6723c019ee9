"""Incremental tokenization of text that arrives in pieces.

A streamed utterance's text comes in arbitrary pieces (a piece may end mid-word, even between a
letter and its combining accent), but the talker must read exactly
`TextTokenizer.target_ids(whole text)`, whatever the split, so that streamed text gives the same
audio as the same text sent at once.

The Qwen2 byte-level BPE never merges across the pieces its pre-tokenizer regex cuts the
NFC-normalized text into. So a prefix that ends at a pre-token
boundary can be tokenized on its own, provided the boundary cannot move when more text arrives:

- it is not inside the last pre-token, which may still grow;
- the character before it is not whitespace: `\\s+(?!\\S)` and `\\s*[\\r\\n]+` split a run of
  whitespace according to what follows it;
- the character after it is not a combining mark (NFC could compose it with the one before),
  and no pre-token straddles it (NFC expanded a character there).

User text never contains control tokens (`TextTokenizer.text_backend` knows none), so a string such
as `<|im_end|>` is just characters here too.

The regex reads left to right with at most one character of lookahead, so these boundaries are
final (tests/test_text_stream.py checks it over many random splits). Text without such a
boundary, like Chinese or Japanese without punctuation, waits for one, for `flush()`, for the
end, or until it is MAX_PENDING_CHARS long: then it is cut there (which bounds the rescans of
such a run, quadratic otherwise, and the wait for audio; the tokens at that cut may differ from
those of the whole text).
"""

from __future__ import annotations

import itertools
import unicodedata

from .prompts import TextTokenizer

MAX_PENDING_CHARS = 1000


class TextStream:
    """Text in (`feed`), the token ids that are final out; `flush()` tokenizes the rest.

    Without a `flush` before the end, the ids fed concatenate to `target_ids(all text)`. A flush
    cuts where it is, so a word it splits is tokenized as two pieces.
    """

    def __init__(self, tokenizer: TextTokenizer):
        self._tokenizer = tokenizer
        self._backend = tokenizer.text_backend
        self._pending = ""  # received, not tokenized yet
        self._first = True  # the next ids start the text (target_ids' template applies)
        self._tokenized = 0  # characters tokenized so far
        self._ends: list[int] = []  # per token produced: the characters of input it completes
        self.received = 0  # characters (code points) received

    def feed(self, text: str, *, flush: bool = False) -> list[int]:
        """Append `text`; the ids that are now final (everything received, with `flush`)."""
        extends_word = text.isalpha() and self._pending[-1:].isalpha()
        self._pending += text
        self.received += len(text)
        if flush or len(self._pending) > MAX_PENDING_CHARS:
            return self.flush()
        if extends_word:
            # Letters after a letter only grow the last pre-token (a contraction's end aside,
            # which then just waits). Skipping the scan keeps long unpunctuated Chinese cheap.
            return []
        return self._tokenize(self._stable_length())

    def flush(self) -> list[int]:
        """Tokenize everything received so far (at the end of the text, or when asked to)."""
        return self._tokenize(len(self._pending))

    def characters_read(self, tokens: int) -> int:
        """How many characters of input the first `tokens` ids produced cover."""
        return self._ends[tokens - 1] if tokens > 0 else 0

    def _stable_length(self) -> int:
        """How many pending characters can be tokenized now with the same result as later."""
        text = self._pending
        encoding = self._backend.encode(text, add_special_tokens=False)
        words, offsets = encoding.word_ids, encoding.offsets  # pre-token index, original chars
        for i in range(len(words) - 1, 0, -1):
            start = offsets[i][0]
            if (
                words[i] != words[i - 1]
                and offsets[i - 1][1] <= start
                and not text[start - 1].isspace()
                and not unicodedata.combining(unicodedata.normalize("NFD", text[start])[0])
            ):
                return start
        return 0

    def _tokenize(self, length: int) -> list[int]:
        text, self._pending = self._pending[:length], self._pending[length:]
        if not text:
            return []
        encoding = self._backend.encode(text, add_special_tokens=False)
        ids = self._tokenizer.target_ids(text) if self._first else encoding.ids
        self._first = False
        ends = [end for _, end in encoding.offsets]
        if len(ends) != len(ids):  # leading newlines merged with the template's (target_ids)
            ends = [0] * len(ids)
        if ids:
            ends[-1] = len(text)  # exact at the end of each tokenized piece
        self._ends += [self._tokenized + end for end in itertools.accumulate(ends, max)]
        self._tokenized += len(text)
        return ids
