"""Probe internals and host-side parsing, on fixtures copied from real installs.

tests/fixtures/probe/ holds real metadata: dist-info folders written by pip 23.2 for an index
wheel, a local wheel file (archive_info), a ``git+file://`` install (vcs_info), a local folder
(dir_info) and an editable install; a setuptools ``develop`` egg-info with its egg-link; Debian's
dist-packages egg-info folder, egg-info *file* and a dist-info/egg-info duplicate; ELF objects
built by gcc (elf/build.sh); this machine's ld.so.cache with its ``ldconfig -p`` listing.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from reprobox.payload import probe
from reprobox.capture import python as py
from reprobox.errors import InterpreterError, UsageError
from reprobox.model import Package, PackageSource

from ...conftest import require, require_tool
from ...asserts import refuses
from ...factories import make_elf

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "probe"
SITE = FIX / "site-packages"
DEBIAN = FIX / "debian-dist-packages"
ELF = FIX / "elf"


@pytest.fixture(autouse=True)
def _fresh_probe_warnings():
    probe._warnings.clear()
    yield
    probe._warnings.clear()


# --------------------------------------------------------------------------- distributions


def _dists(entries, sites=None):
    sites = [str(s) for s in (sites if sites is not None else entries)]
    return probe.find_distributions(sites, [str(e) for e in entries])


def test_every_metadata_kind_is_found_with_its_fields():
    active, shadowed = _dists([SITE, FIX / "devproj" / "src"], sites=[SITE])
    by = {d["name"]: d for d in active}
    assert set(by) == {"six", "arch-demo", "Demo_Pkg", "dir_demo", "vcs.demo", "dev-demo"}
    assert shadowed == []
    six = by["six"]
    assert six["version"] == "1.17.0"
    assert six["installer"] == "pip"
    assert six["requested"] is True
    assert six["wheel_tags"] == ["py2-none-any", "py3-none-any"]
    assert six["direct_url"] is None
    assert six["site"] == str(SITE)
    assert by["vcs.demo"]["direct_url"]["vcs_info"]["commit_id"] == (
        "b0445a18af997d4b66e625b8a9018d1c4455308b"
    )
    assert by["Demo_Pkg"]["direct_url"] == {
        "dir_info": {"editable": True},
        "url": "file:///tmp/fx/proj",
    }
    dev = by["dev-demo"]
    assert dev["format"] == "egg-info" and dev["develop"] is True
    assert dev["project_dir"] == str(FIX / "devproj" / "src")
    assert dev["egg_link"] is None  # the fixture's egg-link names /tmp/fx/devproj/src


def test_first_on_path_wins_and_the_rest_is_reported_shadowed():
    active, shadowed = _dists([SITE, DEBIAN])
    six = [d for d in active if d["name"] == "six"]
    assert [d["version"] for d in six] == ["1.17.0"]
    hidden = {(d["name"], d["version"], d["format"]) for d in shadowed}
    assert ("six", "1.16.0", "egg-info") in hidden
    assert all(d["shadowed_by"] for d in shadowed)


def test_same_folder_duplicate_follows_importlib_metadata():
    """cryptography has both a dist-info and an egg-info in Debian's dist-packages."""
    active, shadowed = _dists([DEBIAN])
    crypto = [d for d in active if d["name"] == "cryptography"]
    assert len(crypto) == 1 and len([d for d in shadowed if d["name"] == "cryptography"]) == 1
    first = next(importlib.metadata.Distribution.discover(name="cryptography", path=[str(DEBIAN)]))
    first_dir = Path(first._path)  # type: ignore[attr-defined]
    assert Path(crypto[0]["metadata_dir"]).name == first_dir.name


def test_names_and_versions_match_importlib_metadata():
    entries = [str(SITE), str(DEBIAN)]
    active, shadowed = _dists(entries)
    ours = {(d["name"], d["version"]) for d in active + shadowed}
    theirs = {
        (d.metadata["Name"], d.version) for d in importlib.metadata.distributions(path=entries)
    }
    assert ours == theirs


def test_egg_info_file_and_folder_from_debian():
    active, _ = _dists([DEBIAN])
    by = {d["name"]: d for d in active}
    assert by["crit"]["format"] == "egg-info-file" and by["crit"]["version"] == "3.17.1"
    assert by["six"]["format"] == "egg-info" and by["six"]["top_level"] == ["six"]
    assert "develop" not in by["six"]


