"""Reference oracle worker: runs the `qwen-tts` 0.1.1 package on request.

Runs under `.venv-ref` (transformers 4.57.3), never under the project venv. The test client
(`tests/helpers/oracle_client.py`) starts it once per test session and talks to it over pipes:

  request   one JSON object per line on stdin:
            {"id": 7, "op": "generate", "args": {...}, "input_npz": PATH|null, "output_npz": PATH}
  response  one JSON object per line on the ORIGINAL stdout:
            {"id": 7, "result": {...}, "output_npz": PATH|null}   or   {"id": 7, "error": TRACEBACK}

Arrays travel through .npz files: anywhere in `args` or `result`, {"__npz__": NAME} stands for
the array NAME of the request's input npz (args) or of the response's output npz (result).

The reference prints banners and warnings on stdout at import time (a flash-attn notice, the
`sox` package's "SoX could not be found!", a `/bin/sh` error from its probe). File descriptor 1
is therefore re-pointed at stderr before anything is imported; responses go to a private
duplicate of the original stdout.

Models are cached per (directory, dtype, attn_implementation). Each op is documented at its
handler below.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def _claim_stdout():
    """Keep a private handle on the real stdout and send everything else to stderr."""
    sys.stdout.flush()
    private = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)  # subprocesses and C code writing to fd 1 now land on stderr
    sys.stdout = sys.stderr
    return private


_OUT = _claim_stdout()

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

if os.environ.get("QWEN_TTS_ORACLE_THREADS"):
    torch.set_num_threads(int(os.environ["QWEN_TTS_ORACLE_THREADS"]))

from qwen_tts import Qwen3TTSModel, Qwen3TTSTokenizer  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
GEN_KEYS = (
    "do_sample",
    "top_k",
    "top_p",
    "temperature",
    "repetition_penalty",
    "subtalker_dosample",
    "subtalker_top_k",
    "subtalker_top_p",
    "subtalker_temperature",
    "max_new_tokens",
)

_MODELS: dict = {}
_CODECS: dict = {}
_PROCESSORS: dict = {}


# ---------------------------------------------------------------------------------------------
# Array transport
# ---------------------------------------------------------------------------------------------


def _resolve(obj, arrays):
    if isinstance(obj, dict):
        if set(obj) == {"__npz__"}:
            return arrays[obj["__npz__"]]
        return {k: _resolve(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v, arrays) for v in obj]
    return obj


def _pack(obj, arrays):
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        if t.is_floating_point():
            t = t.float()
        obj = t.numpy()
    if isinstance(obj, np.ndarray):
        name = f"a{len(arrays)}"
        arrays[name] = obj
        return {"__npz__": name}
    if isinstance(obj, dict):
        return {k: _pack(v, arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_pack(v, arrays) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return obj


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _dtype(name):
    try:
        return DTYPES[name or "float32"]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(DTYPES)}") from None


def _load_kwargs(args):
    kwargs = {"dtype": _dtype(args.get("dtype"))}
    if args.get("attn_implementation"):
        kwargs["attn_implementation"] = args["attn_implementation"]
    if args.get("device"):
        kwargs["device_map"] = args["device"]
    return kwargs


def _model(args) -> Qwen3TTSModel:
    path = os.path.realpath(args["checkpoint"])
    key = (path, args.get("dtype") or "float32", args.get("attn_implementation"), args.get("device"))
    if key not in _MODELS:
        _MODELS[key] = Qwen3TTSModel.from_pretrained(path, **_load_kwargs(args))
    return _MODELS[key]


def _codec_dir(path: str) -> str:
    path = os.path.realpath(path)
    sub = os.path.join(path, "speech_tokenizer")
    if os.path.isfile(os.path.join(sub, "config.json")):
        return sub
    return path


def _codec(args) -> Qwen3TTSTokenizer:
    path = _codec_dir(args["checkpoint"])
    key = (path, args.get("dtype") or "float32", args.get("device"))
    if key not in _CODECS:
        extra = {"device_map": args["device"]} if args.get("device") else {}
        _CODECS[key] = Qwen3TTSTokenizer.from_pretrained(path, dtype=_dtype(args.get("dtype")), **extra)
    return _CODECS[key]


def _processor(path: str):
    """The text processor, loaded exactly as `Qwen3TTSModel.from_pretrained` loads it."""
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration, Qwen3TTSProcessor
    from transformers import AutoConfig, AutoModel, AutoProcessor

    path = os.path.realpath(path)
    if path not in _PROCESSORS:
        AutoConfig.register("qwen3_tts", Qwen3TTSConfig)
        AutoModel.register(Qwen3TTSConfig, Qwen3TTSForConditionalGeneration)
        AutoProcessor.register(Qwen3TTSConfig, Qwen3TTSProcessor)
        _PROCESSORS[path] = AutoProcessor.from_pretrained(path, fix_mistral_regex=True)
    return _PROCESSORS[path]


# ---------------------------------------------------------------------------------------------
# Ops
# ---------------------------------------------------------------------------------------------


def op_versions(args):
    from importlib.metadata import version

    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "qwen_tts": version("qwen-tts"),
    }


def op_codec_encode(args):
    """audios: list of 1-D float arrays at `sample_rate` -> {"codes": [(F_i, 16) int64]}.

    One `Qwen3TTSTokenizer.encode(audios, sr=sample_rate)` call: the list is encoded as one
    right-padded batch, exactly as the wrapper does.
    """
    codec = _codec(args)
    audios = [np.asarray(a, dtype=np.float32) for a in args["audios"]]
    enc = codec.encode(audios, sr=int(args["sample_rate"]))
    return {"codes": [c.to(torch.int64) for c in enc.audio_codes]}


def op_codec_decode(args):
    """codes: list of (T_i, 16) int arrays -> {"wavs": [float32 1-D], "sample_rate": 24000}.

    One `Qwen3TTSTokenizer.decode([{"audio_codes": c}, ...])` call (padding with -1, chunked).
    """
    codec = _codec(args)
    items = [{"audio_codes": torch.as_tensor(np.asarray(c, dtype=np.int64))} for c in args["codes"]]
    wavs, sr = codec.decode(items)
    return {"wavs": wavs, "sample_rate": sr}


def _clone_prompt(model, args):
    return model.create_voice_clone_prompt(
        ref_audio=(np.asarray(args["audio"], dtype=np.float32), int(args["sample_rate"])),
        ref_text=args.get("ref_text"),
        x_vector_only_mode=bool(args.get("x_vector_only_mode", False)),
    )[0]


def op_speaker_embedding(args):
    """-> {"embedding": (enc_dim,) float32}: `ref_spk_embedding` of
    `create_voice_clone_prompt(ref_audio=(audio, sr), x_vector_only_mode=True)` on a Base checkpoint
    (includes the wrapper's librosa resample to 24 kHz and the cast to the model dtype)."""
    item = _clone_prompt(_model(args), {**args, "x_vector_only_mode": True})
    return {"embedding": item.ref_spk_embedding}


def op_voice_clone_prompt(args):
    """-> {"ref_code": (T, 16) int64 | None, "ref_spk_embedding": (D,), "x_vector_only_mode",
    "icl_mode", "ref_text"}: the `VoiceClonePromptItem` of `create_voice_clone_prompt`."""
    item = _clone_prompt(_model(args), args)
    return {
        "ref_code": None if item.ref_code is None else item.ref_code.to(torch.int64),
        "ref_spk_embedding": item.ref_spk_embedding,
        "x_vector_only_mode": item.x_vector_only_mode,
        "icl_mode": item.icl_mode,
        "ref_text": item.ref_text,
    }


def _as_list(value):
    if value is None:
        return None
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _run_mode(model: Qwen3TTSModel, args):
    """Call the wrapper method of `args["mode"]` with the request's arguments."""
    mode = args["mode"]
    gen = {k: args[k] for k in GEN_KEYS if args.get(k) is not None}
    common = {}
    if args.get("non_streaming_mode") is not None:
        common["non_streaming_mode"] = bool(args["non_streaming_mode"])
    text = _as_list(args["text"])
    language = _as_list(args.get("language"))
    if mode == "custom_voice":
        return model.generate_custom_voice(
            text=text,
            speaker=_as_list(args["speaker"]),
            language=language,
            instruct=_as_list(args.get("instruct")),
            **common,
            **gen,
        )
    if mode == "voice_design":
        return model.generate_voice_design(
            text=text, instruct=_as_list(args["instruct"]), language=language, **common, **gen
        )
    if mode == "voice_clone":
        audios = args["ref_audio"]
        if isinstance(audios, np.ndarray) and audios.ndim == 1:
            audios = [audios]
        rates = args["ref_sample_rate"]
        rates = rates if isinstance(rates, list) else [rates] * len(audios)
        ref_audio = [(np.asarray(a, dtype=np.float32), int(sr)) for a, sr in zip(audios, rates)]
        ref_text = args.get("ref_text")
        x_vec = args.get("x_vector_only_mode", False)
        return model.generate_voice_clone(
            text=text,
            language=language,
            ref_audio=ref_audio if len(ref_audio) > 1 else ref_audio[0],
            ref_text=ref_text,
            x_vector_only_mode=x_vec,
            **common,
            **gen,
        )
    raise ValueError(f"unknown mode {mode!r}; expected custom_voice, voice_design or voice_clone")


class _Capture:
    """Non-invasive hooks on one cached model for one run (removed afterwards).

    Records the talker codes returned by `Qwen3TTSForConditionalGeneration.generate` and the
    code lists handed to `speech_tokenizer.decode`.
    """

    def __init__(self, model: Qwen3TTSModel):
        self.model = model
        self.generated = []
        self.decoded = []

    def __enter__(self):
        inner = self.model.model
        orig_generate = type(inner).generate.__get__(inner)
        st = inner.speech_tokenizer
        orig_decode = type(st).decode.__get__(st)

        def generate(*a, **kw):
            codes, hidden = orig_generate(*a, **kw)
            self.generated.append([c.detach().cpu().to(torch.int64) for c in codes])
            return codes, hidden

        def decode(encoded):
            self.decoded.append([torch.as_tensor(e["audio_codes"]).detach().cpu().to(torch.int64) for e in encoded])
            return orig_decode(encoded)

        inner.__dict__["generate"] = generate
        st.__dict__["decode"] = decode
        return self

    def __exit__(self, *exc):
        self.model.model.__dict__.pop("generate", None)
        self.model.model.speech_tokenizer.__dict__.pop("decode", None)
        return False


def op_generate(args):
    """Run a wrapper generate method; per item the talker codes and the final waveform.

    args: checkpoint, dtype, mode (custom_voice | voice_design | voice_clone), text (list),
    language (list), speaker (list; custom_voice), instruct (list), ref_audio (array or list of
    arrays) + ref_sample_rate + ref_text + x_vector_only_mode (voice_clone), non_streaming_mode,
    the generation kwargs of GEN_KEYS (None = the wrapper's default), seed (optional:
    torch.manual_seed before the run).

    -> {"sample_rate": 24000, "items": [{"codes", "decoded_codes", "wav"}]}
      codes          (T_i, 16) int64: what `model.generate` returned for item i (EOS and
                     everything after it already cut; the reference codes of ICL NOT included)
      decoded_codes  (R_i + T_i, 16): what the wrapper passed to `speech_tokenizer.decode` for
                     item i; for ICL clone the reference codes are prepended, else == codes
      wav            float32: the waveform the wrapper returned (ICL: already cropped)
    """
    model = _model(args)
    if args.get("seed") is not None:
        torch.manual_seed(int(args["seed"]))
    with _Capture(model) as cap:
        wavs, sr = _run_mode(model, args)
    codes = cap.generated[-1]
    decoded = cap.decoded[-1]
    items = [{"codes": c, "decoded_codes": d, "wav": w} for c, d, w in zip(codes, decoded, wavs)]
    return {"sample_rate": sr, "items": items}


def op_first_step_probs(args):
    """The probability vectors the reference samples from, captured from `torch.multinomial`.

    Same args as generate; do_sample and subtalker_dosample default to True and max_new_tokens
    is forced to 2. Every `torch.multinomial` input (after all logits processors and softmax) is
    recorded in call order. Observed order for max_new_tokens=2: call 0 = talker, prefill
    (codebook 0 of frame 0, width 3072); calls 1-15 = code predictor for codebooks 1..15 of
    frame 0 (width 2048); call 16 = talker, codebook 0 of frame 1 (width 3072).

    -> {"talker": (B, 3072) first talker call, "predictor": (B, 2048) first predictor call
        (codebook 1 of frame 0), "calls": [all inputs in order], "call_widths": [...]}
    """
    run_args = dict(args)
    run_args["max_new_tokens"] = 2
    for key in ("do_sample", "subtalker_dosample"):
        if run_args.get(key) is None:
            run_args[key] = True
    model = _model(run_args)
    if run_args.get("seed") is not None:
        torch.manual_seed(int(run_args["seed"]))
    calls = []
    original = torch.multinomial

    def recording(probs, *a, **kw):
        calls.append(probs.detach().float().cpu().clone())
        return original(probs, *a, **kw)

    torch.multinomial = recording
    try:
        _run_mode(model, run_args)
    finally:
        torch.multinomial = original
    widths = [int(c.shape[-1]) for c in calls]
    talker_vocab = int(model.model.config.talker_config.vocab_size)
    predictor_vocab = int(model.model.config.talker_config.code_predictor_config.vocab_size)
    talker = next((c for c in calls if c.shape[-1] == talker_vocab), None)
    predictor = next((c for c in calls if c.shape[-1] == predictor_vocab), None)
    return {"talker": talker, "predictor": predictor, "calls": calls, "call_widths": widths}


def op_tokenize(args):
    """texts -> {"ids": [[int]]}: `processor(text=t, return_tensors="pt", padding=True)` per text,
    with the processor loaded as `Qwen3TTSModel.from_pretrained` does (fix_mistral_regex=True)."""
    proc = _processor(args["checkpoint"])
    ids = []
    for text in args["texts"]:
        out = proc(text=text, return_tensors="pt", padding=True)["input_ids"]
        ids.append([int(i) for i in out.reshape(-1).tolist()])
    return {"ids": ids, "tokenizer_class": type(proc.tokenizer).__name__}


def _check_against_file(module, path):
    from safetensors.torch import load_file

    tensors = load_file(path)
    state = module.state_dict()
    differ = []
    for key, value in state.items():
        if (
            key in tensors
            and tensors[key].shape == value.shape
            and not torch.equal(value.to(tensors[key].dtype), tensors[key])
        ):
            differ.append(key)
    return {
        "n_model_tensors": len(state),
        "n_file_tensors": len(tensors),
        "not_in_file": sorted(set(state) - set(tensors)),
        "not_in_model": sorted(set(tensors) - set(state)),
        "values_differ": differ,
    }


def op_load_report(args):
    """How the reference loads a checkpoint directory (a TTS dir, or a standalone codec dir).

    Loads with `output_loading_info=True` (the base `PreTrainedModel.from_pretrained`, because the
    Qwen3TTS override cannot return the info) and compares every loaded tensor with the file, so
    a key the loader silently skipped (left at random init) shows up under values_differ.
    -> {"main": {...} | None, "codec": {...}, "speaker_encoder_config": {...} | None,
        "tts_model_type", "supported_speakers", "supported_languages"}
    """
    from qwen_tts.core.models import Qwen3TTSForConditionalGeneration
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Model
    from transformers import PreTrainedModel

    path = os.path.realpath(args["checkpoint"])
    result = {"main": None, "speaker_encoder_config": None}
    if os.path.isfile(os.path.join(path, "model.safetensors")) and os.path.isdir(
        os.path.join(path, "speech_tokenizer")
    ):
        model, info = PreTrainedModel.from_pretrained.__func__(
            Qwen3TTSForConditionalGeneration, path, output_loading_info=True
        )
        result["main"] = {k: [str(x) for x in v] for k, v in info.items()}
        result["main"].update(_check_against_file(model, os.path.join(path, "model.safetensors")))
        cfg = model.config
        se = cfg.speaker_encoder_config
        result["speaker_encoder_config"] = {
            k: getattr(se, k)
            for k in (
                "mel_dim",
                "enc_dim",
                "enc_channels",
                "enc_kernel_sizes",
                "enc_dilations",
                "enc_attention_channels",
                "enc_res2net_scale",
                "enc_se_channels",
                "sample_rate",
            )
        }
        result["tts_model_type"] = cfg.tts_model_type
        result["tts_model_size"] = cfg.tts_model_size
        result["has_speaker_encoder"] = model.speaker_encoder is not None
        result["supported_speakers"] = sorted(model.get_supported_speakers())
        result["supported_languages"] = sorted(model.get_supported_languages())
        del model
    codec_path = _codec_dir(path)
    codec, info = Qwen3TTSTokenizerV2Model.from_pretrained(codec_path, output_loading_info=True)
    result["codec"] = {k: [str(x) for x in v] for k, v in info.items()}
    result["codec"].update(_check_against_file(codec, os.path.join(codec_path, "model.safetensors")))
    return result


OPS = {name[3:]: fn for name, fn in globals().items() if name.startswith("op_")}


def handle(request: dict) -> dict:
    arrays = {}
    if request.get("input_npz"):
        with np.load(request["input_npz"], allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    op = request.get("op")
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; known: {sorted(OPS)}")
    args = _resolve(request.get("args") or {}, arrays)
    result = OPS[op](args)
    out_arrays: dict = {}
    packed = _pack(result, out_arrays)
    out_path = None
    if out_arrays:
        out_path = request["output_npz"]
        np.savez(out_path, **out_arrays)
    return {"result": packed, "output_npz": out_path}


def main() -> int:
    _OUT.write(json.dumps({"id": None, "ready": True}) + "\n")
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        req_id = None
        try:
            request = json.loads(line)
            req_id = request.get("id")
            if request.get("op") == "shutdown":
                _OUT.write(json.dumps({"id": req_id, "result": {}}) + "\n")
                break
            response = {"id": req_id, **handle(request)}
        except Exception:  # noqa: BLE001 - every failure goes back to the client
            response = {"id": req_id, "error": traceback.format_exc()}
        _OUT.write(json.dumps(response) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
