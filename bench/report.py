"""Writing benchmark results into docs/benchmarks.md, one section per benchmark.

Each benchmark owns the text between its markers and replaces only that, so results from
different benchmarks (and machines) live side by side.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\nWritten by the benchmark scripts (`make bench-model`, ...); numbers are from the machine "
    "named in each section.\n"
)


def machine(device: str = "cpu") -> str:
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    # The vector units that decide CPU matrix speed: which of them this machine has.
    vector = [flag for flag in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if flag in flags]
    host = (
        f"{cpu} ({' '.join(vector) or 'no AVX2'}), {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)} (host: {host})"
    return host


# What lets one machine measure as another CPU would run: torch's kernels, the bfloat16 kernel's
# path, oneDNN's and MKL's instruction sets.
EMULATION_VARIABLES = (
    "ATEN_CPU_CAPABILITY",
    "QWENTTS_BF16_KERNEL_MAX_ISA",
    "ONEDNN_MAX_CPU_ISA",
    "MKL_ENABLE_INSTRUCTIONS",
)


def emulation() -> tuple[str, str]:
    """The emulated CPU of this run as (a section-name suffix such as "-avx2", the variables as set
    for the text), both empty on a native run. The suffix names oneDNN's instruction set (or else
    torch's capability), which tells the emulated CPUs apart."""
    settings = {name: os.environ[name] for name in EMULATION_VARIABLES if name in os.environ}
    cpu = settings.get("ONEDNN_MAX_CPU_ISA", settings.get("ATEN_CPU_CAPABILITY"))
    return ("-" + cpu.lower() if cpu else ""), " ".join(f"{name}={value}" for name, value in settings.items())


def write_section(name: str, body: str) -> None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = DOC.read_text() if DOC.exists() else HEADER
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