def test_broken_metadata_is_reported_not_dropped(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(SITE / "six-1.17.0.dist-info", site / "six-1.17.0.dist-info")
    (site / "ghost-1.0.dist-info").mkdir()
    (site / "ghost-1.0.dist-info" / "INSTALLER").write_text("pip\n")
    bad = site / "halfway-2.0.dist-info"
    bad.mkdir()
    # Version only in the body (after the blank line) must not be picked up.
    (bad / "METADATA").write_text("Metadata-Version: 2.1\nName: halfway\n\nVersion: 9.9\n")
    active, _ = _dists([site])
    by = {d["name"]: d for d in active}
    assert by["ghost"]["problem"] == "no METADATA file" and by["ghost"]["installer"] == "pip"
    assert by["halfway"]["version"] == "" and "Version" in by["halfway"]["problem"]
    result = py.parse_probe(_raw(active), tmp_path)
    assert {p.name for p in result.packages} == {"six", "ghost", "halfway"}
    assert any("ghost-1.0.dist-info" in w for w in result.warnings)


def test_a_capture_needs_an_installable_version_of_each_package_in_use(tmp_path):
    """A broken install or a legacy version stops a capture with the folder and the fix (a
    record needs ``name==version``); a shadowed one is not in use and stays a warning."""
    site = tmp_path / "site"
    shutil.copytree(SITE / "six-1.17.0.dist-info", site / "six-1.17.0.dist-info")
    (site / "ghost-1.0.dist-info").mkdir()
    legacy = site / "oldie-1.0.dist-info"
    legacy.mkdir()
    (legacy / "METADATA").write_text("Metadata-Version: 2.1\nName: Old_ie\nVersion: 2004d-x!!\n")
    active, _ = _dists([site])
    by = {d["name"]: d for d in active}
    with refuses(UsageError, names=[str(site / "ghost-1.0.dist-info"), "no METADATA file"]) as e:
        py.check_versions(_raw([by["six"], by["ghost"]]))
    assert "--force-reinstall --no-deps ghost" in e.value.hint
    with refuses(UsageError, names=["Old_ie", "'2004d-x!!'", "PEP 440"]) as e:
        py.check_versions(_raw([by["six"], by["Old_ie"]]))
    assert "install a release of old-ie" in e.value.hint
    py.check_versions(_raw([by["six"]], shadowed=[by["ghost"], by["Old_ie"]]))  # no error


def test_headers_stop_at_the_first_blank_line(tmp_path):
    meta = tmp_path / "METADATA"
    real = (SITE / "six-1.17.0.dist-info" / "METADATA").read_text()
    meta.write_text(real.replace("Name: six", "X-Dummy: 1") + "\nName: body-not-header\n")
    headers, err = probe.read_headers(str(meta))
    assert err is None and "name" not in headers and headers["version"] == "1.17.0"


# --------------------------------------------------------------------------- parse_probe


def _raw(dists, shadowed=(), native=None):
    return {
        "probe_version": 1,
        "interpreter": {
            "implementation": "cpython",
            "version": "3.11.7",
            "abi": "cp311",
            "kind": "venv",
            "base_kind": "pyenv",
            "platform_tags": ["linux_x86_64"],
        },
        "distributions": list(dists),
        "shadowed": list(shadowed),
        "native": native,
        "os": {},
        "files": {},
        "warnings": [],
    }


def _parsed(repo_root, entries=(SITE, FIX / "devproj" / "src"), direct_url=None):
    active, shadowed = _dists(list(entries), sites=[SITE])
    if direct_url:
        for d in active:
            if d["name"] in direct_url:
                d["direct_url"] = direct_url[d["name"]]
    result = py.parse_probe(_raw(active, shadowed), Path(repo_root))
    return {p.display_name or p.name: p for p in result.packages}, result


def test_pep610_sources_from_real_direct_url_files():
    pkgs, _ = _parsed("/tmp/fx")
    assert pkgs["six"].source.kind == "index"
    vcs = pkgs["vcs.demo"]
    assert vcs.name == "vcs-demo"
    assert vcs.source.to_dict() == {
        "kind": "vcs",
        "url": "file:///tmp/fx/vcsproj",
        "vcs": "git",
        "commit": "b0445a18af997d4b66e625b8a9018d1c4455308b",
        "requested_revision": "v1.0.0",
    }
    arch = pkgs["arch-demo"].source
    assert arch.kind == "archive"
    assert arch.hash == "sha256=8859bb579501b34de6d090e30864c69c9b73b047b6657091c49ff2531204c13b"
    assert arch.url == "file:///tmp/fx/wheels/arch_demo-0.3.1-py3-none-any.whl"
    assert arch.path == "wheels/arch_demo-0.3.1-py3-none-any.whl"
    editable = pkgs["Demo_Pkg"]
    assert editable.name == "demo-pkg" and editable.to_dict()["display_name"] == "Demo_Pkg"
    assert editable.source.to_dict() == {
        "kind": "directory",
        "path": "proj",
        "editable": True,
        "in_repo": True,
    }
    plain_dir = pkgs["dir_demo"].source
    assert (plain_dir.kind, plain_dir.path, plain_dir.editable) == ("directory", "dirproj", False)


def test_directory_outside_the_repo_keeps_its_absolute_path(tmp_path):
    pkgs, _ = _parsed(tmp_path)
    src = pkgs["Demo_Pkg"].source
    assert (src.path, src.in_repo, src.editable) == ("/tmp/fx/proj", False, True)


def test_develop_egg_info_is_an_editable_directory_at_the_project_root():
    pkgs, _ = _parsed(FIX)
    dev = pkgs["dev-demo"]
    assert dev.source.to_dict() == {
        "kind": "directory",
        "path": "devproj",
        "editable": True,
        "in_repo": True,
    }


def test_archive_hash_from_legacy_hash_field():
    pkgs, _ = _parsed(
        "/tmp/fx",
        direct_url={
            "arch-demo": {
                "url": "https://files.example.com/a.whl",
                "archive_info": {"hash": "sha256=abc"},
            }
        },
    )
    assert pkgs["arch-demo"].source.hash == "sha256=abc"


CANARY = "CANARY-7f3a9e"


@pytest.mark.parametrize(
    "direct_url",
    [
        {
            "url": f"https://deploy:{CANARY}@git.example.com/org/repo.git",
            "vcs_info": {"vcs": "git", "commit_id": "a" * 40},
        },
        {
            "url": f"https://{CANARY}@git.example.com/org/repo.git",
            "vcs_info": {"vcs": "git", "commit_id": "a" * 40},
            "subdirectory": "pkg",
        },
        {
            "url": f"https://__token__:{CANARY}@files.example.com/x-1.0.tar.gz",
            "archive_info": {"hashes": {"sha256": "0" * 64}},
        },
        {
            "url": f"https://files.example.com/x-1.0.tar.gz?token={CANARY}",
            "archive_info": {"hashes": {"sha256": "0" * 64}},
        },
        {
            "url": f"ssh://deploy:{CANARY}@git.example.com/org/repo.git",
            "vcs_info": {"vcs": "git", "commit_id": "a" * 40},
        },
    ],
)
def test_no_credential_survives(direct_url):
    pkgs, result = _parsed("/tmp/fx", direct_url={"vcs.demo": direct_url})
    text = json.dumps([p.to_dict() for p in pkgs.values()]) + json.dumps(result.warnings)
    assert CANARY not in text
    assert "example.com" in json.dumps(pkgs["vcs.demo"].to_dict())


def test_ssh_git_user_is_kept():
    url = "ssh://git@github.com/org/repo.git"
    pkgs, _ = _parsed(
        "/tmp/fx",
        direct_url={"vcs.demo": {"url": url, "vcs_info": {"vcs": "git", "commit_id": "b" * 40}}},
    )
    assert pkgs["vcs.demo"].source.url == url


def test_malformed_direct_url_warns_and_falls_back_to_index():
    pkgs, result = _parsed("/tmp/fx", direct_url={"six": {"url": "https://x.example/y"}})
    assert pkgs["six"].source.kind == "index"
    assert any("none of vcs_info" in w for w in result.warnings)


def test_shadowed_distributions_become_warnings():
    active, shadowed = _dists([SITE, DEBIAN])
    result = py.parse_probe(_raw(active, shadowed), FIX)
    assert any(p.name == "six" and p.version == "1.16.0" for p in result.shadowed)
    assert any("six 1.16.0" in w and "shadowed" in w for w in result.warnings)
    assert [p.version for p in result.packages if p.name == "six"] == ["1.17.0"]


def test_native_section_split_into_system_and_prefix_libraries():
    native = {
        "libraries": {
            "libz.so.1": {
                "realpath": "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13",
                "provider": "system",
                "users": ["Pillow", "numpy", "<python>"],
            },
            "libgomp.so.1": {"realpath": None, "provider": "missing", "users": ["scikit_learn"]},
            "libpython3.11.so.1.0": {
                "realpath": "/opt/py/lib/libpython3.11.so.1.0",
                "provider": "python",
                "users": ["<python>"],
            },
        }
    }
    result = py.parse_probe(_raw([], native=native), FIX)
    assert result.needed_libraries == {
        "libgomp.so.1": None,
        "libz.so.1": "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13",
    }
    assert result.library_users["libz.so.1"] == ["<python>", "numpy", "pillow"]
    assert result.library_users["libgomp.so.1"] == ["scikit-learn"]
    assert result.prefix_libraries == {"libpython3.11.so.1.0": "/opt/py/lib/libpython3.11.so.1.0"}
    assert result.libraries_by_path() == {"/usr/lib/x86_64-linux-gnu/libz.so.1.2.13": ["libz.so.1"]}
    assert result.interpreter.kind == "venv" and result.base_kind == "pyenv"


def test_parse_refuses_output_without_interpreter():
    with refuses(InterpreterError, names="no interpreter section"):
        py.parse_probe({"probe_version": 1}, FIX)


def test_package_round_trips_through_the_model():
    pkgs, _ = _parsed("/tmp/fx")
    for p in pkgs.values():
        assert Package.from_dict(p.to_dict()) == p


# --------------------------------------------------------------------------- ELF


def _readelf(path: Path) -> dict:
    out = subprocess.run(
        ["readelf", "-d", "-h", str(path)], capture_output=True, text=True, check=True
    ).stdout
    got: dict = {"needed": []}
    for line in out.splitlines():
        if "(NEEDED)" in line:
            got["needed"].append(line.split("[", 1)[1].rstrip("]"))
        elif "(SONAME)" in line:
            got["soname"] = line.split("[", 1)[1].rstrip("]")
        elif "(RUNPATH)" in line:
            got["runpath"] = line.split("[", 1)[1].rstrip("]")
        elif "(RPATH)" in line:
            got["rpath"] = line.split("[", 1)[1].rstrip("]")
        elif line.strip().startswith("Class:"):
            got["bits"] = 64 if "ELF64" in line else 32
    return got


def test_elf_fixtures_built_by_gcc():
    run = probe.read_elf(str(ELF / "consumer_runpath.so"))
    assert run["needed"] == ["libbundled-1a2b3c4d.so.1", "libz.so.1", "libm.so.6"]
    assert run["runpath"] == "$ORIGIN/../demo.libs" and run["rpath"] is None
    assert (run["bits"], run["endian"], run["machine"]) == (64, "little", 62)
    rp = probe.read_elf(str(ELF / "consumer_rpath.so"))
    assert rp["rpath"] == "$ORIGIN/../demo.libs:/opt/nowhere/lib" and rp["runpath"] is None
    assert probe.read_elf(str(ELF / "libbundled-1a2b3c4d.so.1"))["soname"] == (
        "libbundled-1a2b3c4d.so.1"
    )


@pytest.mark.parametrize(
    "name", ["consumer_runpath.so", "consumer_rpath.so", "libbundled-1a2b3c4d.so.1"]
)
def test_elf_parser_agrees_with_readelf(name):
    require_tool("readelf", "binutils (readelf)")
    ours = probe.read_elf(str(ELF / name))
    theirs = _readelf(ELF / name)
    assert ours["needed"] == theirs["needed"]
    for key in ("soname", "runpath", "rpath"):
        assert ours[key] == theirs.get(key)


@pytest.mark.parametrize("name,bits,endian", [("powerpc", 32, "big"), ("s390x", 64, "big")])
def test_foreign_headers_of_real_static_binaries(name, bits, endian):
    """Debian's arch-test binaries: static (no dynamic section) big-endian executables."""
    info = probe.read_elf(str(ELF / name))
    assert (info["bits"], info["endian"], info["needed"]) == (bits, endian, [])


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("endian", ["little", "big"])
def test_dynamic_section_in_every_class_and_byte_order(tmp_path, bits, endian):
    path = tmp_path / "lib.so"
    path.write_bytes(
        make_elf(bits, endian, 20, ["libfoo.so.1", "libc.so.6"], "libme.so.2", "$ORIGIN/../lib")
    )
    info = probe.read_elf(str(path))
    assert (info["bits"], info["endian"], info["machine"]) == (bits, endian, 20)
    assert info["needed"] == ["libfoo.so.1", "libc.so.6"]
    assert (info["soname"], info["runpath"]) == ("libme.so.2", "$ORIGIN/../lib")
    if shutil.which("readelf"):  # the hand-built file is what binutils reads too
        assert _readelf(path)["needed"] == info["needed"]


def test_non_elf_and_truncated_files_are_not_errors(tmp_path):
    (tmp_path / "script.so").write_text("/* GNU ld script */\nGROUP ( libc.so.6 )\n")
    (tmp_path / "cut.so").write_bytes((ELF / "consumer_runpath.so").read_bytes()[:100])
    assert probe.read_elf(str(tmp_path / "script.so")) is None
    info = probe.read_elf(str(tmp_path / "cut.so"))
    assert info is None or info["needed"] == []


# --------------------------------------------------------------------------- ld.so.cache


def test_ld_cache_matches_ldconfig_listing():
    ours = probe.read_ld_cache(str(FIX / "ldcache" / "ld.so.cache"))
    listing = (FIX / "ldcache" / "ldconfig-p.txt").read_text().splitlines()
    theirs: dict = {}
    for line in listing[1:]:
        soname, sep, target = line.strip().partition(" => ")
        if not sep:
            continue  # "Cache generated by: ldconfig"
        theirs.setdefault(soname.split(" (")[0], []).append(target)
    assert ours == theirs
    assert ours["libc.so.6"] == ["/lib/x86_64-linux-gnu/libc.so.6"]


def test_unknown_cache_layout_is_none(tmp_path):
    (tmp_path / "cache").write_bytes(b"not a cache at all" * 4)
    assert probe.read_ld_cache(str(tmp_path / "cache")) is None


# --------------------------------------------------------------------------- native libraries


def _wheel_site(tmp_path: Path, consumer: str = "consumer_runpath.so") -> Path:
    """A site-packages with an auditwheel-style package: demo/ext.so + demo.libs/."""
    site = tmp_path / "site-packages"
    (site / "demo").mkdir(parents=True)
    (site / "demo.libs").mkdir()
    shutil.copy(ELF / consumer, site / "demo" / "ext.cpython-311-x86_64-linux-gnu.so")
    shutil.copy(ELF / "libbundled-1a2b3c4d.so.1", site / "demo.libs")
    meta = site / "demo-1.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
    (meta / "RECORD").write_text(
        "demo/ext.cpython-311-x86_64-linux-gnu.so,sha256=x,1\n"
        "demo.libs/libbundled-1a2b3c4d.so.1,sha256=y,2\n"
        "demo-1.0.dist-info/RECORD,,\n"
    )
    return site


def _native(site: Path, cache: probe.ProbeCache | None = None):
    dists, _ = probe.find_distributions([str(site)], [str(site)])
    cache = cache or probe.ProbeCache(None)
    return probe.native_libraries(dists, [str(site)], cache), cache


@pytest.mark.parametrize("consumer", ["consumer_runpath.so", "consumer_rpath.so"])
def test_bundled_libraries_are_dropped_and_system_ones_resolved(tmp_path, consumer):
    require(sys.platform.startswith("linux"), "an ELF/glibc (Linux) host")
    site = _wheel_site(tmp_path, consumer)
    native, _ = _native(site)
    libs = native["libraries"]
    assert "libbundled-1a2b3c4d.so.1" not in libs
    for soname in ("libz.so.1", "libm.so.6"):
        assert "demo" in libs[soname]["users"]
        assert libs[soname]["provider"] == "system"
        assert libs[soname]["realpath"] == os.path.realpath(libs[soname]["path"])
        assert Path(libs[soname]["realpath"]).is_file()


def test_unclaimed_extension_is_scanned_as_unknown(tmp_path):
    require(sys.platform.startswith("linux"), "an ELF/glibc (Linux) host")
    site = _wheel_site(tmp_path)
    (site / "stray").mkdir()
    shutil.copy(ELF / "consumer_rpath.so", site / "stray" / "mod.so")
    native, _ = _native(site)
    assert "<unknown>" in native["libraries"]["libz.so.1"]["users"]
    # the stray module's own $ORIGIN does not reach demo.libs, but the bundled copy is known
    assert "libbundled-1a2b3c4d.so.1" not in native["libraries"]


def test_missing_library_is_reported_with_its_users(tmp_path):
    require(sys.platform.startswith("linux"), "an ELF/glibc (Linux) host")
    site = _wheel_site(tmp_path)
    (site / "demo.libs" / "libbundled-1a2b3c4d.so.1").unlink()
    (site / "demo-1.0.dist-info" / "RECORD").write_text(
        "demo/ext.cpython-311-x86_64-linux-gnu.so,sha256=x,1\n"
    )
    native, _ = _native(site)
    assert native["libraries"]["libbundled-1a2b3c4d.so.1"] == {
        "path": None,
        "realpath": None,
        "how": None,
        "provider": "missing",
        "users": ["demo"],
        "files": [str(site / "demo" / "ext.cpython-311-x86_64-linux-gnu.so")],
    }
    result = py.parse_probe(_raw([], native=native), tmp_path)
    assert result.needed_libraries["libbundled-1a2b3c4d.so.1"] is None
    assert result.library_files["libbundled-1a2b3c4d.so.1"] == [
        str(site / "demo" / "ext.cpython-311-x86_64-linux-gnu.so")
    ]


def test_probe_cache_reuses_unchanged_files_and_rereads_changed_ones(tmp_path):
    site = _wheel_site(tmp_path)
    cache_file = tmp_path / "cache" / "probe.json"
    first, c1 = _native(site, probe.ProbeCache(str(cache_file)))
    c1.save()
    assert cache_file.is_file() and c1.hits == 0
    second, c2 = _native(site, probe.ProbeCache(str(cache_file)))
    assert c2.misses == 0 and c2.hits > 0
    assert second["libraries"] == first["libraries"]
    ext = site / "demo" / "ext.cpython-311-x86_64-linux-gnu.so"
    shutil.copy(ELF / "libbundled-1a2b3c4d.so.1", ext)  # different content and size
    third, c3 = _native(site, probe.ProbeCache(str(cache_file)))
    assert c3.misses == 1
    assert (
        "libz.so.1" not in third["libraries"]
        or "demo" not in third["libraries"]["libz.so.1"]["users"]
    )


def test_corrupt_cache_is_ignored(tmp_path):
    cache_file = tmp_path / "probe.json"
    cache_file.write_text("{not json")
    cache = probe.ProbeCache(str(cache_file))
    assert cache.old == {}


def test_record_parsing_on_a_real_auditwheel_record(tmp_path):
    sos, tops = probe.parse_record(str(FIX / "record-pyzmq.txt"))
    assert "pyzmq.libs/libzmq-2f02442c.so.5.2.5" in sos
    assert any(s.startswith("zmq/backend/cython/") and s.endswith(".so") for s in sos)
    assert all(probe._is_so(s) for s in sos)
    assert {"zmq", "pyzmq.libs", "pyzmq-27.3.0.dist-info"} <= set(tops)
    quoted = tmp_path / "RECORD"
    quoted.write_text('"odd,dir/x.so",sha256=z,3\nplain/y.so.2,,\nnot/so.py,,\n')
    sos, tops = probe.parse_record(str(quoted))
    assert sos == ["odd,dir/x.so", "plain/y.so.2"]


# --------------------------------------------------------------------------- interpreter


class _FakeSysconfig:
    def __init__(self, plat, config=None):
        self.plat, self.config = plat, config or {}

    def get_platform(self):
        return self.plat

    def get_config_var(self, name):
        return self.config.get(name)


@pytest.mark.parametrize(
    "glibc,expected",
    [
        (
            "2.36",
            [
                "manylinux_2_36_x86_64",
                "manylinux_2_35_x86_64",
                "manylinux_2_34_x86_64",
                "manylinux_2_33_x86_64",
                "manylinux_2_17_x86_64",
                "linux_x86_64",
            ],
        ),
        (
            "2.17",
            [
                "manylinux_2_17_x86_64",
                "manylinux_2_16_x86_64",
                "manylinux_2_15_x86_64",
                "manylinux_2_14_x86_64",
                "linux_x86_64",
            ],
        ),
        ("2.5", ["manylinux_2_5_x86_64", "linux_x86_64"]),
    ],
)
def test_platform_tags_follow_glibc(glibc, expected):
    require(struct.calcsize("P") == 8, "a 64-bit Python running the tests")
    assert probe.platform_tags(_FakeSysconfig("linux-x86_64"), glibc) == expected


def test_platform_tag_off_linux():
    assert probe.platform_tags(_FakeSysconfig("macosx-11.0-arm64"), None) == ["macosx_11_0_arm64"]


def test_interpreter_kinds(tmp_path, monkeypatch):
    monkeypatch.delenv("UV_PYTHON_INSTALL_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    sc = _FakeSysconfig("linux-x86_64")
    conda = tmp_path / "conda"
    (conda / "conda-meta").mkdir(parents=True)
    assert probe.interpreter_kind(str(conda), str(conda), sc) == ("conda", "conda")
    venv = tmp_path / "venv"
    venv.mkdir()
    assert probe.interpreter_kind(str(venv), str(conda), sc) == ("venv", "conda")
    uv = tmp_path / "data" / "uv" / "python" / "cpython-3.12.3-linux-x86_64-gnu"
    uv.mkdir(parents=True)
    assert probe.interpreter_kind(str(uv), str(uv), sc)[0] == "uv"
    pbs = tmp_path / "pbs"
    pbs.mkdir()
    sc_pbs = _FakeSysconfig("linux-x86_64", {"CONFIG_ARGS": "'--prefix=/install' '--with-lto'"})
    assert probe.interpreter_kind(str(pbs), str(pbs), sc_pbs)[0] == "python-build-standalone"
    assert probe.interpreter_kind("/usr", "/usr", sc) == ("system", "system")
    pyenv = tmp_path / ".pyenv" / "versions" / "3.11.7"
    pyenv.mkdir(parents=True)
    assert probe.interpreter_kind(str(pyenv), str(pyenv), sc)[0] == "pyenv"
    assert probe.interpreter_kind(str(pbs), str(pbs), sc)[0] == "other"


def test_os_release_parsing_of_a_real_file():
    rel = probe.os_release(str(tmp) for tmp in [FIX / "missing", FIX / "os-release-debian12"])
    assert rel["ID"] == "debian" and rel["VERSION_CODENAME"] == "bookworm"
    assert rel["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"


# --------------------------------------------------------------------------- target & run


def _exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_target_order_explicit_venv_conda_path(tmp_path):
    venv_py = _exe(tmp_path / "venv" / "bin" / "python", "#!/bin/sh\n")
    conda_py = _exe(tmp_path / "conda" / "bin" / "python", "#!/bin/sh\n")
    path_py = _exe(tmp_path / "path" / "python3", "#!/bin/sh\n")
    env = {
        "VIRTUAL_ENV": str(tmp_path / "venv"),
        "CONDA_PREFIX": str(tmp_path / "conda"),
        "PATH": str(tmp_path / "path"),
    }
    assert py.find_target_python(str(path_py), env) == path_py
    assert py.find_target_python(None, env) == venv_py
    del env["VIRTUAL_ENV"]
    assert py.find_target_python(None, env) == conda_py
    del env["CONDA_PREFIX"]
    assert py.find_target_python(None, env) == path_py
    assert py.find_target_python(str(tmp_path / "venv"), env) == venv_py  # a venv folder


def test_a_relative_python_is_the_file_given_never_one_found_on_path(tmp_path, monkeypatch):
    """`--python ./python3` (which a path object shortens to `python3`) and a relative path
    become absolute paths, links kept: run as a bare name, it would be looked up on PATH."""
    here = _exe(tmp_path / "proj" / "python3", "#!/bin/sh\n")
    venv_py = tmp_path / "proj" / ".venv" / "bin" / "python"
    venv_py.parent.mkdir(parents=True)
    venv_py.symlink_to(here)
    elsewhere = _exe(tmp_path / "path" / "python3", "#!/bin/sh\n")
    env = {"PATH": str(elsewhere.parent)}
    monkeypatch.chdir(tmp_path / "proj")
    assert py.find_target_python("./python3", env) == here
    assert py.find_target_python("python3", env) == here  # a file of that name is here
    assert py.find_target_python(".venv/bin/python", env) == venv_py  # the link, not its target
    assert all(
        py.find_target_python(arg, env).is_absolute() for arg in ("./python3", ".venv/bin/python")
    )
    monkeypatch.chdir(tmp_path)
    assert py.find_target_python("python3", env) == elsewhere  # none here: from PATH


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "not-executable",
        "not-a-program",
        "text-not-executable",
        "no-python",
        "stale-venv",
    ],
)
def test_target_errors_name_the_fix(tmp_path, case):
    env = {"PATH": str(tmp_path / "empty")}
    explicit = None
    if case == "missing":
        explicit = str(tmp_path / "nope" / "python")
    elif case == "not-executable":
        p = tmp_path / "python"
        p.write_text("#!/bin/sh\n")
        explicit = str(p)
    elif case == "not-a-program":
        explicit = str(_exe(tmp_path / "python", "just some text\n"))
    elif case == "text-not-executable":  # /etc/passwd: `chmod +x` would be the wrong fix
        p = tmp_path / "passwd"
        p.write_text("root:x:0:0:root:/root:/bin/bash\n")
        explicit = str(p)
    elif case == "stale-venv":
        env["VIRTUAL_ENV"] = str(tmp_path / "gone")
    # Each names the path (or the variable) it refuses, and the fix.
    named = {
        "missing": str(tmp_path / "nope" / "python"),
        "not-executable": "chmod +x",
        "not-a-program": "is not a program",
        "text-not-executable": "is not a program",
        "no-python": "no `python` or `python3` on PATH",
        "stale-venv": "$VIRTUAL_ENV points to " + str(tmp_path / "gone"),
    }[case]
    with refuses(InterpreterError, names=[named, "fix: "]):
        py.find_target_python(explicit, env)


def test_run_probe_rejects_a_program_that_is_not_python(tmp_path):
    fake = _exe(tmp_path / "python", "#!/bin/sh\necho 'hello from a .pth'\n")
    with refuses(InterpreterError, names=[str(fake), "expected JSON", ".pth"]):
        py.run_probe(fake)


def test_run_probe_reports_a_crashing_interpreter(tmp_path):
    fake = _exe(tmp_path / "python", "#!/bin/sh\necho 'Fatal Python error: init' >&2\nexit 1\n")
    with refuses(InterpreterError, names=[str(fake), "not a working Python", "Fatal Python"]):
        py.run_probe(fake)


def test_run_probe_cannot_execute(tmp_path):
    p = tmp_path / "python"
    p.write_text("#!/bin/sh\n")
    with refuses(InterpreterError, names=f"cannot run {p}"):
        py.run_probe(p)


PY27 = Path(os.path.expanduser("~/.pyenv/versions/2.7.18/bin/python2.7"))


def test_run_probe_names_a_too_old_python():
    require(PY27.exists(), "CPython 2.7.18 built by pyenv (scripts/setup.sh installs it)")
    with refuses(InterpreterError, names=["2.7.18", "3.8"]):
        py.run_probe(PY27)


def test_probe_command_isolates_and_passes_user_site(tmp_path):
    argv = py.probe_command(Path("/x/python"), tmp_path / "c.json", {})
    assert argv[:2] == ["/x/python", "-I"] and "-S" not in argv
    assert "--user-site" in argv and argv[-2:] == ["--cache", str(tmp_path / "c.json")]
    assert "--user-site" not in py.probe_command(Path("/x/python"), None, {"PYTHONNOUSERSITE": "1"})


def test_run_probe_in_this_interpreter_ignores_pythonpath(tmp_path, monkeypatch):
    """The real probe, in the interpreter running the tests: PYTHONPATH must not leak in."""
    fake_site = tmp_path / "leak"
    shutil.copytree(SITE / "six-1.17.0.dist-info", fake_site / "leaky_pkg-6.6.6.dist-info")
    (fake_site / "leaky_pkg-6.6.6.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: leaky-pkg\nVersion: 6.6.6\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(fake_site))
    raw = py.run_probe(Path(sys.executable), cache_dir=tmp_path / "cache")
    names = {d["name"] for d in raw["distributions"]}
    assert "leaky-pkg" not in names
    assert any("PYTHONPATH" in w for w in raw["warnings"])
    assert raw["interpreter"]["version"].startswith(f"{sys.version_info[0]}.{sys.version_info[1]}.")
    assert list((tmp_path / "cache").glob("probe-*.json"))


def test_build_and_compiler_match_the_platform_module():
    import platform

    assert probe._build_and_compiler() == (
        ", ".join(x for x in platform.python_build() if x),
        platform.python_compiler(),
    )


def test_start_probe_runs_in_the_background_and_reraises(tmp_path):
    raw = py.start_probe(Path(sys.executable)).result(timeout=120)
    assert raw["interpreter"]["executable"]
    broken = _exe(tmp_path / "python", "#!/bin/sh\nexit 3\n")
    with refuses(InterpreterError, names=[str(broken), "exit status 3"]):
        py.start_probe(broken).result(timeout=120)


def test_a_folder_on_the_path_twice_is_scanned_once(tmp_path):
    link = tmp_path / "lib64"
    link.symlink_to(SITE)
    active, shadowed = _dists([SITE, link, SITE], sites=[SITE])
    assert shadowed == [] and len([d for d in active if d["name"] == "six"]) == 1


def test_version_files_are_shipped_raw_and_capped(tmp_path):
    site = tmp_path / "site"
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "version.py").write_text(
        "__version__ = '2.3.1+cu121'\ncuda: Optional[str] = '12.1'\n" + "#" * 40000
    )
    dists = [{"site": str(site), "name": "torch"}]
    files = probe.version_files(dists)
    assert list(files) == ["torch/version.py"]
    assert files["torch/version.py"].startswith("__version__ = '2.3.1+cu121'\ncuda:")
    assert len(files["torch/version.py"]) == probe.VERSION_FILE_CAP


def test_a_probe_crash_is_not_blamed_on_the_interpreter(tmp_path, monkeypatch):
    broken = tmp_path / "probe.py"
    broken.write_text("raise RuntimeError('probe bug')\n")
    monkeypatch.setattr(py, "PROBE", broken)
    with refuses(InterpreterError, names=["probe failed inside", "probe bug"]):
        py.run_probe(Path(sys.executable))


def test_run_probe_takes_the_users_environment(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONNOUSERSITE": "1"}
    raw = py.run_probe(Path(sys.executable), environ=env)
    assert raw["user_site"] is None
    assert any("PYTHONPATH" in w for w in raw["warnings"])


def _editable_with_its_egg_info(tmp_path, version_in_tree="0.1"):
    """`pip install -e .` of a src-layout project: the dist-info in site-packages points at the
    project, and the build left `src/demo.egg-info` in the tree (on sys.path through src/)."""
    repo = tmp_path / "repo"
    (repo / "src" / "demo").mkdir(parents=True)
    egg = repo / "src" / "demo.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text(
        f"Metadata-Version: 2.1\nName: demo\nVersion: {version_in_tree}\n"
    )
    site = tmp_path / "site"
    dist = site / "demo-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: demo\nVersion: 0.1\n")
    (dist / "INSTALLER").write_text("pip\n")
    (dist / "direct_url.json").write_text(
        json.dumps({"url": repo.as_uri(), "dir_info": {"editable": True}})
    )
    active, shadowed = _dists([site, repo / "src"], sites=[site])
    return py.parse_probe(_raw(active, shadowed), repo)


