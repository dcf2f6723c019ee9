"""Fails on use: the 12 Hz path of the reference never calls kaldi features."""


def fbank(*args, **kwargs):
    raise NotImplementedError("torchaudio stand-in: kaldi.fbank is not available in the reference environment")
