"""Hardware parsers on outputs recorded from real machines (tests/fixtures/hardware/)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from reprobox.capture import hardware as hw
from reprobox.model import GPU, Hardware, Package

from ...conftest import require

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "hardware"


def fixture(name: str) -> str:
    return (FIX / name).read_text(encoding="utf-8")


# --------------------------------------------------------------------------- CPU and memory


def test_cpuinfo_x86_epyc_keeps_only_numeric_flags():
    cpu = hw.parse_cpuinfo(fixture("cpuinfo_amd_epyc_2cpu.txt"))
    assert cpu.model == "AMD EPYC"
    assert cpu.vendor == "AuthenticAMD"
    assert cpu.cores == 2
    assert {
        "sse4_1",
        "sse4_2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512_bf16",
        "avx512_vnni",
    } <= set(cpu.flags)
    # security / virtualisation / bookkeeping flags never count, nor does x86 "smep"
    for noise in ("fpu", "vme", "smep", "smap", "hypervisor", "aes", "sha_ni", "rdrand", "lm"):
        assert noise not in cpu.flags
    assert list(cpu.flags) == sorted(cpu.flags)


def test_cpuinfo_aarch64_graviton3_names_the_core_and_keeps_sve():
    cpu = hw.parse_cpuinfo(fixture("cpuinfo_graviton3_head.txt"))
    assert cpu.vendor == "ARM"
    assert cpu.model == "ARM Neoverse-V1"
    assert cpu.cores == 1  # the fixture is `head /proc/cpuinfo`: one processor block
    assert {"asimd", "asimdhp", "asimddp", "sve", "svebf16", "svei8mm", "i8mm", "bf16"} <= set(
        cpu.flags
    )
    for noise in ("aes", "sha3", "crc32", "atomics", "paca", "rng", "evtstrm"):
        assert noise not in cpu.flags


def test_arm_and_x86_flag_namespaces_do_not_mix():
    # "sme" is AMD Secure Memory Encryption on x86 and the Scalable Matrix Extension on ARM.
    assert hw.numeric_cpu_flags(["sme", "smep", "avx2"], "x86") == ("avx2",)
    assert hw.numeric_cpu_flags(["sme", "sme2", "asimd"], "arm") == ("asimd", "sme", "sme2")


def test_cpuinfo_of_an_unknown_arm_part_still_says_something():
    text = fixture("cpuinfo_graviton3_head.txt").replace("0xd40", "0xfff")
    assert hw.parse_cpuinfo(text).model == "ARM part 0xfff"


def test_empty_cpuinfo_is_all_unknown():
    assert hw.parse_cpuinfo("") == hw.CpuInfo()


def test_meminfo_in_bytes():
    kib = int(fixture("meminfo_24gib.txt").split()[1])
    assert hw.parse_meminfo(fixture("meminfo_24gib.txt")) == kib * 1024
    assert hw.parse_meminfo("MemFree: 12 kB\n") is None


# --------------------------------------------------------------------------- nvidia-smi banner


@pytest.mark.parametrize(
    "name, driver, cuda",
    [
        ("smi_h100x8_550.90.07.txt", "550.90.07", "12.4"),
        ("smi_a100x2_580.159.04.txt", "580.159.04", "13.0"),
        ("smi_a100_mig_535.104.05.txt", "535.104.05", "12.2"),
        ("smi_m2090x2_390.138.txt", "390.138", None),  # before drivers printed a CUDA version
        ("smi_gtx1660_cuda_na_550.54.10.txt", "550.54.10", None),  # "CUDA Version: N/A"
    ],
)
def test_smi_banner(name, driver, cuda):
    assert hw.parse_smi_banner(fixture(name)) == (driver, cuda)


# --------------------------------------------------------------------------- --query-gpu


def test_query_exactly_as_asked_with_header_and_units():
    gpus = hw.parse_gpu_query(fixture("query_rtx4060_laptop_header_units.csv"))
    assert gpus == [
        GPU(
            name="NVIDIA GeForce RTX 4060 Laptop GPU",
            memory_mib=8188,
            driver="580.173.02",
            compute_capability="8.9",
        )
    ]


def test_query_multi_gpu_with_extra_index_column():
    gpus = hw.parse_gpu_query(fixture("query_rtx3090x2_header_units.csv"))
    assert [g.name for g in gpus] == ["NVIDIA GeForce RTX 3090"] * 2
    assert {(g.memory_mib, g.driver, g.compute_capability) for g in gpus} == {
        (24576, "580.126.09", "8.6")
    }


def test_query_eight_gpus_without_compute_cap():
    gpus = hw.parse_gpu_query(fixture("query_l40s_x8_header_units.csv"))
    assert len(gpus) == 8
    assert all(
        g.name == "NVIDIA L40S"
        and g.memory_mib == 46068
        and g.driver == "580.178.04"
        and g.compute_capability is None
        for g in gpus
    )


def test_query_columns_follow_the_header_not_the_requested_order():
    gpus = hw.parse_gpu_query(fixture("query_titanv_rtx5880_reordered.csv"))
    assert [(g.name, g.compute_capability, g.driver) for g in gpus] == [
        ("NVIDIA TITAN V", "7.0", "570.86.15"),
        ("NVIDIA RTX 5880 Ada Generation", "8.9", "570.86.15"),
    ]


def test_query_without_header_uses_the_requested_fields():
    fields = fixture("query_rtx2080_noheader_nounits.fields").strip().split(",")
    gpus = hw.parse_gpu_query(fixture("query_rtx2080_noheader_nounits.csv"), fields)
    assert gpus == [GPU(name="GeForce RTX 2080", memory_mib=7979, driver="440.64")]


def test_query_error_text_is_not_a_gpu():
    assert hw.parse_gpu_query(fixture("query_error_driver_470.txt")) == []
    assert hw.parse_gpu_query("") == []


def test_not_available_cells_become_unknown():
    # Grace Hopper style unified memory reports "[N/A]" for memory.total.
    text = (
        "name, memory.total [MiB], driver_version, compute_cap\n"
        "NVIDIA GH200 480GB, [N/A], 560.35.03, 9.0\n"
    )
    (gpu,) = hw.parse_gpu_query(text)
    assert gpu.memory_mib is None and gpu.compute_capability == "9.0"


# --------------------------------------------------------------------------- the real call path


def _fake_smi(tmp_path: Path, script: str) -> str:
    exe = tmp_path / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(exe)


def test_old_driver_falls_back_to_a_query_without_compute_cap(tmp_path):
    smi = _fake_smi(
        tmp_path,
        "\n".join(
            [
                "",
                'case "$1" in',
                "  --query-gpu=name,memory.total,driver_version,compute_cap)"
                f" cat '{FIX}/query_error_driver_470.txt'; exit 2;;",
                "  --query-gpu=name,memory.total,driver_version)"
                f" cat '{FIX}/query_rtx4070ti_no_compute_cap.csv';;",
                f"  \"\") cat '{FIX}/smi_gtx1660_cuda_na_550.54.10.txt';;",
                "  *) exit 9;;",
                "esac",
                "",
            ]
        ),
    )
    gpus = hw.query_gpus(smi)
    assert gpus == (
        GPU(
            name="NVIDIA GeForce RTX 4070 Ti SUPER",
            memory_mib=16376,
            driver="560.35.03",
            cuda_driver=None,
            compute_capability=None,
        ),
    )


def test_gpus_get_the_cuda_version_from_the_banner(tmp_path):
    smi = _fake_smi(
        tmp_path,
        "\n".join(
            [
                "",
                f"""if [ -z "$1" ]; then cat '{FIX}/smi_a100x2_580.159.04.txt';"""
                f" else cat '{FIX}/query_rtx3090x2_header_units.csv'; fi",
                "",
            ]
        ),
    )
    gpus = hw.query_gpus(smi)
    assert len(gpus) == 2 and all(g.cuda_driver == "13.0" for g in gpus)


@pytest.mark.parametrize(
    "script",
    [
        # real messages of a machine whose driver is not loaded / has no GPU
        (
            "echo \"NVIDIA-SMI has failed because it couldn't communicate"
            ' with the NVIDIA driver."; exit 9'
        ),
        "echo 'No devices were found'; exit 6",
        "exec sleep 30",
    ],
)
def test_any_nvidia_smi_failure_means_no_gpus(tmp_path, monkeypatch, script):
    smi = _fake_smi(tmp_path, script + "\n")
    monkeypatch.setattr(hw, "NVIDIA_SMI_TIMEOUT", 1.0)
    assert hw.query_gpus(smi, timeout=1.0) == ()


def test_no_nvidia_smi_means_no_gpus(tmp_path):
    assert hw.query_gpus(str(tmp_path / "absent")) == ()
    assert hw.query_gpus(None) == ()


def test_detect_hardware_on_a_recorded_proc_tree(tmp_path):
    (tmp_path / "cpuinfo").write_text(fixture("cpuinfo_graviton3_head.txt"))
    (tmp_path / "meminfo").write_text(fixture("meminfo_24gib.txt"))
    result = hw.detect_hardware((), {}, proc_root=tmp_path, nvidia_smi=None)
    assert isinstance(result, Hardware)
    assert result.cpu_model == "ARM Neoverse-V1" and result.cpu_cores == 1
    assert result.memory_bytes == hw.parse_meminfo(fixture("meminfo_24gib.txt"))
    assert result.gpus == () and result.cuda_runtime is None
    Hardware.from_dict(result.to_dict())  # round-trips through the on-disk form


def test_detect_hardware_without_proc_files_does_not_fail(tmp_path):
    result = hw.detect_hardware((), {}, proc_root=tmp_path / "nothing", nvidia_smi=None)
    assert result == Hardware()


def test_detect_hardware_on_this_machine():
    require(os.path.exists("/proc/cpuinfo"), "a Linux /proc/cpuinfo")
    result = hw.detect_hardware((), {})
    assert result.cpu_cores and result.cpu_cores >= 1
    assert result.memory_bytes and result.memory_bytes > 0


# --------------------------------------------------------------------------- CUDA from packages


def pkg(name: str, version: str) -> Package:
    return Package(name=name, version=version)


@pytest.mark.parametrize(
    "file, cuda",
    [
        ("torch_version_2.4.0+cu121.py.txt", "12.1"),
        ("torch_version_2.6.0+cu124.py.txt", "12.4"),
        ("torch_version_2.11.0.dev20260114+cu130.py.txt", "13.0"),
        ("torch_version_2.8.0+cpu.py.txt", None),
        ("torch_version_2.3.0.dev20240308+rocm6.0.py.txt", None),
    ],
)
def test_torch_version_py(file, cuda):
    info = hw.parse_torch_version_py(fixture(file))
    assert info["cuda"] == cuda
    assert info["__version__"] == file[len("torch_version_") : -len(".py.txt")]


def test_rocm_build_reports_hip_not_cuda():
    info = hw.parse_torch_version_py(fixture("torch_version_2.3.0.dev20240308+rocm6.0.py.txt"))
    assert info["hip"] == "6.0.32830-d62f6a171"


def test_cuda_from_torch_version_py_wins():
    packages = [
        pkg("torch", "2.6.0+cu124"),
        pkg("nvidia-cuda-runtime-cu12", "12.4.127"),
        pkg("nvidia-cudnn-cu12", "9.1.0.70"),
    ]
    files = {"torch/version.py": fixture("torch_version_2.6.0+cu124.py.txt")}
    assert hw.cuda_from_packages(packages, files) == (
        "12.4",
        "9.1.0.70",
        "torch 2.6.0+cu124 (torch/version.py)",
    )


def test_cuda_from_a_pypi_torch_without_local_tag():
    # PyPI's Linux torch wheels carry no +cuXYZ; version.py still knows.
    files = {"torch/version.py": fixture("torch_version_2.4.0+cu121.py.txt").replace("+cu121", "")}
    cuda, _, source = hw.cuda_from_packages([pkg("torch", "2.4.0")], files)
    assert (cuda, source) == ("12.1", "torch 2.4.0 (torch/version.py)")


def test_cuda_from_torch_tag_when_version_py_is_missing():
    assert hw.cuda_from_packages([pkg("torch", "1.13.1+cu117")], {})[::2] == (
        "11.7",
        "torch 1.13.1+cu117 (version tag)",
    )
    assert hw.cuda_from_packages([pkg("torch", "1.2.0+cu92")], {})[0] == "9.2"


def test_cpu_torch_falls_through_to_other_hints():
    files = {"torch/version.py": fixture("torch_version_2.8.0+cpu.py.txt")}
    assert hw.cuda_from_packages([pkg("torch", "2.8.0+cpu")], files) == (None, None, None)
    packages = [pkg("torch", "2.8.0+cpu"), pkg("cupy-cuda12x", "13.3.0")]
    assert hw.cuda_from_packages(packages, files) == ("12", None, "cupy-cuda12x 13.3.0")


@pytest.mark.parametrize(
    "packages, expected",
    [
        (
            [pkg("nvidia-cuda-runtime-cu12", "12.1.105"), pkg("nvidia-cudnn-cu12", "8.9.2.26")],
            ("12.1", "8.9.2.26", "nvidia-cuda-runtime-cu12 12.1.105"),
        ),
        (
            [pkg("nvidia-cuda-runtime", "13.0.96"), pkg("nvidia-cudnn-cu13", "9.13.0.50")],
            ("13.0", "9.13.0.50", "nvidia-cuda-runtime 13.0.96"),
        ),
        ([pkg("cuda-toolkit", "12.8.1")], ("12.8", None, "cuda-toolkit 12.8.1")),
        (
            [pkg("jax", "0.4.23"), pkg("jaxlib", "0.4.23+cuda12.cudnn89")],
            ("12", "8.9", "jaxlib 0.4.23+cuda12.cudnn89"),
        ),
        (
            [pkg("jax-cuda12-plugin", "0.4.35"), pkg("jax-cuda12-pjrt", "0.4.35")],
            ("12", None, "jax-cuda12-pjrt 0.4.35"),
        ),
        ([pkg("cupy-cuda115", "10.6.0")], ("11.5", None, "cupy-cuda115 10.6.0")),
        ([pkg("numpy", "2.1.0"), pkg("tensorflow", "2.17.0")], (None, None, None)),
    ],
)
def test_cuda_hints_from_packages(packages, expected):
    assert hw.cuda_from_packages(packages, {}) == expected