def test_an_editable_installs_own_egg_info_is_not_called_stale(tmp_path):
    result = _editable_with_its_egg_info(tmp_path)
    assert [(p.name, p.source.kind, p.source.editable) for p in result.packages] == [
        ("demo", "directory", True)
    ]
    assert not any("shadowed" in w for w in result.warnings), result.warnings


def test_a_stale_egg_info_of_another_version_is_still_named(tmp_path):
    result = _editable_with_its_egg_info(tmp_path, version_in_tree="0.0.9")
    assert any("demo 0.0.9" in w and "shadowed" in w for w in result.warnings), result.warnings


def _installed_from_folder(tmp_path: Path, files: dict, installed: dict, extra_rows: str = ""):
    """A repository with a package's source folder, and a site with its installed copy."""
    import base64
    import hashlib

    from reprobox.capture import python as py_mod

    root = tmp_path / "repo"
    for rel, text in files.items():
        (root / "libs" / "my lib" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "libs" / "my lib" / rel).write_text(text)
    site = tmp_path / "site"
    meta = site / "mylib-0.2.dist-info"
    meta.mkdir(parents=True)
    rows = []
    for rel, text in installed.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest())
        rows.append(f"{rel},sha256={digest.rstrip(b'=').decode()},{len(text)}")
    (meta / "RECORD").write_text("\n".join(rows) + "\nmylib-0.2.dist-info/RECORD,,\n" + extra_rows)
    dists = [{"name": "MyLib", "metadata_dir": str(meta), "site": str(site), "has_record": True}]

    def pkgs(**source):
        src = dict(kind="directory", path="libs/my lib", in_repo=True, editable=False)
        src.update(source)
        return [Package("mylib", "0.2", PackageSource(**src))]

    return py_mod.stale_local_sources, root, dists, pkgs


