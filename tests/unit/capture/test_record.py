"""``reprobox record``'s parts: the payload run inside the target interpreter, the mapping of what
it reports to distributions and OS packages, the static ctypes scan, declared system packages,
the repository's own virtualenv, exit status comparison, and GPU library attribution (with the
environment recorded on an H200 host, tests/fixtures/gpu-h200/)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from reprobox.capture import record, system
from reprobox.payload import probe
from reprobox.outcome import compare_exit_status
from reprobox.errors import UsageError, ValidationError
from reprobox.model import Experiment, GitInfo, LoadedLibrary, RunUsage
from reprobox.model import check as validate

from ...conftest import require
from ...asserts import refuses
from ...factories import in_probe, make_elf

FIX = Path(__file__).resolve().parents[2] / "fixtures"
H200 = json.loads((FIX / "gpu-h200" / "environment.json").read_text())


# --------------------------------------------------------------------------- payload


def test_payload_imports_the_standard_library_only():
    tree = ast.parse(record.PAYLOAD.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "the payload runs alone, outside the reprobox package"
            names.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            pass  # the chained sitecustomize: the user's own, by design
    assert names, "the parser found no import at all"
    assert names <= set(sys.stdlib_module_names), names - set(sys.stdlib_module_names)
    assert "reprobox" not in names


def _run_payload(tmp_path: Path, script: str, extra_path: str = "") -> tuple[dict, str]:
    payload = tmp_path / "payload"
    out = tmp_path / "out"
    payload.mkdir()
    out.mkdir()
    shutil.copyfile(record.PAYLOAD, payload / "sitecustomize.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(payload), extra_path) if p)
    env[record.RECORD_DIR_VAR] = str(out)
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    reports = [json.loads(p.read_text()) for p in out.glob("run-*.json")]
    assert len(reports) == 1, reports
    return reports[0], done.stdout


def test_payload_records_imports_dlopen_and_mapped_libraries(tmp_path):
    script = (
        "import ctypes, colorsys, sys\n"
        "ctypes.CDLL('libm.so.6')\n"
        "try:\n    ctypes.CDLL('libreprobox-absent.so.9')\nexcept OSError:\n    pass\n"
        "print([p for p in sys.path if 'payload' in p])\n"
    )
    rep, stdout = _run_payload(tmp_path, script)
    assert stdout.strip() == "[]"  # the program's sys.path is its own
    assert "colorsys" in rep["imports"] and "ctypes" in rep["imports"]
    assert rep["modules"]["colorsys"].endswith("colorsys.py")
    assert "libm.so.6" in rep["dlopen"] and "libreprobox-absent.so.9" in rep["dlopen"]
    assert any(os.path.basename(p).startswith("libm") for p in rep["maps"])
    assert isinstance(rep["peak_kib"], int) and rep["peak_kib"] > 0
    assert rep["pid"] > 0


def test_payload_chains_the_sitecustomize_it_hides(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "sitecustomize.py").write_text("import builtins\nbuiltins.MARK = 'theirs'\n")
    rep, stdout = _run_payload(
        tmp_path,
        "import sitecustomize, builtins\nprint(builtins.MARK, sitecustomize.__file__)",
        extra_path=str(theirs),
    )
    mark, where = stdout.split()
    assert mark == "theirs" and where == str(theirs / "sitecustomize.py")
    assert rep["imports"]


def test_mapped_objects_reads_maps_lines(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text(
        "7f00-7f01 r-xp 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libmagic.so.1.0.0\n"
        "7f01-7f02 r--p 00000000 08:01 2 /usr/lib/locale/C.utf8/LC_CTYPE\n"
        "7f02-7f03 r-xp 00000000 08:01 3 /tmp/x/_mod.cpython-311-x86_64-linux-gnu.so\n"
        "7f03-7f04 r-xp 00000000 08:01 4 /tmp/gone/libold.so.2 (deleted)\n"
        "7f04-7f05 rw-p 00000000 00:00 0 [heap]\n"
    )
    sys.path.insert(0, str(record.PAYLOAD.parent))
    try:
        import recorder  # the payload module itself, imported from its folder
    finally:
        sys.path.pop(0)
    assert recorder.mapped_objects(str(maps)) == [
        "/tmp/x/_mod.cpython-311-x86_64-linux-gnu.so",
        "/usr/lib/x86_64-linux-gnu/libmagic.so.1.0.0",
    ]


# --------------------------------------------------------------------------- execute


def test_execute_records_status_time_memory_and_reports(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("import json, sys\nx = bytearray(30 * 1024 * 1024)\nsys.exit(3)\n")
    ex = record.execute([sys.executable, str(script)], cwd=tmp_path, environ=dict(os.environ))
    assert ex.exit_status == 3
    assert ex.wall_seconds > 0
    assert ex.peak_memory_kib is not None and ex.peak_memory_kib > 30 * 1024
    assert len(ex.reports) == 1 and "json" in ex.reports[0]["imports"]


def test_execute_records_a_signal_as_a_negative_status(tmp_path):
    ex = record.execute(["/bin/sh", "-c", "kill -TERM $$"], cwd=tmp_path, environ=dict(os.environ))
    assert ex.exit_status == -15
    assert any("no Python process" in w for w in ex.warnings)


def test_execute_refuses_an_unknown_program(tmp_path):
    with refuses(UsageError, names="reprobox-no-such-program"):
        record.execute(["reprobox-no-such-program"], cwd=tmp_path, environ=dict(os.environ))


def test_command_environment_activates_a_found_interpreter(tmp_path):
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    env = record.command_environment(
        {"PATH": "/usr/bin", "PYTHONPATH": "/mine"},
        venv / "bin" / "python",
        tmp_path / "p",
        tmp_path / "o",
    )
    assert env["PATH"].split(os.pathsep)[0] == str(venv / "bin")
    assert env["VIRTUAL_ENV"] == str(venv)
    assert env["PYTHONPATH"] == f"{tmp_path / 'p'}{os.pathsep}/mine"
    assert env[record.RECORD_DIR_VAR] == str(tmp_path / "o")


# --------------------------------------------------------------------------- mapping


def _dist(site: Path, name: str, version: str, files: dict[str, bytes]) -> dict:
    meta = site / f"{name}-{version}.dist-info"
    meta.mkdir(parents=True)
    (meta / "METADATA").write_text(f"Name: {name}\nVersion: {version}\n")
    lines = []
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
        lines.append(f"{rel},,")
    lines.append(f"{meta.name}/RECORD,,")
    (meta / "RECORD").write_text("\n".join(lines) + "\n")
    return {
        "name": name,
        "version": version,
        "metadata_dir": str(meta),
        "site": str(site),
        "has_record": True,
    }


def test_summarize_maps_modules_and_libraries_to_their_owners(tmp_path):
    site = tmp_path / "site-packages"
    repo = tmp_path / "repo"
    (repo / "mylib").mkdir(parents=True)
    (repo / "mylib" / "__init__.py").write_text("")
    dists = [
        _dist(site, "magicpkg", "1.0", {"magicpkg/__init__.py": b"", "magicpkg/loader.py": b""}),
        _dist(
            site,
            "fastthing",
            "2.0",
            {
                "fastthing/__init__.py": b"",
                "fastthing/_core.cpython-311-x86_64-linux-gnu.so": b"\x7fELF",
                "fastthing.libs/libgfortran-1a2b.so.5": b"\x7fELF",
            },
        ),
    ]
    raw = {"site_dirs": [str(site)], "distributions": dists, "interpreter": {}, "native": {}}
    system_lib = next(
        (
            p
            for p in (
                "/usr/lib/x86_64-linux-gnu/libmagic.so.1",
                "/lib/x86_64-linux-gnu/libmagic.so.1",
            )
            if os.path.exists(p)
        ),
        None,
    )
    maps = [
        str(site / "fastthing/_core.cpython-311-x86_64-linux-gnu.so"),
        str(site / "fastthing.libs/libgfortran-1a2b.so.5"),
    ]
    if system_lib:
        maps.append(os.path.realpath(system_lib))
    ex = record.Execution(
        argv=("python", "job.py"),
        exit_status=0,
        wall_seconds=1.0,
        peak_memory_kib=1000,
        reports=(
            {
                "modules": {
                    "magicpkg.loader": str(site / "magicpkg/loader.py"),
                    "magicpkg": str(site / "magicpkg/__init__.py"),
                    "fastthing._core": maps[0],
                    "mylib": str(repo / "mylib/__init__.py"),
                    "json": "/usr/lib/python3.11/json/__init__.py",
                },
                "maps": maps,
                "dlopen": ["libmagic.so.1", "libnot-there.so.4"],
            },
        ),
    )
    summary = record.summarize(ex, raw, repo)
    usage = summary.usage
    assert usage.modules == {
        "<repo>": ("mylib",),
        "fastthing": ("fastthing",),
        "magicpkg": ("magicpkg",),
    }
    owners = {lib.name: lib.owner for lib in usage.libraries}
    assert owners["_core.cpython-311-x86_64-linux-gnu.so"] == "package:fastthing"
    assert owners["libgfortran-1a2b.so.5"] == "package:fastthing"
    assert usage.dlopen_failed == ("libnot-there.so.4",)
    assert usage.exit_status == 0 and usage.processes == 1
    if system_lib and system.package_manager() == "dpkg":
        real = os.path.realpath(system_lib)
        assert owners[os.path.basename(real)] == "system:libmagic1"
        assert summary.system_libraries[real] == ["libmagic.so.1"]


def test_a_driver_library_is_the_hosts_never_an_os_package(tmp_path):
    ex = record.Execution(
        argv=("x",),
        exit_status=0,
        wall_seconds=0.1,
        peak_memory_kib=None,
        reports=({"maps": ["/usr/lib/x86_64-linux-gnu/libcuda.so.580.1"]},),
    )
    summary = record.summarize(ex, {"interpreter": {}}, tmp_path)
    assert summary.usage.libraries == (LoadedLibrary("libcuda.so.580.1", "driver"),)
    assert summary.system_libraries == {}


# --------------------------------------------------------------------------- static ctypes scan


def _ctypes_scan(dists: list, cache: Path, *, fork: bool) -> dict:
    """probe.CtypesScan as the probe runs it: in a fresh interpreter (a fork of pytest's own
    process, with its threads, is not what the probe does), with or without ``os.fork``."""
    code = f"""
