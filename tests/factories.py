"""Test-data builders: the one place tests get records, environments and files to work on.

* ``make_env`` / ``make_exp``: a small hand-written environment and experiment (their digest and
  id are pinned by ``test_model_store``).
* ``small`` / ``datascience`` and their variants: real captures recorded on a Debian 12 machine
  (``tests/fixtures/build/``: a small venv with attrs, six, pip, setuptools and an editable package
  at the repository root, and a ~120-distribution data-science venv), changed with
  ``dataclasses.replace`` so every field keeps a shape the capture really produces.
* ``cpu_env`` / ``with_packages``: a numerics-heavy environment as found on a Debian 12 host with
  numpy/scipy wheels, for the comparison tests.
* ``make_elf``: a minimal ELF shared object, for the library-scanning tests; ``in_probe``: code
  run as the probe runs (a fresh ``python -I`` with the probe imported).
* ``new_repo`` / ``make_venv`` / ``capture`` / ``publish_and_clone`` / ``reprobox``: real projects
  (git repository, virtualenv) driven through the real CLI, for the end-to-end tests.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from reprobox.model import (
    GPU,
    Environment,
    Experiment,
    GitInfo,
    Hardware,
    Interpreter,
    OSInfo,
    Package,
    PackageSource,
    SystemPackage,
)

# --------------------------------------------------------------------------- hand-written records


def make_env(numpy: str = "1.26.4") -> Environment:
    return Environment(
        interpreter=Interpreter(
            implementation="cpython",
            version="3.11.7",
            abi="cp311",
            soabi="cpython-311-x86_64-linux-gnu",
            platform="linux-x86_64",
            kind="venv",
        ),
        packages=(
            Package("numpy", numpy, wheel_tags=("cp311-cp311-manylinux_2_17_x86_64",)),
            Package(
                "mypkg",
                "0.1.0",
                PackageSource("directory", path="src/mypkg", editable=True, in_repo=True),
            ),
        ),
        system_packages=(
            SystemPackage("libc6", "2.36-9+deb12u4", arch="amd64", libraries=("libc.so.6",)),
        ),
        os=OSInfo(id="debian", version_id="12", codename="bookworm", arch="x86_64"),
        hardware=Hardware(cpu_model="Example CPU", cpu_cores=2, cpu_flags=("avx2", "fma")),
    )


def make_exp(
    env: Environment,
    name: str = "baseline",
    acc: float = 0.93,
    created: str = "2026-11-27T10:00:00Z",
) -> Experiment:
    return Experiment(
        name=name,
        command="python train.py",
        cwd=".",
        git=GitInfo(commit="a" * 40, branch="main"),
        environment_digest=env.digest,
        created=created,
        tool_version="0.1.0",
        metrics={"metrics.json": {"accuracy": acc}},
        env={"PYTHONHASHSEED": "0"},
    ).with_id()


# --------------------------------------------------------------------------- real captures


FIXTURES = Path(__file__).resolve().parent / "fixtures" / "build"
GOLDEN = Path(__file__).resolve().parent / "golden"


def load_env(name: str = "environment.json") -> Environment:
    return Environment.from_dict(json.loads((FIXTURES / name).read_text()))


def load_exp(name: str = "experiment.json") -> Experiment:
    return Experiment.from_dict(json.loads((FIXTURES / name).read_text()))


def small() -> tuple[Experiment, Environment]:
    return load_exp(), load_env()


def datascience() -> tuple[Experiment, Environment]:
    return load_exp("experiment-datascience.json"), load_env("environment-datascience.json")


def with_env(exp: Experiment, env: Environment) -> Experiment:
    """The experiment re-pointed at a changed environment (digest and id follow)."""
    return replace(exp, environment_digest=env.digest, id="").with_id()


def ubuntu(env: Environment) -> Environment:
    os_info = replace(
        env.os,
        id="ubuntu",
        codename="jammy",
        version_id="22.04",
        id_like=("debian",),
        pretty_name="Ubuntu 22.04.4 LTS",
        glibc="2.35",
    )
    return replace(env, os=os_info)


def macos(env: Environment) -> Environment:
    return replace(
        env, os=OSInfo(system="Darwin", arch="arm64", kernel="23.4.0"), system_packages=()
    )


def gpu(env: Environment) -> Environment:
    hw = replace(
        env.hardware,
        cuda_runtime="12.1",
        cudnn="8.9.2",
        cuda_source="torch",
        gpus=(GPU("NVIDIA A100-SXM4-80GB", 81920, "535.104.05", "12.2", "8.0"),),
    )
    return replace(ubuntu(env), hardware=hw)


def mixed_sources(env: Environment) -> Environment:
    """Add the source kinds the small capture lacks: VCS, archive, a nested directory."""
    extra = (
        Package(
            "pyjokes",
            "0.6.0",
            PackageSource(
                "vcs",
                url="https://github.com/pyjokes/pyjokes",
                vcs="git",
                commit="3b3b7f6a8f6e9d2c1b0a9f8e7d6c5b4a39281706",
            ),
        ),
        Package(
            "tomli",
            "2.0.1",
            PackageSource(
                "archive",
                url="https://files.pythonhosted.org/packages/97/75/10a9ebee3fd790d20926a90a2547f0bf78f371b2f13aa822c759680ca7b9/tomli-2.0.1-py3-none-any.whl",
                hash="sha256=939de3e7a6161af0c887ef91b7d41a53e7c5a1ca976325f429cb46ea9bc30ecc",
            ),
        ),
        Package(
            "helpers",
            "0.2.0",
            PackageSource("directory", path="libs/helpers", editable=False, in_repo=True),
        ),
    )
    return replace(env, packages=env.packages + extra)


def outside_folder(env: Environment) -> Environment:
    """A package installed from a folder outside the repository (never read by a rebuild)."""
    return replace(
        env,
        packages=env.packages
        + (
            Package(
                "outside",
                "1.0",
                PackageSource(
                    "directory", path="/home/someone/outside", editable=True, in_repo=False
                ),
            ),
        ),
    )


def no_packages(env: Environment) -> Environment:
    return replace(env, packages=(), system_packages=())


# --------------------------------------------------------------------------- numerics

# Names and versions as found on a real Debian 12 host with numpy/scipy wheels (numpy.libs and
# scipy.libs bundle scipy-openblas) and on a CUDA host with torch wheels.
NUMPY_BLAS = "/venv/lib/python3.11/site-packages/numpy.libs/libscipy_openblas64_-32a4b2a6.so"
SCIPY_BLAS = "/venv/lib/python3.11/site-packages/scipy.libs/libscipy_openblas-6cdc3b4a.so"


def cpu_env(**changes: Any) -> Environment:
    env = Environment(
        interpreter=Interpreter(
            "cpython",
            "3.11.7",
            abi="cp311",
            soabi="cpython-311-x86_64-linux-gnu",
            platform="linux-x86_64",
            kind="venv",
        ),
        packages=(
            Package("numpy", "2.4.6", wheel_tags=("cp311-cp311-manylinux_2_27_x86_64",)),
            Package("scipy", "1.17.1"),
            Package("rich", "13.7.1"),
            Package("accelerate", "0.30.1"),  # Hugging Face's, not Apple's: no BLAS
            Package(
                "mypkg",
                "0.1.0",
                PackageSource("directory", path="src/mypkg", editable=True, in_repo=True),
            ),
        ),
        system_packages=(
            SystemPackage(
                "libc6", "2.36-9+deb12u14", arch="amd64", libraries=("libc.so.6", "libm.so.6")
            ),
            SystemPackage(
                "libgomp1", "12.2.0-14+deb12u1", arch="amd64", libraries=("libgomp.so.1",)
            ),
        ),
        os=OSInfo(
            id="debian",
            version_id="12",
            codename="bookworm",
            arch="x86_64",
            glibc="2.36",
            kernel="6.1.0-18-amd64",
            pretty_name="Debian GNU/Linux 12 (bookworm)",
        ),
        hardware=Hardware(
            cpu_model="AMD EPYC 7B13",
            cpu_vendor="AuthenticAMD",
            cpu_cores=2,
            cpu_flags=("avx", "avx2", "fma", "sse4_2"),
            memory_bytes=24 * 2**30,
        ),
        unowned_libraries=(NUMPY_BLAS, SCIPY_BLAS),
    )
    return replace(env, **changes)


def with_packages(env: Environment, *pkgs: Package, drop: tuple[str, ...] = ()) -> Environment:
    names = {p.name for p in pkgs} | set(drop)
    return replace(env, packages=tuple(p for p in env.packages if p.name not in names) + pkgs)


# --------------------------------------------------------------------------- ELF files


def in_probe(body: str, *args: str, timeout: float = 60) -> Any:
    """Run ``body`` as the probe runs: a fresh ``python -I`` with the probe imported as
    ``probe`` (no pytest threads or state around a fork), ``args`` as ``sys.argv[1:]``; it prints
    one JSON value, returned here. A hang is a failure after ``timeout`` seconds."""
    folder = Path(__file__).resolve().parents[1] / "reprobox" / "payload"
    code = f"import json, os, sys\nsys.path.insert(0, {str(folder)!r})\nimport probe\n{body}"
    done = subprocess.run(
        [sys.executable, "-I", "-c", code, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
    )
    return json.loads(done.stdout)


def make_elf(bits, endian, machine, needed, soname=None, runpath=None):
    """A minimal shared object: one PT_LOAD over the file, one PT_DYNAMIC, a string table."""
    e = "<" if endian == "little" else ">"
    strtab, offs = b"\0", {}
    for s in [*needed, *(x for x in (soname, runpath) if x)]:
        offs[s] = len(strtab)
        strtab += s.encode() + b"\0"
    ehsize, phentsize = (64, 56) if bits == 64 else (52, 32)
    phoff, str_off = ehsize, ehsize + 2 * phentsize
    dyn_off = str_off + len(strtab) + (-(str_off + len(strtab))) % 8
    base = 0x10000
    dyn = [(1, offs[n]) for n in needed]
    if soname:
        dyn.append((14, offs[soname]))
    if runpath:
        dyn.append((29, offs[runpath]))
    dyn += [(5, base + str_off), (10, len(strtab)), (0, 0)]
    dynbytes = b"".join(struct.pack(e + ("qQ" if bits == 64 else "iI"), t, v) for t, v in dyn)
    total = dyn_off + len(dynbytes)
    ident = b"\x7fELF" + bytes([bits // 32, 1 if endian == "little" else 2, 1, 0]) + b"\0" * 8
    if bits == 64:
        eh = ident + struct.pack(
            e + "HHIQQQIHHHHHH", 3, machine, 1, 0, phoff, 0, 0, ehsize, phentsize, 2, 64, 0, 0
        )
        ph = struct.pack(e + "IIQQQQQQ", 1, 5, 0, base, base, total, total, 0x1000)
        ph += struct.pack(
            e + "IIQQQQQQ",
            2,
            6,
            dyn_off,
            base + dyn_off,
            base + dyn_off,
            len(dynbytes),
            len(dynbytes),
            8,
        )
    else:
        eh = ident + struct.pack(
            e + "HHIIIIIHHHHHH", 3, machine, 1, 0, phoff, 0, 0, ehsize, phentsize, 2, 40, 0, 0
        )
        ph = struct.pack(e + "IIIIIIII", 1, 0, base, base, total, total, 5, 0x1000)
        ph += struct.pack(
            e + "IIIIIIII",
            2,
            dyn_off,
            base + dyn_off,
            base + dyn_off,
            len(dynbytes),
            len(dynbytes),
            6,
            4,
        )
    body = eh + ph + strtab
    return body + b"\0" * (dyn_off - len(body)) + dynbytes


# --------------------------------------------------------------------------- projects, end to end
#
# A real git repository, a real virtualenv and the real CLI, for the end-to-end tests.

PYTHON_VERSION = "3.11.7"
DOCKER = (
    "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")
)


def sh(
    cwd: Path, *argv: str, env: Optional[dict] = None, check: bool = True
) -> subprocess.CompletedProcess:
    done = subprocess.run(
        list(argv),
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env or os.environ.copy(),
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{argv} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def reprobox_exe() -> str:
    here = Path(sys.executable).parent / "reprobox"
    return str(here) if here.exists() else (shutil.which("reprobox") or "reprobox")


def reprobox(
    cwd: Path,
    *args: str,
    venv: Optional[Path] = None,
    check: bool = True,
    extra_env: Optional[dict] = None,
) -> subprocess.CompletedProcess:
    """The real CLI, as a user types it (with the project's venv active when given)."""
    env = os.environ.copy()
    for var in ("VIRTUAL_ENV", "OMP_NUM_THREADS", "PYTHONHASHSEED"):
        env.pop(var, None)
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    env.update(extra_env or {})
    return sh(cwd, reprobox_exe(), *args, env=env, check=check)


def make_venv(path: Path, *requirements: str, editable: Optional[Path] = None) -> Path:
    python = find_python()
    sh(path.parent, python, "-m", "venv", str(path))
    pip = [
        str(path / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    if requirements:
        sh(path.parent, *pip, *requirements)
    if editable is not None:
        sh(path.parent, *pip, "-e", str(editable))
    return path


def find_python() -> str:
    from reprobox.backends.venv import find_interpreter

    return str(find_interpreter(PYTHON_VERSION))


def new_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    sh(path, "git", "init", "-q", "-b", "main")
    sh(path, "git", "config", "user.email", "dev@example.org")
    sh(path, "git", "config", "user.name", "Dev")
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    commit(path, "initial")
    return path


def commit(repo: Path, message: str, *paths: str) -> None:
    sh(repo, "git", "add", *(paths or ("-A",)))
    sh(repo, "git", "commit", "-q", "-m", message)


def capture(repo: Path, venv: Path, *args: str, env: Optional[dict] = None) -> dict:
    done = reprobox(repo, "capture", "--json", *args, venv=venv, extra_env=env)
    data = json.loads(done.stdout)
    commit(repo, "reprobox capture", ".reprobox")
    return data


def publish_and_clone(repo: Path, where: Path) -> Path:
    """Push to a bare origin and clone it afresh: no venv, no results, no caches there."""
    origin = where / "origin.git"
    sh(where, "git", "init", "-q", "--bare", "-b", "main", str(origin))
    sh(repo, "git", "push", "-q", str(origin), "main")
    clone = where / "clone"
    sh(where, "git", "clone", "-q", str(origin), str(clone))
    return clone


def run_json(clone: Path, exp: str, *args: str) -> tuple[int, dict, str]:
    done = reprobox(clone, "run", exp, "--json", *args, check=False)
    assert done.returncode in (0, 1), f"reprobox run failed:\n{done.stdout}\n{done.stderr}"
    return done.returncode, json.loads(done.stdout), done.stderr
