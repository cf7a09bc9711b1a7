"""payload/bytecode.py, run for real in a child interpreter over a site-packages folder of its
own: it writes the bytecode of exactly the files the named distributions' RECORDs list, leaves
their test suites out, and survives files that are not valid Python."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from reprobox import payload


def _dist(site: Path, name: str, version: str, files: dict[str, str]) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    rows = []
    for rel, text in files.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        rows.append(f"{rel},,")
    rows.append(f"{info.name}/METADATA,,")
    rows.append(f"{info.name}/RECORD,,")
    (info / "RECORD").write_text("\n".join(rows) + "\n")


def _run(site: Path, lock: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH puts the folder on sys.path, as site-packages is in the image (-I there).
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, str(payload.script("bytecode")), str(lock)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def _pyc(path: Path) -> Path:
    return Path(importlib.util.cache_from_source(str(path)))


def test_compiles_the_listed_distributions_and_leaves_their_test_suites_out(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    _dist(
        site,
        "Fancy_Lib",
        "1.0",
        {
            "fancy/__init__.py": "X = 1\n",
            "fancy/core/ops.py": "def f():\n    return 2\n",
            "fancy/tests/test_ops.py": "def test_f():\n    pass\n",
            "fancy/core/test/helpers.py": "Y = 3\n",
            "fancy/testing.py": "Z = 4\n",  # a public module, not a test suite
            "fancy/data/broken.py": "def (:\n",  # not Python: no bytecode, no failure
        },
    )
    _dist(site, "other", "2.0", {"other/__init__.py": "O = 1\n"})
    lock = tmp_path / "compiled.txt"
    lock.write_text("# Part of requirements.lock\nfancy-lib==1.0 --hash=sha256:" + "a" * 64 + "\n")

    done = _run(site, lock)

    assert done.returncode == 0, done.stderr
    assert "bytecode: 3 of 4 files compiled" in done.stdout
    for rel in ("fancy/__init__.py", "fancy/core/ops.py", "fancy/testing.py"):
        assert _pyc(site / rel).is_file(), rel
    for rel in ("fancy/tests/test_ops.py", "fancy/core/test/helpers.py", "fancy/data/broken.py"):
        assert not _pyc(site / rel).exists(), rel
    # a distribution this step did not install is left alone
    assert not _pyc(site / "other/__init__.py").exists()


def test_the_bytecode_is_what_python_itself_would_load(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _dist(site, "mod", "1.0", {"mod/__init__.py": "VALUE = 41 + 1\n"})
    lock = tmp_path / "all.txt"
    lock.write_text("mod==1.0 --hash=sha256:" + "b" * 64 + "\n")
    assert _run(site, lock).returncode == 0
    pyc = _pyc(site / "mod/__init__.py")
    header = pyc.read_bytes()[:16]
    assert header[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(header[4:8], "little") == 0  # timestamp-checked, like pip's and uv's
    # Python takes it as up to date: importing writes nothing new
    before = pyc.stat().st_mtime_ns
    out = subprocess.run(
        [sys.executable, "-c", "import mod; print(mod.VALUE, mod.__cached__)"],
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split()[0] == "42"
    assert pyc.stat().st_mtime_ns == before


def test_a_record_path_leading_out_is_not_compiled(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _dist(site, "sly", "1.0", {"sly/__init__.py": "S = 1\n"})
    outside = tmp_path / "outside.py"
    outside.write_text("O = 1\n")
    record = site / "sly-1.0.dist-info" / "RECORD"
    record.write_text(record.read_text() + "../outside.py,,\n")
    lock = tmp_path / "all.txt"
    lock.write_text("sly==1.0\n")
    done = _run(site, lock)
    assert done.returncode == 0, done.stderr
    assert _pyc(site / "sly/__init__.py").is_file()
    assert not _pyc(outside).exists()


def test_usage_error_without_a_lock(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(payload.script("bytecode"))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "usage" in done.stderr