def test_a_package_installed_from_a_changed_folder_of_the_repository_is_named(tmp_path: Path):
    stale, root, dists, pkgs = _installed_from_folder(
        tmp_path,
        {"mylib/__init__.py": "VALUE = 43\n", "mylib/util.py": "X = 1\n", "setup.py": ""},
        {"mylib/__init__.py": "VALUE = 42\n", "mylib/util.py": "X = 1\n"},
    )
    (warning,) = stale(pkgs(), dists, root)
    assert "package mylib 0.2 was installed from libs/my lib before its source changed" in warning
    assert "the installed mylib/__init__.py, which differs from libs/my lib/mylib/__init__.py" in (
        warning
    )
    assert "(`pip install './libs/my lib'`" in warning and "more file" not in warning
    # editable (it follows the source), outside the repository, from an index: not judged
    assert stale(pkgs(editable=True), dists, root) == []
    assert stale(pkgs(in_repo=False), dists, root) == []
    assert stale([Package("mylib", "0.2")], dists, root) == []
    # a probe answer that is not a list, or a distribution without RECORD
    assert stale(pkgs(), None, root) == []
    assert stale(pkgs(), [dict(dists[0], has_record=False), "x"], root) == []


def test_a_package_installed_from_a_folder_as_it_is_is_not_named(tmp_path: Path):
    stale, root, dists, pkgs = _installed_from_folder(
        tmp_path,
        # a src layout; a file the source does not have (generated at build) is not judged
        {"src/mylib/__init__.py": "VALUE = 42\n"},
        {"mylib/__init__.py": "VALUE = 42\n", "mylib/_version.py": "v = '0.2'\n"},
    )
    assert stale(pkgs(), dists, root) == []
    (root / "libs" / "my lib" / "src" / "mylib" / "__init__.py").write_text("VALUE = 1\n")
    (warning,) = stale(pkgs(), dists, root)
    assert "differs from libs/my lib/src/mylib/__init__.py" in warning


def test_the_stale_source_check_reads_nothing_outside_the_package_folder(tmp_path: Path):
    outside = tmp_path / "secret.py"
    outside.write_text("TOKEN = 1\n")
    stale, root, dists, pkgs = _installed_from_folder(
        tmp_path,
        {"mylib/__init__.py": "VALUE = 42\n", "other.py": "A = 1\n"},
        {"mylib/__init__.py": "VALUE = 42\n"},
        # rows naming files outside the site, absolute, or through the folder's parent
        extra_rows=(
            f"../../secret.py,sha256=x,1\n{outside},sha256=x,1\n"
            "mylib/../../../secret.py,sha256=x,1\nmylib/link.py,sha256=x,1\n"
        ),
    )
    (root / "libs" / "my lib" / "mylib" / "link.py").symlink_to(outside)
    assert stale(pkgs(), dists, root) == []
    # a recorded folder that leaves the repository is not read either
    assert stale(pkgs(path="../.."), dists, root) == []
    (root / "libs" / "escape").symlink_to(tmp_path)
    assert stale(pkgs(path="libs/escape"), dists, root) == []
