"""Stand-in for torchaudio inside the reference environment only.

The reference package imports `torchaudio.compliance.kaldi` at module level for its 25 Hz
tokenizer, which no released 12 Hz model uses, and no CPU torchaudio wheel exists for this torch.
This package satisfies the import; anything that actually calls into it fails loudly.
"""
