#!/usr/bin/env bash
# Build the reference environment <repo>/.venv-ref for the qwen-tts oracle (tests/reference/oracle.py).
#
# qwen-tts 0.1.1 runs only on transformers 4.57.3, while the project uses transformers 5.x, so the
# reference lives in its own virtual environment. Idempotent: a stamp file records what was
# installed, and a second run with the same stamp returns at once. Needs only the package
# registries (pip's configuration points at them).
#
# Environment:
#   QWEN_TTS_REF_VENV   where to build (default <repo>/.venv-ref)
#   PYTHON              interpreter that creates the venv (default python3; 3.10 or 3.11)
#   FORCE=1             rebuild the installs even when the stamp matches
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${QWEN_TTS_REF_VENV:-$REPO_ROOT/.venv-ref}"
STANDIN="$REPO_ROOT/tests/reference/torchaudio_standin"
STAMP="$VENV/.qwentts-reference-stamp"
TORCH_PIN="torch==2.13.0"
QWEN_PIN="qwen-tts==0.1.1"
OTHERS=(transformers==4.57.3 accelerate==1.12.0 librosa soundfile einops onnxruntime sox numpy safetensors)
STAMP_TEXT="v1 $TORCH_PIN $QWEN_PIN ${OTHERS[*]} standin=$STANDIN"

stamp_ok() {
    [ "${FORCE:-0}" != "1" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_TEXT" ] \
        && [ -x "$VENV/bin/python" ]
}

if stamp_ok; then
    exit 0
fi

# One builder at a time (parallel test sessions); flock is in util-linux, skip it if absent.
LOCK="${TMPDIR:-/tmp}/qwentts-venv-ref.$(printf '%s' "$VENV" | cksum | cut -d' ' -f1).lock"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$LOCK"
    flock 9
    if stamp_ok; then
        exit 0
    fi
fi

echo "setup_env: building the reference environment in $VENV" >&2
if [ ! -x "$VENV/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# torch first, pinned: an unpinned resolve later would pull a newer torch plus CUDA packages.
"${PIP[@]}" install "$TORCH_PIN"
# qwen-tts without its dependency list (it would re-resolve torch and pull torchaudio).
"${PIP[@]}" install --no-deps "$QWEN_PIN"
"${PIP[@]}" install "${OTHERS[@]}"

# qwen_tts imports torchaudio.compliance.kaldi at module level (25 Hz tokenizer only); no CPU
# torchaudio wheel exists for this torch, so a stand-in package written by the project is put on
# the path.
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
printf '%s\n' "$STANDIN" > "$SITE/qwentts_torchaudio_standin.pth"

# Smoke test: the two entry points import (their stdout noise is expected and discarded).
if ! "$VENV/bin/python" -c 'from qwen_tts import Qwen3TTSModel, Qwen3TTSTokenizer' >/dev/null; then
    echo "setup_env: qwen_tts does not import in $VENV" >&2
    exit 1
fi
"$VENV/bin/python" - <<'EOF'
import torch, transformers
assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__
assert transformers.__version__ == "4.57.3", transformers.__version__
EOF

printf '%s\n' "$STAMP_TEXT" > "$STAMP"
echo "setup_env: reference environment ready" >&2
