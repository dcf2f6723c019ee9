"""Text tokenising, including our deliberate deviation from the reference's pre-tokenizer swap.

`Qwen3TTSModel.from_pretrained` loads its processor with `fix_mistral_regex=True`. Under
transformers 4.57.3 that replaces the Qwen2 pre-tokenizer regex with a Mistral one when the
vocabulary has over 100k entries (as the real one does), the directory is local and its
config.json says transformers 4.57.x. Loading by hub id, the documented usage, keeps the Qwen2
regex, which is what the models were trained with. We always use the tokenizer's own regex.
"""

import json
import shutil

import pytest

from models.qwen3_tts.prompts import TextTokenizer

pytestmark = pytest.mark.reference

# A camel-case word: the Qwen2 regex keeps "HelloWorld" as one pre-token, the Mistral one splits it
# at the capital, so a merge across "o|W" can only apply under the Qwen2 regex.
CAMEL = "HelloWorld"


def big_vocab_copy(source, target, transformers_version):
    """A copy of a tiny checkpoint whose tokenizer has >100k entries and an 'o'+'W' merge."""
    shutil.copytree(source, target)
    vocab = json.loads((target / "vocab.json").read_text())
    first_free = max(vocab.values()) + 1 + 16  # stay clear of the added special tokens
    vocab["oW"] = first_free
    vocab.update({f"<filler{i}>": first_free + 1 + i for i in range(100_100 - len(vocab))})
    (target / "vocab.json").write_text(json.dumps(vocab))
    lines = (target / "merges.txt").read_text().splitlines()
    header = 1 if lines and lines[0].startswith("#") else 0
    lines.insert(header, "o W")  # the highest-priority merge
    (target / "merges.txt").write_text("\n".join(lines) + "\n")
    config = json.loads((target / "config.json").read_text())
    config["transformers_version"] = transformers_version
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_plain_text_tokenises_like_the_reference(reference, tiny_custom_voice):
    texts = ["hello world, this is a test.", "Numbers 12345 and punctuation!?", "Grüße, 你好, こんにちは"]
    ours = TextTokenizer(tiny_custom_voice)
    assert reference.tokenize(tiny_custom_voice, texts) == [ours.encode_text(t) for t in texts]


def test_we_keep_the_qwen2_pretokenizer_where_the_reference_swaps_it(reference, tiny_custom_voice, tmp_path):
    swapped = big_vocab_copy(tiny_custom_voice, tmp_path / "local-4.57", "4.57.3")
    unswapped = big_vocab_copy(tiny_custom_voice, tmp_path / "local-5.0", "5.0.0")
    ours = TextTokenizer(swapped).encode_text(CAMEL)
    merged = json.loads((swapped / "vocab.json").read_text())["oW"]
    assert merged in ours  # Qwen2 regex: one pre-token, the o+W merge applies
    [reference_swapped] = reference.tokenize(swapped, [CAMEL])
    assert merged not in reference_swapped  # the reference split "Hello|World" first
    # Without the swap (here: a config the patch ignores) the reference agrees with us exactly.
    assert reference.tokenize(unswapped, [CAMEL]) == [ours]


def test_prompt_slices(tiny_custom_voice):
    tok = TextTokenizer(tiny_custom_voice)
    assert len(tok.role_ids) == 3
    text = "hello world"
    assert tok.target_ids(text) == tok.encode_text(text)
    assert tok.ref_text_ids(text) == tok.encode_text(text)
    assert tok.instruct_ids("calm")[:3] == tok._tok.encode("<|im_start|>user\n")
