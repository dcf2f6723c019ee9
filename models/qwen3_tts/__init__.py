"""Qwen3-TTS 12 Hz: the talker (codebook 0), the code predictor (codebooks 1-15), the speaker
encoder of the Base models, text tokenization and prompt layout."""
