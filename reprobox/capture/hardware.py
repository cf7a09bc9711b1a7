"""The hardware a run used: CPU and the ISA extensions that change numerics, memory, NVIDIA GPUs
with their driver, and the CUDA / cuDNN the installed packages were built for.

Hardware is informational (it is not part of the environment digest), but it explains why two
runs of the same environment disagree in the last digits: AVX-512 or FMA code paths in BLAS, TF32
on Ampere, a different cuDNN. Detection never fails a capture: a missing ``/proc`` file or
``nvidia-smi`` simply leaves the field empty.

Every parser here is a pure function over text, tested on outputs recorded from real machines
(``tests/fixtures/hardware/``). CUDA and cuDNN versions are read from package metadata and from
the raw text of ``torch/version.py`` handed over by the probe, never by importing torch (seconds,
and it may initialise a GPU).
"""

from __future__ import annotations

import csv
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import proc
from ..errors import ReproboxError
from ..model import GPU, Hardware, Package

log = logging.getLogger("reprobox.capture.hardware")

#: What we ask nvidia-smi per GPU. ``compute_cap`` is unknown to drivers older than ~510.
QUERY_FIELDS = ("name", "memory.total", "driver_version", "compute_cap")
#: nvidia-smi is local and answers in well under a second; a hung driver must not hang a capture.
NVIDIA_SMI_TIMEOUT = 15.0

# --------------------------------------------------------------------------- CPU

#: x86 flags (as /proc/cpuinfo spells them) that select different floating-point code paths in
#: BLAS/LAPACK, oneDNN, XLA and numpy: the vector width and fused multiply-add change rounding.
_X86_NUMERIC = frozenset(
    {
        "sse4_1",
        "sse4_2",
        "sse4a",
        "avx",
        "avx2",
        "fma",
        "fma4",
        "f16c",
        "xop",
        "avx_vnni",
        "avx_vnni_int8",
        "avx_vnni_int16",
        "avx_ne_convert",
        "avx_ifma",
    }
)
_X86_NUMERIC_PREFIXES = ("avx512", "amx", "avx10")
#: ARM (aarch64 "Features", 32-bit "Features"): SIMD width, half/bfloat16 and dot products.
_ARM_NUMERIC = frozenset(
    {
        "neon",
        "vfpv3",
        "vfpv4",
        "asimd",
        "asimdhp",
        "asimddp",
        "asimdfhm",
        "asimdrdm",
        "fphp",
        "bf16",
        "i8mm",
        "ebf16",
        "f8fma",
        "f8dp4",
        "f8dp2",
        "faminmax",
    }
)
#: Prefixes: sve, sve2, svebf16, svei8mm...; sme, sme2, smef64f64...
_ARM_NUMERIC_PREFIXES = ("sve", "sme")

#: aarch64 cpuinfo has no "model name": implementer and part numbers identify the core.
_ARM_IMPLEMENTERS = {
    "0x41": "ARM",
    "0x42": "Broadcom",
    "0x43": "Cavium",
    "0x48": "HiSilicon",
    "0x4e": "NVIDIA",
    "0x50": "APM",
    "0x51": "Qualcomm",
    "0x61": "Apple",
    "0x6d": "Microsoft",
    "0xc0": "Ampere",
}
_ARM_PARTS = {
    ("0x41", "0xd03"): "Cortex-A53",
    ("0x41", "0xd07"): "Cortex-A57",
    ("0x41", "0xd08"): "Cortex-A72",
    ("0x41", "0xd0b"): "Cortex-A76",
    ("0x41", "0xd0c"): "Neoverse-N1",
    ("0x41", "0xd40"): "Neoverse-V1",
    ("0x41", "0xd49"): "Neoverse-N2",
    ("0x41", "0xd4f"): "Neoverse-V2",
    ("0x41", "0xd8e"): "Neoverse-N3",
    ("0x41", "0xd84"): "Neoverse-V3",
    ("0xc0", "0xac3"): "AmpereOne",
}


@dataclass(frozen=True)
class CpuInfo:
    model: str | None = None
    vendor: str | None = None
    cores: int | None = None  # logical CPUs ("processor" entries)
    flags: tuple[str, ...] = ()  # numerics-relevant only, sorted


