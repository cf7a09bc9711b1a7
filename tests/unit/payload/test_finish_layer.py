"""payload/finish_layer.py, run for real in a child interpreter over a site-packages folder of its
own: it stores the identical files of the named distributions once (hard links), writes the
bytecode of exactly the files their RECORDs list, leaves their test suites out, and survives
files that are not valid Python."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from reprobox import payload


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def _dist(site: Path, name: str, version: str, files: dict[str, str | bytes]) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    rows = []
    for rel, text in files.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = text if isinstance(text, bytes) else text.encode()
        path.write_bytes(data)
        rows.append(f"{rel},{_record_hash(data)},{len(data)}")
    rows.append(f"{info.name}/METADATA,,")
    rows.append(f"{info.name}/RECORD,,")
    (info / "RECORD").write_text("\n".join(rows) + "\n")


def _run(site: Path, lock: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH puts the folder on sys.path, as site-packages is in the image (-I there).
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, str(payload.script("finish_layer")), str(lock), *flags],
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
        [sys.executable, str(payload.script("finish_layer"))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "usage" in done.stderr


def _lock(tmp_path: Path, *names: str) -> Path:
    lock = tmp_path / "step.txt"
    lock.write_text("".join(f"{n}==1.0 --hash=sha256:{'c' * 64}\n" for n in names))
    return lock


def test_identical_files_of_the_step_are_stored_once(tmp_path: Path) -> None:
    site = tmp_path / "site"
    lib = os.urandom(5000)
    _dist(
        site,
        "alpha",
        "1.0",
        {
            "alpha/libx.so": lib,
            "alpha/libx.so.1": lib,  # the same library under its versioned name
            "alpha/other.bin": os.urandom(5000),  # same size, other bytes
            "alpha/small.txt": "tiny\n",
            "alpha/small-too.txt": "tiny\n",  # under the size worth a link
        },
    )
    _dist(site, "beta", "1.0", {"beta/libx.so": lib})  # vendored in a second package
    _dist(site, "gamma", "1.0", {"gamma/libx.so": lib})  # not installed by this step
    lock = _lock(tmp_path, "alpha", "beta")

    done = _run(site, lock)

    assert done.returncode == 0, done.stderr
    assert "identical files: 2 stored once (0.0 MB saved)" in done.stdout
    linked = [site / "alpha/libx.so", site / "alpha/libx.so.1", site / "beta/libx.so"]
    assert len({p.stat().st_ino for p in linked}) == 1
    assert all(p.read_bytes() == lib for p in linked)
    assert linked[0].stat().st_nlink == 3
    for alone in ("alpha/other.bin", "alpha/small.txt", "alpha/small-too.txt", "gamma/libx.so"):
        assert (site / alone).stat().st_nlink == 1, alone
    assert (site / "gamma/libx.so").read_bytes() == lib
    # nothing left behind by the renames
    assert not list(site.rglob("*.reprobox-link"))


def test_files_differing_in_mode_are_not_linked(tmp_path: Path) -> None:
    site = tmp_path / "site"
    data = os.urandom(4096)
    _dist(site, "tool", "1.0", {"tool/run": data, "tool/data": data})
    (site / "tool/run").chmod(0o755)
    (site / "tool/data").chmod(0o644)
    done = _run(site, _lock(tmp_path, "tool"))
    assert done.returncode == 0, done.stderr
    assert "identical files: 0 stored once" in done.stdout
    assert (site / "tool/run").stat().st_ino != (site / "tool/data").stat().st_ino
    assert (site / "tool/run").stat().st_mode & 0o777 == 0o755


def test_a_path_through_a_symbolic_link_is_left_alone(tmp_path: Path) -> None:
    site = tmp_path / "site"
    data = os.urandom(4096)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "lib.so").write_bytes(data)
    _dist(site, "sly", "1.0", {"sly/lib.so": data})
    (site / "sly/linked").symlink_to(elsewhere)
    record = site / "sly-1.0.dist-info" / "RECORD"
    claim = f"{_record_hash(data)},{len(data)}"
    record.write_text(
        record.read_text() + f"sly/linked/lib.so,{claim}\n../elsewhere/lib.so,{claim}\n"
    )
    done = _run(site, _lock(tmp_path, "sly"))
    assert done.returncode == 0, done.stderr
    assert "identical files: 0 stored once" in done.stdout
    assert (elsewhere / "lib.so").stat().st_nlink == 1
    assert (site / "sly/lib.so").stat().st_nlink == 1


def test_linked_sources_get_bytecode_python_takes_as_current(tmp_path: Path) -> None:
    site = tmp_path / "site"
    text = "VALUE = 7\n" + "# padding\n" * 500
    _dist(site, "one", "1.0", {"one/__init__.py": text})
    _dist(site, "two", "1.0", {"two/__init__.py": text})
    os.utime(site / "two/__init__.py", (1_000_000_000, 1_000_000_000))
    done = _run(site, _lock(tmp_path, "one", "two"))
    assert done.returncode == 0, done.stderr
    assert "identical files: 1 stored once" in done.stdout
    for name in ("one", "two"):
        pyc = _pyc(site / name / "__init__.py")
        before = pyc.stat().st_mtime_ns
        out = subprocess.run(
            [sys.executable, "-c", f"import {name}; print({name}.VALUE)"],
            env={**os.environ, "PYTHONPATH": str(site)},
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == "7"
        assert pyc.stat().st_mtime_ns == before, f"{name}: the .pyc was written again"


def test_no_bytecode_still_links(tmp_path: Path) -> None:
    site = tmp_path / "site"
    data = os.urandom(8192)
    _dist(
        site,
        "plain",
        "1.0",
        {"plain/__init__.py": "P = 1\n", "plain/a.bin": data, "plain/b.bin": data},
    )
    done = _run(site, _lock(tmp_path, "plain"), "--no-bytecode")
    assert done.returncode == 0, done.stderr
    assert "identical files: 1 stored once" in done.stdout
    assert "bytecode" not in done.stdout
    assert not _pyc(site / "plain/__init__.py").exists()
    assert (site / "plain/a.bin").stat().st_ino == (site / "plain/b.bin").stat().st_ino


def test_a_record_claiming_the_same_bytes_is_checked(tmp_path: Path) -> None:
    """The RECORD only names candidates: two files it claims identical but that differ stay
    apart."""
    site = tmp_path / "site"
    real, other = os.urandom(8192), os.urandom(8192)
    _dist(site, "liar", "1.0", {"liar/a.so": real, "liar/b.so": other})
    record = site / "liar-1.0.dist-info" / "RECORD"
    record.write_text(record.read_text().replace(_record_hash(other), _record_hash(real)))
    done = _run(site, _lock(tmp_path, "liar"))
    assert done.returncode == 0, done.stderr
    assert "identical files: 0 stored once" in done.stdout
    assert (site / "liar/b.so").read_bytes() == other
    assert (site / "liar/a.so").stat().st_nlink == 1


def test_a_lock_it_cannot_read_is_one_line_and_nothing_changed(tmp_path: Path) -> None:
    site = tmp_path / "site"
    data = os.urandom(8192)
    _dist(
        site, "kept", "1.0", {"kept/__init__.py": "K = 1\n", "kept/a.bin": data, "kept/b.bin": data}
    )
    done = _run(site, tmp_path / "missing.txt")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "cannot read the step's lock" in done.stderr and "missing.txt" in done.stderr
    assert (site / "kept/a.bin").stat().st_nlink == 1
    assert not _pyc(site / "kept/__init__.py").exists()


def test_a_size_in_other_digits_is_left_unlinked_not_a_crash(tmp_path: Path) -> None:
    """'²' passes str.isdigit() and fails int(): such a row is not a link candidate."""
    site = tmp_path / "site"
    lib = os.urandom(5000)
    _dist(site, "alpha", "1.0", {"alpha/a.so": lib, "alpha/b.so": lib})
    record = site / "alpha-1.0.dist-info" / "RECORD"
    record.write_text(record.read_text().replace(",5000\n", ",\u00b2\n", 1))
    done = _run(site, _lock(tmp_path, "alpha"))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert (site / "alpha/a.so").stat().st_nlink == 1  # one candidate left: nothing to link
