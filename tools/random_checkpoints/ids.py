"""The real special ids of Qwen3-TTS (spec §1.2, §1.3, §4.5), written into every config.json.

These are the released models' codec-vocabulary ids; the random checkpoints keep them unchanged
at every preset, so prompts built for a random checkpoint have the same codec ids as for a real one.
"""

CODEC_VOCAB_SIZE = 3072
CODEC_IDS = {
    "codec_pad_id": 2148,
    "codec_bos_id": 2149,
    "codec_eos_token_id": 2150,
    "codec_think_id": 2154,
    "codec_nothink_id": 2155,
    "codec_think_bos_id": 2156,
    "codec_think_eos_id": 2157,
}
CODEC_EOS_ID = CODEC_IDS["codec_eos_token_id"]
LANGUAGE_IDS = {
    "english": 2050,
    "german": 2053,
    "spanish": 2054,
    "chinese": 2055,
    "japanese": 2058,
    "french": 2061,
    "sichuan_dialect": 2062,
    "korean": 2064,
    "russian": 2069,
    "italian": 2070,
    "portuguese": 2071,
    "beijing_dialect": 2074,
}
# name: (codec id, spk_is_dialect)
SPEAKERS = {
    "vivian": (3065, False),
    "serena": (3066, False),
    "uncle_fu": (3010, False),
    "dylan": (2878, "beijing_dialect"),
    "eric": (2875, "sichuan_dialect"),
    "ryan": (3061, False),
    "aiden": (2861, False),
    "ono_anna": (2873, False),
    "sohee": (2864, False),
}