if not {fork!r}:
    del os.fork
cache = probe.ProbeCache({str(cache)!r})
scan = probe.CtypesScan(json.loads(sys.argv[1]), cache).start()
forked = scan.child is not None
found = scan.result()
cache.save()
print(json.dumps({{"found": found, "forked": forked, "misses": cache.misses}}))
"""
    return in_probe(code, json.dumps(dists))


def test_ctypes_scan_finds_libraries_named_in_pure_python_sources(tmp_path):
    site = tmp_path / "site-packages"
    dists = [
        _dist(
            site,
            "python-magic",
            "0.4.27",
            {
                "magic/__init__.py": b"import ctypes\nfrom ctypes.util import find_library\n"
                b"lib = find_library('magic')\n",
                "magic/compat.py": b"import ctypes\n_z = ctypes.CDLL('libz.so.1')\n"
                b'cdll = ctypes.cdll.LoadLibrary("libbz2.so.1.0")\n',
                "magic/tests/test_x.py": b"import ctypes\nfind_library('testonly')\n",
            },
        ),
        _dist(site, "plain", "1.0", {"plain/__init__.py": b"print('no ctypes here')\n"}),
        _dist(
            site,
            "compiled",
            "1.0",
            {
                "compiled/__init__.py": b"import ctypes\nfind_library('ssl')\n",
                "compiled/_x.cpython-311-x86_64-linux-gnu.so": b"\x7fELF",
            },
        ),
    ]
    magic = dists[0]["metadata_dir"]
    want = {"python-magic": {"magic", "libz.so.1", "libbz2.so.1.0"}}
    # read by a forked child while the probe goes on, or here where there is no fork: the same
    for fork in (True, False):
        cache = tmp_path / f"cache-{fork}.json"
        out = _ctypes_scan(dists, cache, fork=fork)
        assert out["forked"] is fork
        assert out["misses"] == 3
        assert record.ctypes_names({"distributions": dists, "ctypes": out["found"]}) == want
    # The answer per RECORD is cached: a second scan reads no source file, and forks nothing.
    (site / "magic/__init__.py").write_bytes(b"")
    out = _ctypes_scan(dists, cache, fork=True)
    assert (out["forked"], out["misses"]) == (False, 0)
    assert out["found"] == {magic: ["libbz2.so.1.0", "libz.so.1", "magic"]}
    os.utime(Path(magic) / "RECORD", ns=(1, 1))  # reinstalled: read again
    out = _ctypes_scan(dists, cache, fork=True)
    assert (out["forked"], out["misses"]) == (True, 1)
    assert out["found"] == {magic: ["libbz2.so.1.0", "libz.so.1"]}


def test_the_ctypes_child_holds_no_pipe_of_the_probe_and_opens_no_fifo(tmp_path):
    """The child leaves the probe's stdout and stderr (the capture reads them to EOF, and a
    child still holding them would make it wait), and a FIFO under a listed name stalls
    neither path."""
    site = tmp_path / "site-packages"
    dist = _dist(
        site,
        "fifo-pkg",
        "1.0",
        {
            "fifo_pkg/__init__.py": b"import ctypes\nfind_library('z')\n",
            "fifo_pkg/pipe.py": b"",
        },
    )
    (site / "fifo_pkg/pipe.py").unlink()
    os.mkfifo(site / "fifo_pkg/pipe.py")
    code = """
