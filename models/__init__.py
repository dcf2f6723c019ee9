"""The model library: Qwen3-TTS and its 12 Hz speech tokenizer in PyTorch, reading the official
checkpoint layout, and the engine that batches many utterances. It knows no gRPC and no asyncio;
the generator and codec services are built on it (docs/architecture.md).

    qwen3_tts/        the talker, code predictor and speaker encoder; text tokenization, prompts
    tokenizer_12hz/   the 12 Hz speech tokenizer (codec): audio <-> 16-codebook frames
    engine/           continuous batching of utterances over the talker and predictor
    tts.py            `Qwen3TTS`: the offline whole-utterance API
    checkpoint.py     strict loading of safetensors weights by checkpoint key
"""