def numeric_cpu_flags(flags: Sequence[str], isa: str = "x86") -> tuple[str, ...]:
    """Keep only the ISA extensions that can change floating-point results, sorted.

    ``isa`` is ``x86`` (cpuinfo "flags") or ``arm`` ("Features"): the two namespaces overlap in
    spelling (x86 "sme" is AMD memory encryption, ARM "sme" is the matrix extension).
    """
    exact, prefixes = (
        (_ARM_NUMERIC, _ARM_NUMERIC_PREFIXES)
        if isa == "arm"
        else (_X86_NUMERIC, _X86_NUMERIC_PREFIXES)
    )
    keep = {f.strip().lower() for f in flags}
    return tuple(sorted(f for f in keep if f in exact or f.startswith(prefixes)))


def parse_cpuinfo(text: str) -> CpuInfo:
    """Read /proc/cpuinfo (x86 or ARM): model, vendor, logical CPU count, numeric ISA flags.

    The first processor's entries are used; the model comes from "model name" (x86, 32-bit ARM),
    "cpu" (POWER) or, on aarch64, from the implementer and part numbers.
    """
    first: dict[str, str] = {}
    processors = 0
    for raw in text.splitlines():
        key, sep, value = raw.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        value = value.strip()
        if key == "processor" and value.isdigit():
            processors += 1
            continue
        # The first occurrence of each key describes the first CPU; later CPUs repeat it (or,
        # on big.LITTLE parts, describe other cores, whose extra flags the kernel may not use).
        first.setdefault(key, value)
    model = first.get("model name") or first.get("cpu model") or None
    vendor = first.get("vendor_id") or first.get("vendor") or None
    implementer = first.get("cpu implementer", "").lower() or None
    if implementer:
        part = first.get("cpu part", "").lower()
        vendor = vendor or _ARM_IMPLEMENTERS.get(implementer, f"implementer {implementer}")
        if not model:
            core = _ARM_PARTS.get((implementer, part))
            model = f"{vendor} {core}" if core else f"{vendor} part {part or 'unknown'}"
    if not model and first.get("cpu"):  # POWER: "cpu : POWER9 (raw), altivec supported"
        model = first["cpu"]
    if "flags" in first:
        flags = numeric_cpu_flags(first["flags"].split(), "x86")
    else:
        flags = numeric_cpu_flags(first.get("features", "").split(), "arm")
    return CpuInfo(model=model, vendor=vendor, cores=processors or None, flags=flags)


def parse_meminfo(text: str) -> int | None:
    """MemTotal from /proc/meminfo, in bytes."""
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


# --------------------------------------------------------------------------- NVIDIA GPUs

_EMPTY_VALUES = {
    "",
    "n/a",
    "[n/a]",
    "[not supported]",
    "not supported",
    "[unknown error]",
    "[insufficient permissions]",
    "[gpu is lost]",
    "[no data]",
}
_HEADER_CELL = re.compile(r"^([a-z_][a-z0-9_.]*)(?:\s*\[[^\]]*\])?$")
_FIELD_ALIASES = {"gpu_name": "name", "compute_capability": "compute_cap"}


def _cell(value: str) -> str | None:
    v = value.strip()
    return None if v.lower() in _EMPTY_VALUES else v


def _mib(value: str | None) -> int | None:
    if value is None:
        return None
    m = re.match(r"^(\d+(?:\.\d+)?)\s*(MiB)?$", value)
    return int(float(m.group(1))) if m else None


def parse_gpu_query(text: str, fields: Sequence[str] = QUERY_FIELDS) -> list[GPU]:
    """Parse ``nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]`` output.

    With a header line the columns are taken from it (any order, units such as ``[MiB]`` in the
    header and ``MiB`` in the cells are accepted); without one, ``fields`` gives the order that
    was asked for. ``[N/A]`` and ``[Not Supported]`` cells become unknown, not errors.
    """
    rows = [
        r for r in csv.reader(text.splitlines(), skipinitialspace=True) if any(c.strip() for c in r)
    ]
    if not rows:
        return []
    columns = [f.strip().lower() for f in fields]
    header = [_HEADER_CELL.match(c.strip().lower()) for c in rows[0]]
    if all(header) and any(m.group(1) in ("name", "gpu_name", "index") for m in header if m):
        columns = [m.group(1) for m in header if m]
        rows = rows[1:]
    columns = [_FIELD_ALIASES.get(c, c) for c in columns]
    gpus = []
    for row in rows:
        if len(row) != len(columns):
            log.debug(
                "skipping an nvidia-smi line with %d cells, expected %d", len(row), len(columns)
            )
            continue
        cells = {col: _cell(val) for col, val in zip(columns, row)}
        name = cells.get("name")
        if not name:
            continue
        gpus.append(
            GPU(
                name=name,
                memory_mib=_mib(cells.get("memory.total")),
                driver=cells.get("driver_version"),
                compute_capability=cells.get("compute_cap"),
            )
        )
    return gpus