dists = json.loads(sys.argv[1])
def scan():
    return probe.CtypesScan(dists, probe.ProbeCache(None)).start().result()
def where_output_goes(_record, _site):  # run by the child: its stdout and stderr
    return [os.readlink("/proc/self/fd/1"), os.readlink("/proc/self/fd/2")]
found = scan()
real, probe.scan_ctypes = probe.scan_ctypes, where_output_goes
fds = scan()
probe.scan_ctypes = real
del os.fork
inline = scan()
print(json.dumps([found, fds, inline, os.readlink("/proc/self/fd/1")]))
"""
    found, fds, inline, own = in_probe(code, json.dumps([dist]))
    meta = dist["metadata_dir"]
    assert found == inline == {meta: ["z"]}
    assert fds == {meta: [os.devnull, os.devnull]}
    assert own.startswith("pipe:")  # the probe's own stdout is the pipe the capture reads


def test_the_ctypes_scan_reads_nothing_outside_the_site_folder(tmp_path):
    site = tmp_path / "site-packages"
    dist = _dist(
        site, "inside", "1.0", {"inside/__init__.py": b"import ctypes\nfind_library('m')\n"}
    )
    outside = tmp_path / "outside.py"
    outside.write_bytes(b"import ctypes\nfind_library('leak')\nCDLL('libleak.so.1')\n")
    record = Path(dist["metadata_dir"]) / "RECORD"
    rows = ["inside/../../outside.py,,", "../outside.py,,", f"{outside},,"]
    record.write_text(record.read_text() + "\n".join(rows) + "\n")
    assert probe.scan_ctypes(str(record), str(site)) == ["m"]


def test_the_ctypes_scan_sees_each_file_alone_and_its_first_4_mib(tmp_path):
    """The scan reads every file into one buffer: what a longer file left in it is never taken
    for the next file's text, and a file is read up to 4 MiB, as before."""
    site = tmp_path / "site-packages"
    long_one = b"#" * 5000 + b"\nimport ctypes\nctypes.CDLL('liblong.so.1')\n"
    first = _dist(site, "first", "1.0", {"first/__init__.py": long_one})
    # short, names ctypes and CDLL, but calls nothing: only the long file's leftovers would
    short = b"import ctypes  # CDLL\n"
    second = _dist(site, "second", "1.0", {"second/__init__.py": short})
    huge = b"import ctypes\n" + b"#" * (4 << 20) + b"\nfind_library('beyond')\n"
    third = _dist(site, "third", "1.0", {"third/__init__.py": huge})
    scan = [
        probe.scan_ctypes(str(Path(d["metadata_dir"]) / "RECORD"), str(site))
        for d in (first, second, third, first)
    ]
    assert scan == [["liblong.so.1"], [], [], ["liblong.so.1"]]


def test_ctypes_names_take_only_names_from_the_probe_answer():
    dists = [
        {"name": "Python_Magic", "metadata_dir": "/s/python_magic-1.dist-info"},
        {"name": "other", "metadata_dir": "/s/other-1.dist-info"},
    ]
    raw = {
        "distributions": dists,
        "ctypes": {
            "/s/python_magic-1.dist-info": ["magic", 7, "", "x" * 200],
            "/s/other-1.dist-info": "libz.so.1",  # not a list: ignored
            "/s/absent-1.dist-info": ["ssl"],  # no such distribution: ignored
        },
    }
    assert record.ctypes_names(raw) == {"python-magic": {"magic"}}
    assert record.ctypes_names({"distributions": dists}) == {}


def test_library_names_resolve_through_the_loader_cache():
    cache = probe.read_ld_cache()
    require(
        bool(cache) and "libz.so.1" in cache, "libz.so.1 in this machine's ld.so.cache (zlib1g)"
    )
    found = record.resolve_library_names(["z", "libz.so.1", "reprobox-absent"])
    assert list(found.values()) == [["libz.so.1"]]
    assert all(os.path.isabs(p) for p in found)


# --------------------------------------------------------------------------- declared packages


def test_declared_system_packages_from_the_option_and_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.reprobox]\nsystem-packages = ["libgl1", "libmagic1"]\n'
    )
    assert record.declared_system_packages(tmp_path, ["libmagic1", "ffmpeg"]) == [
        "ffmpeg",
        "libgl1",
        "libmagic1",
    ]


def test_a_hostile_pyproject_name_is_refused_naming_the_entry(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.reprobox]\nsystem-packages = ["libgl1", "curl; rm -rf /"]\n'
    )
    with refuses(UsageError, names=["pyproject.toml", "system-packages[1]"]):
        record.declared_system_packages(tmp_path, [])


@pytest.mark.parametrize(
    "text, refused",
    [
        ("tool = 5\n", None),  # another tool's business: no [tool.reprobox], nothing declared
        ('[tool]\nreprobox = "x"\n', "[tool.reprobox] must be a table"),
        ("x = " + "[" * 3000 + "]" * 3000 + "\n", "nests too deeply"),
    ],
)
def test_a_pyproject_of_the_wrong_shape_is_refused_or_ignored_never_a_crash(
    tmp_path, text, refused
):
    (tmp_path / "pyproject.toml").write_text(text)
    if refused is None:
        assert record.declared_system_packages(tmp_path, []) == []
    else:
        with refuses(UsageError, names=["pyproject.toml", refused]):
            record.declared_system_packages(tmp_path, [])


def test_a_bad_system_package_option_is_refused_naming_the_option(tmp_path):
    with refuses(UsageError, names=["--system-package", "Bad Name"]):
        record.declared_system_packages(tmp_path, ["Bad Name"])


