"""The Qwen3-TTS 12 Hz speech tokenizer: a Mimi encoder (audio -> 16-codebook frames) and a
streaming decoder (frames -> 24 kHz audio, exact chunk by chunk)."""
