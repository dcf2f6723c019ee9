"""Client for the reference oracle (`tests/reference/oracle.py`), used from the project venv.

The oracle runs the `qwen-tts` 0.1.1 reference package in its own environment (`.venv-ref`, built
by `tests/reference/setup_env.sh`) as one long-lived subprocess per test session. Requests and
responses are JSON lines over pipes; arrays travel through .npz files in a private work
directory. The worker's stderr (the reference's warnings) goes to `<workdir>/oracle-stderr.log`,
whose tail is quoted in every error.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
SETUP_SCRIPT = REPO_ROOT / "tests" / "reference" / "setup_env.sh"
WORKER_SCRIPT = REPO_ROOT / "tests" / "reference" / "oracle.py"


class OracleError(RuntimeError):
    """The reference raised (the message carries its traceback) or the worker died."""


class ReferenceEnvError(RuntimeError):
    """The reference environment could not be built."""


def reference_venv() -> Path:
    return Path(os.environ.get("QWEN_TTS_REF_VENV", REPO_ROOT / ".venv-ref"))


def ensure_reference_env(timeout: float = 3600) -> Path:
    """Run setup_env.sh (instant when already built); the venv's python, or ReferenceEnvError.
    $QWEN_TTS_REF_PYTHON, where set, is the reference's interpreter as it is, nothing built: a
    machine that reaches no package index brings its own (bench/gpu_check.sh)."""
    given = os.environ.get("QWEN_TTS_REF_PYTHON")
    if given:
        return Path(given)
    try:
        proc = subprocess.run(
            ["bash", str(SETUP_SCRIPT)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReferenceEnvError(f"building the reference environment failed: {exc}") from exc
    if proc.returncode != 0:
        tail = (proc.stdout[-3000:] + "\n" + proc.stderr[-3000:]).strip()
        raise ReferenceEnvError(f"tests/reference/setup_env.sh exited with {proc.returncode}:\n{tail}")
    python = reference_venv() / "bin" / "python"
    if not python.is_file():
        raise ReferenceEnvError(f"setup_env.sh succeeded but {python} does not exist")
    return python


class ReferenceOracle:
    """Ask the reference package for results. Starts its worker on the first call.

    All `checkpoint_dir` arguments are directories in the official layout (a TTS checkpoint,
    or for the codec ops also a standalone codec directory). `dtype` is "float32", "bfloat16" or
    "float16" and is passed to the reference's `from_pretrained(dtype=...)`.
    """

    def __init__(
        self,
        python: str | Path | None = None,
        workdir: str | Path | None = None,
        timeout: float | None = 3600,
        env: dict | None = None,
    ):
        self.python = Path(python) if python else reference_venv() / "bin" / "python"
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="qwentts-oracle-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self.env = env or {}
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue | None = None
        self._stderr_file = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # -- process management ---------------------------------------------------------------

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "oracle-stderr.log"

    def _stderr_tail(self, n: int = 4000) -> str:
        try:
            return self.stderr_path.read_text(encoding="utf-8", errors="replace")[-n:]
        except OSError:
            return ""

    def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        if not self.python.is_file():
            raise ReferenceEnvError(
                f"{self.python} not found; run tests/reference/setup_env.sh (or use the `reference` fixture)"
            )
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # keep the project venv's packages out of the reference
        env.update({"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        env.update(self.env)
        self._stderr_file = open(self.stderr_path, "ab")  # noqa: SIM115 - closed with the worker
        self._proc = subprocess.Popen(
            [str(self.python), "-u", str(WORKER_SCRIPT)],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
            env=env,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self._lines = queue.Queue()
        proc, lines = self._proc, self._lines

        def pump():
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, name="oracle-stdout", daemon=True).start()
        ready = self._read_response(expect_id=None, timeout=600)
        if not ready.get("ready"):
            raise OracleError(f"unexpected first message from the oracle: {ready}")

    def close(self) -> None:
        """Stop the worker (politely, then by force) and remove an own work directory."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.stdin.write(json.dumps({"id": 0, "op": "shutdown"}) + "\n")
                proc.stdin.flush()
                proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                proc.kill()
                proc.wait(timeout=30)
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError, ValueError):
                    stream.close()
        if self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _read_response(self, expect_id, timeout):
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                self._kill()
                raise OracleError(
                    f"the oracle gave no answer within {timeout} s (worker killed)\n{self._stderr_tail()}"
                ) from None
            if line is None:
                code = self._proc.wait() if self._proc is not None else None
                self._proc = None
                raise OracleError(f"the oracle worker exited (code {code})\n{self._stderr_tail()}")
            line = line.strip()
            if not line.startswith("{"):
                continue  # not a response (should not happen: the worker keeps stdout clean)
            message = json.loads(line)
            if message.get("id") == expect_id:
                return message

    def _kill(self):
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self._proc = None

    # -- generic call ---------------------------------------------------------------------

    def call(self, op: str, timeout: float | None = None, **args) -> dict:
        """Run one op; arrays anywhere in `args` and in the result are numpy arrays.

        Models run on $QWEN_TTS_TEST_DEVICE (default cpu), like ours in the parity tests."""
        if os.environ.get("QWEN_TTS_TEST_DEVICE"):
            args.setdefault("device", os.environ["QWEN_TTS_TEST_DEVICE"])
        with self._lock:
            self.start()
            req_id = next(self._ids)
            arrays: dict = {}
            packed = _pack(args, arrays)
            in_path = self.workdir / f"req{req_id}-in.npz"
            out_path = self.workdir / f"req{req_id}-out.npz"
            if arrays:
                np.savez(in_path, **arrays)
            request = {
                "id": req_id,
                "op": op,
                "args": packed,
                "input_npz": str(in_path) if arrays else None,
                "output_npz": str(out_path),
            }
            try:
                self._proc.stdin.write(json.dumps(request) + "\n")
                self._proc.stdin.flush()
            except OSError as exc:
                self._kill()
                raise OracleError(f"cannot write to the oracle: {exc}\n{self._stderr_tail()}") from exc
            try:
                response = self._read_response(req_id, timeout if timeout is not None else self.timeout)
            finally:
                in_path.unlink(missing_ok=True)
            if "error" in response:
                out_path.unlink(missing_ok=True)
                raise OracleError(f"reference op {op!r} failed:\n{response['error']}")
            out_arrays = {}
            if response.get("output_npz"):
                with np.load(response["output_npz"], allow_pickle=False) as data:
                    out_arrays = {k: data[k] for k in data.files}
                out_path.unlink(missing_ok=True)
            return _unpack(response["result"], out_arrays)

    # -- ops ----------------------------------------------------------------------------------

    def versions(self) -> dict:
        return self.call("versions")

    def codec_encode(
        self, checkpoint_dir, audios: list[np.ndarray], sample_rate: int, dtype: str = "float32"
    ) -> list[np.ndarray]:
        """`Qwen3TTSTokenizer.encode(audios, sr=sample_rate)` as ONE batch: (F_i, 16) int64 each."""
        audios = [np.asarray(a, dtype=np.float32) for a in audios]
        out = self.call(
            "codec_encode", checkpoint=str(checkpoint_dir), audios=audios, sample_rate=int(sample_rate), dtype=dtype
        )
        return out["codes"]

    def codec_decode(self, checkpoint_dir, codes: list[np.ndarray], dtype: str = "float32") -> list[np.ndarray]:
        """`Qwen3TTSTokenizer.decode` of a list of (T_i, 16) code arrays: float32 waveforms at 24 kHz."""
        codes = [np.asarray(c, dtype=np.int64) for c in codes]
        return self.call("codec_decode", checkpoint=str(checkpoint_dir), codes=codes, dtype=dtype)["wavs"]

    def speaker_embedding(
        self, checkpoint_dir, audio: np.ndarray, sample_rate: int, dtype: str = "float32"
    ) -> np.ndarray:
        """x-vector of `create_voice_clone_prompt((audio, sr), x_vector_only_mode=True)` (Base only)."""
        out = self.call(
            "speaker_embedding",
            checkpoint=str(checkpoint_dir),
            audio=np.asarray(audio, dtype=np.float32),
            sample_rate=int(sample_rate),
            dtype=dtype,
        )
        return out["embedding"]

    def voice_clone_prompt(
        self,
        checkpoint_dir,
        audio: np.ndarray,
        sample_rate: int,
        ref_text: str | None = None,
        x_vector_only_mode: bool = False,
        dtype: str = "float32",
    ) -> dict:
        """{"ref_code": (T, 16) | None, "ref_spk_embedding": (D,), "x_vector_only_mode", "icl_mode", "ref_text"}."""
        return self.call(
            "voice_clone_prompt",
            checkpoint=str(checkpoint_dir),
            audio=np.asarray(audio, dtype=np.float32),
            sample_rate=int(sample_rate),
            ref_text=ref_text,
            x_vector_only_mode=bool(x_vector_only_mode),
            dtype=dtype,
        )

    def generate(self, checkpoint_dir, mode: str, dtype: str = "float32", **kwargs) -> list[dict]:
        """Run `generate_<mode>`; per item {"codes", "decoded_codes", "wav"} (see oracle.op_generate).

        kwargs: text, language, speaker, instruct, ref_audio, ref_sample_rate, ref_text,
        x_vector_only_mode, non_streaming_mode, do_sample, top_k, top_p, temperature,
        repetition_penalty, subtalker_dosample, subtalker_top_k, subtalker_top_p,
        subtalker_temperature, max_new_tokens, seed, attn_implementation.
        """
        out = self.call("generate", checkpoint=str(checkpoint_dir), mode=mode, dtype=dtype, **kwargs)
        return out["items"]

    def first_step_probs(self, checkpoint_dir, mode: str, dtype: str = "float32", **kwargs) -> dict:
        """{"talker": (B, 3072), "predictor": (B, 2048), "calls": [...], "call_widths": [...]}."""
        return self.call("first_step_probs", checkpoint=str(checkpoint_dir), mode=mode, dtype=dtype, **kwargs)

    def tokenize(self, checkpoint_dir, texts: list[str]) -> list[list[int]]:
        return self.call("tokenize", checkpoint=str(checkpoint_dir), texts=list(texts))["ids"]

    def load_report(self, checkpoint_dir) -> dict:
        """Missing/unexpected/mismatched keys and value checks of the reference loading the directory."""
        return self.call("load_report", checkpoint=str(checkpoint_dir))


def _pack(obj, arrays: dict):
    if isinstance(obj, np.ndarray):
        name = f"a{len(arrays)}"
        arrays[name] = obj
        return {"__npz__": name}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _pack(v, arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_pack(v, arrays) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _unpack(obj, arrays: dict):
    if isinstance(obj, dict):
        if set(obj) == {"__npz__"}:
            return arrays[obj["__npz__"]]
        return {k: _unpack(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack(v, arrays) for v in obj]
    return obj