def parse_smi_banner(text: str) -> tuple[str | None, str | None]:
    """Driver version and the highest CUDA version it supports, from plain ``nvidia-smi``.

    Drivers before 410 print no "CUDA Version"; some containers print "CUDA Version: N/A".
    """
    driver = re.search(r"Driver Version:\s*([0-9][0-9.]*)", text)
    cuda = re.search(r"CUDA Version:\s*([0-9]+\.[0-9]+)", text)
    return (driver.group(1) if driver else None, cuda.group(1) if cuda else None)


def _run_smi(exe: str, args: Sequence[str], timeout: float) -> tuple[int, str] | None:
    """(exit status, stdout + stderr) of one nvidia-smi call, or None when it could not run."""
    try:
        done = proc.run([exe, *args], check=False, timeout=timeout, what="nvidia-smi")
    except ReproboxError as exc:  # vanished since `which`, or hung past the timeout
        log.info("nvidia-smi gave no answer: %s", exc.message)
        return None
    if done.returncode != 0:
        log.info(
            "nvidia-smi %s exited %d: %s",
            " ".join(args),
            done.returncode,
            (done.stdout + done.stderr).strip()[-300:],
        )
    return done.returncode, done.stdout + ("" if done.returncode == 0 else done.stderr)


def query_gpus(
    nvidia_smi: str | None = "nvidia-smi", timeout: float = NVIDIA_SMI_TIMEOUT
) -> tuple[GPU, ...]:
    """Ask nvidia-smi for the GPUs; no binary, no driver or any failure means no GPUs."""
    exe = shutil.which(nvidia_smi) if nvidia_smi else None
    if exe is None:
        return ()
    fields = list(QUERY_FIELDS)
    # With its header line, the answer says which column is which: the parser does not depend
    # on nvidia-smi keeping the order we asked for, and "81559 MiB" carries its unit.
    answer = _run_smi(exe, [f"--query-gpu={','.join(fields)}", "--format=csv"], timeout)
    if answer and answer[0] != 0 and "compute_cap" in answer[1]:
        # 'Field "compute_cap" is not a valid field to query.' (drivers before ~510): ask without.
        fields.remove("compute_cap")
        answer = _run_smi(exe, [f"--query-gpu={','.join(fields)}", "--format=csv"], timeout)
    if not answer or answer[0] != 0:
        return ()
    gpus = parse_gpu_query(answer[1], fields)
    if not gpus:
        return ()
    banner = _run_smi(exe, [], timeout)
    driver, cuda = parse_smi_banner(banner[1] if banner and banner[0] == 0 else "")
    return tuple(
        GPU(
            name=g.name,
            memory_mib=g.memory_mib,
            driver=g.driver or driver,
            cuda_driver=cuda,
            compute_capability=g.compute_capability,
        )
        for g in gpus
    )


# --------------------------------------------------------------------------- CUDA from packages

_TORCH_ASSIGN = re.compile(
    r"^(?P<key>__version__|cuda|hip)\s*(?::[^=\n]*)?=\s*(?P<val>'[^'\n]*'|\"[^\"\n]*\"|None)\s*(?:#.*)?$",
    re.MULTILINE,
)
_CU_TAG = re.compile(r"\+cu(\d{2,3})\b")  # torch 2.4.0+cu121 -> 12.1 ; +cu92 -> 9.2
_CUPY = re.compile(r"^cupy-cuda(\d{2,3})(x?)$")  # cupy-cuda12x (major), cupy-cuda115 (11.5)
_CUDA_WHEEL = re.compile(r"^nvidia-cuda-runtime(?:-cu(\d+))?$")
_CUDNN_WHEEL = re.compile(r"^nvidia-cudnn(?:-cu(\d+))?$")
_JAX_PLUGIN = re.compile(r"^jax-cuda(\d+)-(?:plugin|pjrt)$")
_JAXLIB_TAG = re.compile(r"\+cuda(\d+)(?:\.cudnn(\d)(\d+))?")  # 0.4.23+cuda12.cudnn89