def test_declared_packages_take_this_machines_version():
    require(system.package_manager() == "dpkg", "a dpkg database (a Debian-family system)")
    pkgs, warnings = system.add_declared([], ["libc6", "reprobox-not-installed"])
    assert [p.name for p in pkgs] == ["libc6"] and pkgs[0].version
    assert len(warnings) == 1 and "reprobox-not-installed" in warnings[0]


# --------------------------------------------------------------------------- the repo's venv


def _venv(where: Path) -> Path:
    (where / "bin").mkdir(parents=True)
    (where / "pyvenv.cfg").write_text("home = /usr/bin\n")
    exe = where / "bin" / "python"
    exe.symlink_to(sys.executable)
    return exe


def test_the_repositorys_only_venv_is_used(tmp_path):
    exe = _venv(tmp_path / ".venv")
    assert record.find_repo_venv(tmp_path, tmp_path, {}) == exe
    (tmp_path / "env").mkdir()  # a folder named env without pyvenv.cfg is not a venv
    assert record.find_repo_venv(tmp_path, tmp_path, {}) == exe


def test_an_active_environment_wins_over_the_repositorys_venv(tmp_path):
    _venv(tmp_path / ".venv")
    assert record.find_repo_venv(tmp_path, tmp_path, {"VIRTUAL_ENV": "/elsewhere"}) is None
    assert record.find_repo_venv(tmp_path, tmp_path, {"CONDA_PREFIX": "/opt/conda"}) is None


def test_several_venvs_ask_for_python_naming_each(tmp_path):
    _venv(tmp_path / ".venv")
    _venv(tmp_path / "venv")
    with refuses(UsageError, names=[".venv", "--python"]) as err:
        record.find_repo_venv(tmp_path, tmp_path, {})
    assert "venv" in err.value.message.replace(".venv", "")
    assert err.value.exit_code == 2


def test_the_same_venv_reached_twice_is_one_candidate(tmp_path):
    exe = _venv(tmp_path / ".venv")
    (tmp_path / "venv").symlink_to(tmp_path / ".venv")
    sub = tmp_path / "src"
    sub.mkdir()
    assert record.find_repo_venv(tmp_path, sub, {}) == exe


# --------------------------------------------------------------------------- exit status


def test_exit_status_comparison():
    assert compare_exit_status(0, 0) is None
    assert compare_exit_status(2, 2) is None
    assert compare_exit_status(None, 0) is None
    unknown = compare_exit_status(None, 1)
    assert unknown and "unknown" in unknown and "succeeded" not in unknown
    assert "recorded run exited with status 0" in (compare_exit_status(0, 1) or "")
    assert compare_exit_status(3, 0) == "exit status: recorded 3, rerun 0"


def test_exit_status_option_is_checked():
    assert record.check_exit_status(None) is None and record.check_exit_status(7) == 7
    with refuses(UsageError, names="--exit-status 300"):
        record.check_exit_status(300)


# --------------------------------------------------------------------------- model


def _experiment(**kw) -> Experiment:
    return Experiment(
        name="job",
        command="python job.py",
        cwd=".",
        git=GitInfo(commit="a" * 40),
        environment_digest="sha256:" + "0" * 64,
        created="2026-11-30T10:00:00Z",
        tool_version="0.1.0",
        **kw,
    )


def test_run_usage_round_trips_and_records_without_it_keep_their_form():
    plain = _experiment()
    assert "run" not in plain.to_dict()
    usage = RunUsage(
        exit_status=3,
        wall_seconds=1.5,
        peak_memory_kib=2048,
        processes=2,
        modules={"numpy": ("numpy",), "<repo>": ("train",)},
        libraries=(LoadedLibrary("libmagic.so.1.0.0", "system:libmagic1"),),
        dlopen_failed=("libfoo.so.1",),
    )
    exp = _experiment(run=usage).with_id()
    back = Experiment.from_dict(json.loads(json.dumps(exp.to_dict())))
    assert back.run == usage and back.content_matches_id
    assert exp.id != plain.with_id().id  # the run is sealed by the id like everything else


@pytest.mark.parametrize(
    "field,usage",
    [
        ("run.libraries[0].owner", RunUsage(0, libraries=(LoadedLibrary("libx.so", "evil:x"),))),
        ("run.libraries[0].name", RunUsage(0, libraries=(LoadedLibrary("../x.so", "unowned"),))),
        ("run.modules[numpy]", RunUsage(0, modules={"numpy": ("os;rm",)})),
        ("run.source", RunUsage(0, source="guessed")),
        ("run.exit_status", RunUsage(9999)),
    ],
)
def test_hostile_run_fields_are_refused_by_name(field, usage):
    with refuses(ValidationError, field=field):
        validate.run_usage(usage)


# --------------------------------------------------------------------------- GPU attribution


def _h200_version(name: str) -> str:
    return next(p["version"] for p in H200["packages"] if p["name"] == name)


def test_torch_reaches_the_nvidia_wheels_through_its_runpath(tmp_path, monkeypatch):
    """torch's libtorch_cuda.so finds libcudart in the nvidia-cuda-runtime wheel through
    ``$ORIGIN/../../nvidia/cu13/lib``; this machine's LD_LIBRARY_PATH (a CUDA toolkit) also
    has one. On the H200 host that copy was recorded as the OS package cuda-cudart-13-0; the
    library is the wheel's."""
    assert any(s["name"] == "cuda-cudart-13-0" for s in H200["system_packages"])
    site = tmp_path / "lib" / "python3.12" / "site-packages"
    cudart = make_elf(64, "little", 62, [], "libcudart.so.13")
    torch_cuda = make_elf(
        64,
        "little",
        62,
        ["libcudart.so.13", "libcusparseLt.so.0"],
        "libtorch_cuda.so",
        "$ORIGIN/../../nvidia/cu13/lib:$ORIGIN/../../cusparselt/lib",
    )
    sparse = make_elf(64, "little", 62, [], "libcusparseLt.so.0")
    dists = [
        _dist(site, "torch", _h200_version("torch"), {"torch/lib/libtorch_cuda.so": torch_cuda}),
        _dist(
            site,
            "nvidia-cuda-runtime",
            _h200_version("nvidia-cuda-runtime"),
            {"nvidia/cu13/lib/libcudart.so.13": cudart},
        ),
        _dist(
            site,
            "nvidia-cusparselt-cu13",
            _h200_version("nvidia-cusparselt-cu13"),
            {"cusparselt/lib/libcusparseLt.so.0": sparse},
        ),
    ]
    toolkit = tmp_path / "usr-local-cuda" / "lib64"
    toolkit.mkdir(parents=True)
    (toolkit / "libcudart.so.13").write_bytes(cudart)
    monkeypatch.setenv("LD_LIBRARY_PATH", str(toolkit))
    found = probe.native_libraries(dists, [str(site)], probe.ProbeCache(None))
    assert "libcudart.so.13" not in found["libraries"]  # the wheel's, dropped as bundled
    assert "libcusparseLt.so.0" not in found["libraries"]
    # A soname the RUNPATH does not reach inside site-packages still resolves as before.
    other = make_elf(64, "little", 62, ["libcudart.so.13"], "libother.so")
    dists.append(_dist(site, "other", "1.0", {"other/libother.so": other}))
    found = probe.native_libraries(dists, [str(site)], probe.ProbeCache(None))
    rec = found["libraries"]["libcudart.so.13"]
    assert rec["users"] == ["other"] and rec["how"] == "ld_library_path"


