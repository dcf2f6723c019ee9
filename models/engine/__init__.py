"""Continuous batching of Qwen3-TTS utterances: text arrives incrementally, frames leave as they
are made, and sessions join and leave between steps."""