def parse_torch_version_py(text: str) -> dict[str, str | None]:
    """``__version__``, ``cuda`` and ``hip`` from the raw text of torch/version.py (not
    executed)."""
    out: dict[str, str | None] = {}
    for m in _TORCH_ASSIGN.finditer(text):
        val = m.group("val")
        out.setdefault(m.group("key"), None if val == "None" else val[1:-1])
    return out


def _cu_tag_version(tag: str) -> str:
    return f"{tag[:-1]}.{tag[-1]}"


def _major_minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def cuda_from_packages(
    packages: Sequence[Package], files: Mapping[str, str]
) -> tuple[str | None, str | None, str | None]:
    """(cuda_runtime, cudnn, cuda_source) that the installed packages were built for or ship.

    Preference: what torch was compiled against (its version.py, then its ``+cuXYZ`` tag), then
    the CUDA runtime wheel, the ``cuda-toolkit`` wheel, then JAX and CuPy hints (major only).
    cuDNN comes from the cuDNN wheel, else from a jaxlib ``+cuda12.cudnn89`` tag.
    """
    by_name = {p.name: p for p in packages}
    candidates: list[tuple[str, str]] = []  # (version, source)
    cudnn: str | None = None

    torch = by_name.get("torch")
    version_py = files.get("torch/version.py")
    if version_py:
        info = parse_torch_version_py(version_py)
        if info.get("cuda"):
            label = info.get("__version__") or (torch.version if torch else "?")
            candidates.append((info["cuda"] or "", f"torch {label} (torch/version.py)"))
    if torch:
        m = _CU_TAG.search(torch.version)
        if m:
            candidates.append((_cu_tag_version(m.group(1)), f"torch {torch.version} (version tag)"))

    for name in sorted(by_name):
        pkg = by_name[name]
        if _CUDA_WHEEL.match(name):
            candidates.append((_major_minor(pkg.version), f"{name} {pkg.version}"))
    if "cuda-toolkit" in by_name:
        pkg = by_name["cuda-toolkit"]
        candidates.append((_major_minor(pkg.version), f"cuda-toolkit {pkg.version}"))
    jaxlib = by_name.get("jaxlib")
    if jaxlib:
        m = _JAXLIB_TAG.search(jaxlib.version)
        if m:
            candidates.append((m.group(1), f"jaxlib {jaxlib.version}"))
            if m.group(2):
                cudnn = f"{m.group(2)}.{m.group(3)}"
    for name in sorted(by_name):
        m = _JAX_PLUGIN.match(name)
        if m:
            candidates.append((m.group(1), f"{name} {by_name[name].version}"))
    for name in sorted(by_name):
        m = _CUPY.match(name)
        if m:
            digits, wildcard = m.group(1), m.group(2)
            version = digits if wildcard else _cu_tag_version(digits)
            candidates.append((version, f"{name} {by_name[name].version}"))

    for name in sorted(by_name):
        if _CUDNN_WHEEL.match(name):
            cudnn = by_name[name].version.split("+")[0]
            break

    for version, source in candidates:
        if version and re.fullmatch(r"\d+(\.\d+)*", version):
            return version, cudnn, source
    return None, cudnn, None


# --------------------------------------------------------------------------- all together


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def detect_hardware(
    packages: Sequence[Package],
    files: Mapping[str, str],
    *,
    proc_root: Path = Path("/proc"),
    nvidia_smi: str | None = "nvidia-smi",
) -> Hardware:
    """CPU, memory and GPUs of this machine, plus CUDA/cuDNN from the target's packages.

    Never raises for missing information: on macOS or in a locked-down container the fields
    that cannot be read stay empty.
    """
    cpu = parse_cpuinfo(_read(Path(proc_root) / "cpuinfo") or "")
    memory = parse_meminfo(_read(Path(proc_root) / "meminfo") or "")
    cores = cpu.cores
    if cores is None and Path(proc_root) == Path("/proc"):
        cores = os.cpu_count()
    cuda_runtime, cudnn, cuda_source = cuda_from_packages(packages, files)
    return Hardware(
        cpu_model=cpu.model,
        cpu_vendor=cpu.vendor,
        cpu_cores=cores,
        cpu_flags=cpu.flags,
        memory_bytes=memory,
        gpus=query_gpus(nvidia_smi),
        cuda_runtime=cuda_runtime,
        cudnn=cudnn,
        cuda_source=cuda_source,
    )