@pytest.mark.parametrize(
    "soname,files",
    [
        (
            "libcutensor.so.2",
            [".../site-packages/cupy_backends/cuda/libs/cutensor.cpython-312-x86_64-linux-gnu.so"],
        ),
        (
            "libcutensorMg.so.2",
            [".../site-packages/cupy_backends/cuda/libs/cutensor.cpython-312-x86_64-linux-gnu.so"],
        ),
        (
            "libtbb.so.12",
            [".../site-packages/numba/np/ufunc/tbbpool.cpython-312-x86_64-linux-gnu.so"],
        ),
    ],
)
def test_libraries_packages_only_try_are_not_reported_missing(soname, files):
    assert soname in H200["missing_libraries"]  # what the H200 capture reported
    assert system.only_tried(soname, files)


@pytest.mark.parametrize(
    "soname,files",
    [
        # a core module of the package needs it: the package does not work without it
        ("libtbb.so.12", [".../site-packages/numba/_helperlib.cpython-312-x86_64-linux-gnu.so"]),
        ("libgomp.so.1.0.0", [".../site-packages/_pkg.cpython-312-x86_64-linux-gnu.so"]),
        ("libcutensor.so.2", []),
    ],
)
def test_libraries_core_modules_need_stay_missing(soname, files):
    assert not system.only_tried(soname, files)


def test_a_recorded_failed_load_keeps_a_tried_library_missing(tmp_path, monkeypatch):
    """environment_from_probe: only-tried sonames leave missing_libraries and the warning,
    unless the recorded run tried to load them and failed."""
    from reprobox.capture.environment import environment_from_probe

    raw = {
        "probe_version": 1,
        "interpreter": {"implementation": "cpython", "version": "3.12.3"},
        "distributions": [],
        "native": {
            "libraries": {
                "libtbb.so.12": {
                    "realpath": None,
                    "users": ["numba"],
                    "provider": "missing",
                    "files": [
                        "/v/site-packages/numba/np/ufunc/tbbpool.cpython-312-x86_64-linux-gnu.so"
                    ],
                },
                "libfoo.so.1": {
                    "realpath": None,
                    "users": ["foo"],
                    "provider": "missing",
                    "files": ["/v/site-packages/_foo.cpython-312-x86_64-linux-gnu.so"],
                },
            }
        },
        "os": {},
    }
    env, warnings = environment_from_probe(raw, tmp_path)
    assert env.missing_libraries == ("libfoo.so.1",)
    assert "libfoo.so.1" in " ".join(warnings) and "libtbb" not in " ".join(warnings)
    env, warnings = environment_from_probe(raw, tmp_path, dlopen_failed=["libtbb.so.12"])
    assert env.missing_libraries == ("libfoo.so.1", "libtbb.so.12")
    assert "libtbb.so.12" in " ".join(warnings)


def test_payload_names_the_script_the_interpreter_ran(tmp_path):
    """Python drops ``__main__.__file__`` once the script has run; the payload still names it."""
    (tmp_path / "job.py").write_text("import colorsys\n")
    payload, out = tmp_path / "payload", tmp_path / "out"
    payload.mkdir()
    out.mkdir()
    shutil.copyfile(record.PAYLOAD, payload / "sitecustomize.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=str(payload), **{record.RECORD_DIR_VAR: str(out)})
    subprocess.run([sys.executable, "job.py"], env=env, cwd=tmp_path, check=True)
    rep = json.loads(next(out.glob("run-*.json")).read_text())
    assert rep["modules"]["__main__"] == str(tmp_path / "job.py")


def test_python_child_processes_are_recorded_too(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(
        "import subprocess, sys\n"
        "subprocess.run([sys.executable, '-c', 'import colorsys'], check=True)\n"
    )
    ex = record.execute([sys.executable, str(script)], cwd=tmp_path, environ=dict(os.environ))
    assert ex.exit_status == 0 and len(ex.reports) == 2
    assert len({r["pid"] for r in ex.reports}) == 2
    child = next(r for r in ex.reports if "colorsys" in r["imports"])
    assert child["ppid"] in {r["pid"] for r in ex.reports}


def test_forked_children_leaving_through_os_exit_report_what_they_loaded(tmp_path):
    """multiprocessing's fork workers (and DataLoader's) end with ``os._exit``, which runs no
    atexit: the payload's after-fork ``os._exit`` reports first, when the child loaded anything
    since the fork; the exit status is the child's; a grandchild's ``os._exit`` is wrapped once."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys\n"
        "def child(body):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        body()\n"
        "    return os.waitpid(pid, 0)[1]\n"
        "def loads():\n"
        "    import colorsys\n"
        "    inner = os.fork()\n"
        "    if inner == 0:\n"
        "        import fractions\n"
        "        assert os._exit.__wrapped_exit__.__name__ == '_exit'\n"
        "        assert not hasattr(os._exit.__wrapped_exit__, '__wrapped_exit__')\n"
        "        os._exit(0)\n"
        "    os.waitpid(inner, 0)\n"
        "    os._exit(7)\n"
        "def quiet():\n"
        "    os._exit(3)\n"
        "statuses = [os.waitstatus_to_exitcode(child(loads)), "
        "os.waitstatus_to_exitcode(child(quiet))]\n"
        "open('statuses.txt', 'w').write(repr(statuses))\n"
    )
    ex = record.execute([sys.executable, str(script)], cwd=tmp_path, environ=dict(os.environ))
    assert ex.exit_status == 0
    assert (tmp_path / "statuses.txt").read_text() == "[7, 3]"  # each child's own status
    by_pid = {r["pid"]: r for r in ex.reports}
    parent = next(r for r in ex.reports if r["modules"].get("__main__") == str(script))
    loader = next(r for r in ex.reports if "colorsys" in r["imports"] and r is not parent)
    grandchild = next(r for r in ex.reports if "fractions" in r["imports"])
    # the parent, the child that imported colorsys, its child that imported fractions; the
    # child that loaded nothing new wrote nothing
    assert len(by_pid) == 3, [r["imports"][-3:] for r in ex.reports]
    assert loader["ppid"] == parent["pid"] and grandchild["ppid"] == loader["pid"]
    assert "colorsys" not in parent["imports"]


def test_a_command_stopped_with_ctrl_c_records_nothing(tmp_path, monkeypatch):
    import tempfile

    work, scratch = tmp_path / "work", tmp_path / "scratch"
    work.mkdir()
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(KeyboardInterrupt):
        record.execute(["/bin/sh", "-c", "kill -INT $$"], cwd=work, environ=dict(os.environ))
    # The stop reaches the caller, and what the run's processes reported is gone with it.
    assert list(work.iterdir()) == [] and list(scratch.iterdir()) == []


def test_a_library_the_run_dlopens_is_its_own_even_under_the_interpreters_closure(
    tmp_path, monkeypatch
):
    """libpng16 sits in the closure of Tk (a stdlib extension module), but a command that opens
    it through ctypes needs it whatever the base image has: it joins the system libraries."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "repo").mkdir()
    lib = tmp_path / "lib" / "libpng16.so.16.39.0"
    lib.write_bytes(b"\x7fELF")
    monkeypatch.setattr(record, "python_own_closure", lambda _raw: {str(lib)})

    def summarize(dlopen: list[str]) -> record.RunSummary:
        ex = record.Execution(
            argv=("python", "pngver.py"),
            exit_status=0,
            wall_seconds=0.1,
            peak_memory_kib=None,
            reports=({"maps": [str(lib)], "dlopen": dlopen},),
        )
        return record.summarize(ex, {"interpreter": {}}, tmp_path / "repo")

    quiet = summarize([])
    assert quiet.usage.libraries == (LoadedLibrary(lib.name, "python"),)
    assert quiet.system_libraries == {}
    asked = summarize(["libpng16.so.16"])
    assert [x.owner for x in asked.usage.libraries] != ["python"]
    assert str(lib) in asked.system_libraries


def test_native_libraries_read_by_the_forked_child_are_what_the_probe_reads_itself(tmp_path):
    """The ELF scan goes to whichever of the probe and its ctypes child is free first: its
    answer, the cache entries it made and its warnings are the same either way, and in the
    same place; where there is no fork, or the child dies without answering, they are read in
    the probe itself."""
    code = """
import fcntl, struct, termios, time
sites = probe.site_dirs(probe.user_site_dir(False))
dists, _shadowed = probe.find_distributions(sites)
mode, cache_path, who_file = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "nofork":
    del os.fork
parent = os.getpid()

def taken(fd):  # the token's byte was read
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\\0" * 4))[0] == 0

def wait_taken(fd):
    deadline = time.monotonic() + 60
    while not taken(fd) and time.monotonic() < deadline:
        time.sleep(0.005)

real_native, real_scan = probe.native_libraries, probe.scan_ctypes
def native_libraries(*args):
    here = "parent" if os.getpid() == parent else "child"
    with open(who_file, "a") as f:
        f.write(here + "\\n")
    if mode == "dies" and here == "child":
        os._exit(0)  # the child ends without a word
    probe.warn("said while reading ELF headers")
    return real_native(*args)
def scan_ctypes(*args):
    if mode == "parent-first" and os.getpid() != parent:
        wait_taken(scan.token)  # the child is slow: the probe takes the ELF scan
    return real_scan(*args)
probe.native_libraries, probe.scan_ctypes = native_libraries, scan_ctypes
probe.warn("said before")
cache = probe.ProbeCache(cache_path)
scan = probe.CtypesScan(dists, cache, sites).start()
forked = scan.child is not None
probe.warn("said after the fork")
if mode in ("child-first", "dies"):
    wait_taken(scan.token)  # the probe is slow: the child takes the ELF scan
native = scan.native()
scan.result()
cache.save()
direct = real_native(dists, sites, probe.ProbeCache(None))
print(json.dumps({"forked": forked, "native": native, "direct": direct,
                  "warnings": probe._warnings, "elf": sorted(cache.new["elf"]),
                  "misses": cache.misses}))
"""
    outs = {}
    expected_who = {
        "child-first": ["child"],
        "parent-first": ["parent"],
        "dies": ["child", "parent"],
        "nofork": ["parent"],
    }
    for mode, who in expected_who.items():
        who_file = tmp_path / f"{mode}.who"
        out = in_probe(code, mode, str(tmp_path / f"{mode}.json"), str(who_file))
        assert who_file.read_text().split() == who, mode
        assert out["forked"] is (mode != "nofork")
        assert out["native"]["libraries"] == out["direct"]["libraries"]
        assert out["native"]["scanned"] == out["direct"]["scanned"] > 0
        # the scan's own cache counts, whichever process made it
        for key in ("cache_hits", "cache_misses"):
            assert out["native"][key] == out["direct"][key], (mode, key)
        assert out["elf"] and len(out["elf"]) == out["native"]["scanned"]
        # said where the probe would have said it: between "before" and "after the fork"
        assert out["warnings"] == [
            "said before",
            "said while reading ELF headers",
            "said after the fork",
        ], mode
        outs[mode] = out
    assert len({out["misses"] for out in outs.values()}) == 1
    # the cache files hold the same entries whichever process parsed them
    saved = [json.loads((tmp_path / f"{m}.json").read_text()) for m in outs]
    assert all(s == saved[0] for s in saved)


# --------------------------------------------------------------------------- which interpreter ran


def _ran(*reports: dict) -> record.Execution:
    return record.Execution(("python", "t.py"), 0, 1.0, None, reports=tuple(reports))


def _report(exe: str, prefix: str) -> dict:
    return {"version": 1, "executable": exe, "prefix": prefix}


def test_the_interpreter_the_command_ran_is_kept_when_it_is_the_one_probed(tmp_path: Path):
    venv = tmp_path / "venv"
    venv.mkdir()
    link = tmp_path / "venv-link"
    link.symlink_to(venv, target_is_directory=True)
    # the same environment reached through a link is the same environment
    done = _ran(_report(str(link / "bin" / "python3"), str(link)))
    check = record.check_interpreter(
        done, {"prefix": str(venv)}, venv / "bin" / "python", explicit=False
    )
    assert check == record.InterpreterCheck()


def test_one_other_interpreter_is_recorded_instead_unless_python_was_given(tmp_path: Path):
    done = _ran(
        _report("/opt/other/bin/python", "/opt/other"),
        _report("/opt/other/bin/python3", "/opt/other"),
    )
    probed = {"prefix": "/usr"}
    check = record.check_interpreter(done, probed, Path("/usr/bin/python3"), explicit=False)
    assert check.switch_to == Path("/opt/other/bin/python") and check.warnings == ()

    check = record.check_interpreter(done, probed, Path("/usr/bin/python3"), explicit=True)
    assert check.switch_to is None
    (warning,) = check.warnings
    assert "ran /opt/other/bin/python, not /usr/bin/python3" in warning
    assert "given with --python" in warning


def test_several_interpreters_are_named_and_the_probed_one_kept():
    done = _ran(_report("/a/bin/python", "/a"), _report("/b/bin/python", "/b"))
    check = record.check_interpreter(done, {"prefix": "/usr"}, Path("/usr/bin/python3"), False)
    assert check.switch_to is None
    (warning,) = check.warnings
    assert "/a/bin/python, /b/bin/python, not /usr/bin/python3" in warning
    assert "none of them ran" in warning
    # the probed one among them: the others are named as not recorded
    done = _ran(_report("/usr/bin/python3", "/usr"), _report("/b/bin/python", "/b"))
    check = record.check_interpreter(done, {"prefix": "/usr"}, Path("/usr/bin/python3"), False)
    assert check.switch_to is None
    assert check.warnings == (
        "the command also ran /b/bin/python: the record holds the packages of /usr/bin/python3 "
        "only",
    )


def test_no_report_or_a_malformed_one_changes_nothing():
    assert record.check_interpreter(_ran(), {"prefix": "/usr"}, Path("/x"), False) == (
        record.InterpreterCheck()
    )
    odd = _ran({"executable": 3, "prefix": "/a"}, {"executable": "/b/python", "prefix": None})
    assert record.check_interpreter(odd, {"prefix": "/usr"}, Path("/x"), False) == (
        record.InterpreterCheck()
    )


def test_a_program_path_a_rerun_will_not_have_is_named(tmp_path: Path):
    root = tmp_path / "repo"
    (root / "sub").mkdir(parents=True)
    tracked = {"run.sh", "sub/tool"}.__contains__
    warn = record.program_path_warning
    # on PATH, or committed: nothing to say
    assert warn(["python", "t.py"], root, root, tracked) is None
    assert warn(["./run.sh"], root, root, tracked) is None
    assert warn(["./tool"], root / "sub", root, tracked) is None
    # outside the repository: the fix names --python and the bare interpreter name
    text = warn(["/opt/env/bin/python3.11", "t.py", "--lr", "0.1"], root, root, tracked)
    assert text is not None and "/opt/env/bin/python3.11 is outside the repository" in text
    assert "`reprobox record --python /opt/env/bin/python3.11 -- python3.11 t.py --lr 0.1`" in text
    text = warn(["../env/bin/python", "t.py"], root, root, tracked)
    assert text is not None and "../env/bin/python is outside the repository" in text
    # inside, but not committed (an ignored virtualenv)
    text = warn([".venv/bin/python", "t.py"], root, root, tracked)
    assert text is not None and ".venv/bin/python is not committed" in text
    assert "--python .venv/bin/python -- python t.py" in text
    # another program: the fix is to commit it
    text = warn(["./build.sh"], root, root, tracked)
    assert text is not None and "commit it" in text and "--python" not in text


def test_the_recorded_interpreter_named_by_path_is_recorded_by_its_name(tmp_path: Path):
    root = tmp_path / "repo"
    venv_bin = root / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    base = tmp_path / "base" / "bin"
    base.mkdir(parents=True)
    (base / "python3.11").write_text("")
    for name in ("python", "python3"):
        (venv_bin / name).symlink_to(base / "python3.11")
    outside = tmp_path / "envs" / "ml" / "bin"
    outside.mkdir(parents=True)
    (outside / "python").write_text("")
    (root / "run.sh").write_text("")
    tracked = {"run.sh", "bin/python"}.__contains__
    venv_python = venv_bin / "python"

    def port(argv: list, cwd: Path, interpreter: Path) -> Optional[list]:
        done = record.portable_command(argv, cwd, root, interpreter, tracked)
        if done is not None:
            assert "interpreter" in done.why and argv[0] in done.why
        return None if done is None else done.argv

    # the venv's interpreter, by any of its names and from a sub-folder: its name, args kept
    assert port([".venv/bin/python", "t.py", "--lr", "0.1"], root, venv_python) == [
        "python",
        "t.py",
        "--lr",
        "0.1",
    ]
    assert port([".venv/bin/python3", "t.py"], root, venv_python) == ["python3", "t.py"]
    (root / "sub").mkdir()
    assert port(["../.venv/bin/python"], root / "sub", venv_python) == ["python"]
    # an interpreter outside the repository, when it is the recorded one
    assert port([str(outside / "python"), "t.py"], root, outside / "python") == ["python", "t.py"]
    # left as they are (the warning, if any, says what to do):
    # a name looked up on PATH
    assert port(["python", "t.py"], root, venv_python) is None
    # the base interpreter the venv links to: the same binary, another environment
    assert port([str(base / "python3.11"), "t.py"], root, venv_python) is None
    # another environment's interpreter than the recorded one
    assert port([str(outside / "python"), "t.py"], root, venv_python) is None
    # a program that is no interpreter (and no distribution's script), or does not exist
    assert port(["./run.sh"], root, root / "run.sh") is None
    assert port(["/nowhere/bin/python"], root, venv_python) is None
    # a committed interpreter-named file: a rerun has it as it is
    (root / "bin").mkdir()
    (root / "bin" / "python").symlink_to(base / "python3.11")
    assert port(["bin/python"], root, root / "bin" / "python") is None


def test_a_script_a_distribution_installed_beside_the_interpreter_is_recorded_by_name(
    tmp_path: Path,
):
    """`record -- .venv/bin/mytrain`: a console script of the recorded environment, which the
    rebuilt environment installs too; one no distribution lists keeps its path (and warning)."""
    root = tmp_path / "repo"
    venv = root / ".venv"
    bin_dir = venv / "bin"
    site = venv / "lib" / "python3.11" / "site-packages"
    meta = site / "mypkg-0.1.dist-info"
    meta.mkdir(parents=True)
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text("")
    for script in ("mytrain", "my train", "dropped"):
        (bin_dir / script).write_text("#!/bin/sh\n")
    (meta / "RECORD").write_text(
        "mypkg/__init__.py,,\n"
        "../../../bin/mytrain,sha256=x,10\n"
        '"../../../bin/my train",sha256=y,10\n'
        "mypkg-0.1.dist-info/RECORD,,\n"
    )
    other = tmp_path / "elsewhere" / "bin"
    other.mkdir(parents=True)
    (other / "mytrain").write_text("")
    probe = {
        "distributions": [
            {"name": "MyPkg", "metadata_dir": str(meta), "site": str(site), "has_record": True},
            {"name": "no-record", "metadata_dir": str(meta), "site": str(site)},
            "not a distribution",
        ]
    }
    owners = record.FileOwners(probe, root)
    assert owners.installed_by(str(bin_dir / "mytrain")) == "mypkg"
    assert owners.installed_by(str(bin_dir / "my train")) == "mypkg"
    assert owners.installed_by(str(bin_dir / "dropped")) is None
    nothing = record.FileOwners({"distributions": None}, root)
    assert nothing.installed_by(str(bin_dir / "mytrain")) is None

    def port(argv: list) -> Optional[record.PortableCommand]:
        return record.portable_command(
            argv,
            root,
            root,
            bin_dir / "python",
            lambda _rel: False,
            owners.installed_by,
        )

    done = port([".venv/bin/mytrain", "--epochs", "3"])
    assert done is not None and done.argv == ["mytrain", "--epochs", "3"]
    assert done.why == ".venv/bin/mytrain is a script of mypkg in the recorded environment"
    done = port([".venv/bin/my train"])
    assert done is not None and done.argv == ["my train"]
    # a file no distribution installed, one of another folder, a folder: kept as they are
    assert port([".venv/bin/dropped"]) is None
    assert port([str(other / "mytrain")]) is None
    (bin_dir / "adir").mkdir()
    assert port([".venv/bin/adir"]) is None


def _script_report(exe: str, prefix: str, main: str) -> dict:
    return dict(_report(exe, prefix), modules={"__main__": main, "os": "/usr/lib/os.py"})


def test_the_environment_that_ran_the_project_script_is_recorded(tmp_path: Path):
    """`poetry run python train.py`: poetry runs from an environment of its own, the script
    from the project's; neither is the probed one. The project's is recorded, poetry's named."""
    root = tmp_path / "repo"
    root.mkdir()
    done = _ran(
        _script_report("/tools/poetry/bin/python", "/tools/poetry", "/tools/poetry/bin/poetry"),
        _script_report("/venvs/proj/bin/python", "/venvs/proj", str(root / "train.py")),
    )
    check = record.check_interpreter(
        done, {"prefix": "/usr"}, Path("/usr/bin/python3"), False, root
    )
    assert check.switch_to == Path("/venvs/proj/bin/python")
    assert check.warnings == (
        "the command also ran /tools/poetry/bin/python: the record holds the packages of "
        "/venvs/proj/bin/python only",
    )
    # the launcher from the probed environment itself (a --user install): still the project's
    check = record.check_interpreter(
        _ran(
            _script_report("/usr/bin/python3", "/usr", "/home/u/.local/bin/poetry"),
            _script_report("/venvs/proj/bin/python", "/venvs/proj", str(root / "train.py")),
        ),
        {"prefix": "/usr"},
        Path("/usr/bin/python3"),
        False,
        root,
    )
    assert check.switch_to == Path("/venvs/proj/bin/python")
    assert "also ran /usr/bin/python3" in check.warnings[0]
    # given with --python: kept, and the one that ran the script is named
    check = record.check_interpreter(done, {"prefix": "/usr"}, Path("/usr/bin/python3"), True, root)
    assert check.switch_to is None
    (warning,) = check.warnings
    assert warning.startswith("the command ran /venvs/proj/bin/python, not /usr/bin/python3")


def test_two_environments_running_project_scripts_are_named_not_chosen(tmp_path: Path):
    root = tmp_path / "repo"
    root.mkdir()
    done = _ran(
        _script_report("/a/bin/python", "/a", str(root / "prep.py")),
        _script_report("/b/bin/python", "/b", str(root / "train.py")),
    )
    check = record.check_interpreter(
        done, {"prefix": "/usr"}, Path("/usr/bin/python3"), False, root
    )
    assert check.switch_to is None
    (warning,) = check.warnings
    assert "ran /a/bin/python, /b/bin/python, not /usr/bin/python3" in warning
    # one of them the probed one: kept, the other named
    check = record.check_interpreter(done, {"prefix": "/a"}, Path("/a/bin/python"), False, root)
    assert check.switch_to is None
    assert check.warnings == (
        "the command also ran /b/bin/python: the record holds the packages of /a/bin/python only",
    )


@pytest.mark.parametrize(
    "exe,prefix",
    [
        ("/opt/x/bin/python\0", "/opt/x"),
        ("/opt/x/bin/python", "/opt/x\0y"),
        ("/opt/x/bin/\x1b[2Jpython", "/opt/x"),
        ("bin/python", "/opt/x"),
        ("/opt/x/bin/python", "opt/x"),
        ("/" + "a" * 5000, "/opt/x"),
        (["/opt/x/bin/python"], "/opt/x"),
    ],
)
def test_a_report_s_paths_are_taken_only_when_plain_and_absolute(exe, prefix):
    """The command can write into the reports' folder too: a report whose interpreter or
    prefix is not a plain absolute path (a NUL that would make resolving it raise, a terminal
    escape that would reach the warning) is left out, and nothing is switched to it."""
    done = _ran(_report(exe, prefix))  # type: ignore[arg-type]
    check = record.check_interpreter(done, {"prefix": "/usr"}, Path("/usr/bin/python3"), False)
    assert check == record.InterpreterCheck()
    main_nul = dict(_report("/opt/x/bin/python", "/opt/x"), modules={"__main__": "/r/t.py\0"})
    assert record.interpreters_used(_ran(main_nul), Path("/r")) == {
        os.path.realpath("/opt/x"): ("/opt/x/bin/python", False)
    }
