"""OS info and OS-package ownership, on real dpkg data copied from a Debian 12 machine.

tests/fixtures/probe/dpkg/ holds real ``.list`` files from /var/lib/dpkg/info, the real output of
``dpkg-query -S`` (including a diversion and a file with two owners) and of the ``dpkg-query -W``
format this module asks for. The rpm parser is checked against rpm's documented ``--qf`` output
shape only (no rpm database on the development machine).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reprobox.capture import system
from reprobox.payload import probe
from reprobox.model import OSInfo, SystemPackage

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "probe"
DPKG = FIX / "dpkg"


def test_os_info_from_probe_section():
    raw = {
        "release": probe.os_release([str(FIX / "os-release-debian12")]),
        "system": "Linux",
        "kernel": "6.1.0-18-amd64",
        "machine": "x86_64",
        "glibc": "2.36",
    }
    assert system.os_info(raw) == OSInfo(
        id="debian",
        version_id="12",
        codename="bookworm",
        pretty_name="Debian GNU/Linux 12 (bookworm)",
        id_like=(),
        kernel="6.1.0-18-amd64",
        glibc="2.36",
        arch="x86_64",
        system="Linux",
    )


def test_os_info_ubuntu_codename_and_id_like():
    raw = {
        "release": {
            "ID": "ubuntu",
            "ID_LIKE": "debian",
            "UBUNTU_CODENAME": "jammy",
            "VERSION_ID": "22.04",
        }
    }
    info = system.os_info(raw)
    assert (info.codename, info.id_like, info.debian_family) == ("jammy", ("debian",), True)
    assert system.os_info({}).system == "Linux"


def test_path_variants_cover_merged_usr():
    v = system.path_variants("/usr/lib/x86_64-linux-gnu/libz.so.1.2.13")
    assert v[:2] == [
        "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13",
        "/lib/x86_64-linux-gnu/libz.so.1.2.13",
    ]
    assert "/usr/lib/x86_64-linux-gnu/libc.so.6" in system.path_variants(
        "/lib/x86_64-linux-gnu/libc.so.6"
    )


def test_parse_real_dpkg_search_output():
    owners = system.parse_dpkg_search((DPKG / "query-S.txt").read_text())
    assert owners["/lib/x86_64-linux-gnu/libc.so.6"] == ["libc6:amd64"]
    assert owners["/usr/share/zoneinfo/UTC"] == ["tzdata"]
    assert owners["/usr/bin/pg_config"] == ["postgresql-common", "libpq-dev"]
    assert "/usr/bin/pg_config.libpq-dev" not in owners  # diversion lines are not ownership


def test_parse_real_dpkg_versions_output():
    versions = system.parse_dpkg_versions((DPKG / "query-W.txt").read_text())
    assert versions["libc6:amd64"] == ("libc6", "2.36-9+deb12u14", "amd64")
    assert versions["libc6"] == versions["libc6:amd64"]
    assert versions["tzdata"] == ("tzdata", "2025b-0+deb12u2", "all")
    assert versions["zlib1g:amd64"][1] == "1:1.2.13.dfsg-1"


def test_parse_dpkg_versions_skips_not_installed():
    text = "libfoo1:amd64\tlibfoo1\tamd64\t1.0-1\trc \n"
    assert system.parse_dpkg_versions(text) == {}


def test_scan_of_real_list_files():
    found = system._dpkg_scan_lists(
        {
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/x86_64-linux-gnu/libz.so.1.2.13",
            "/usr/share/zoneinfo/UTC",
            "/lib/x86_64-linux-gnu/libgcc_s.so.1",
            "/lib/x86_64-linux-gnu/libnothere.so.3",
        },
        DPKG / "info",
    )
    assert found == {
        "/lib/x86_64-linux-gnu/libc.so.6": ["libc6:amd64"],
        "/lib/x86_64-linux-gnu/libz.so.1.2.13": ["zlib1g:amd64"],
        "/usr/share/zoneinfo/UTC": ["tzdata"],
        "/lib/x86_64-linux-gnu/libgcc_s.so.1": ["libgcc-s1:amd64"],
    }


@pytest.fixture
def fake_dpkg(tmp_path, monkeypatch):
    """dpkg database = the fixture lists; ``dpkg-query -W`` answers with its real output."""
    status = tmp_path / "status"
    status.write_text("Package: libc6\n")
    monkeypatch.setattr(system, "DPKG_INFO", DPKG / "info")
    monkeypatch.setattr(system, "DPKG_STATUS", status)
    monkeypatch.setattr(system, "DPKG_DIVERSIONS", tmp_path / "no-diversions")
    monkeypatch.setattr(system.proc, "which", lambda name: "/usr/bin/" + name)
    calls: list[list[str]] = []

    def fake_run(argv, **kwargs):
        argv = [str(a) for a in argv]
        calls.append(argv)
        assert argv[:2] == ["dpkg-query", "-W"], argv
        wanted = set(argv[4:])
        lines = [
            line
            for line in (DPKG / "query-W.txt").read_text().splitlines()
            if line.split("\t")[0] in wanted or line.split("\t")[1] in wanted
        ]
        return subprocess.CompletedProcess(argv, 0, "\n".join(lines) + "\n", "")

    monkeypatch.setattr(system.proc, "run", fake_run)
    return {"calls": calls, "status": status}


def test_owning_packages_with_usrmerge_paths(fake_dpkg):
    paths = [
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13",
        "/opt/cuda/lib64/libcudart.so.12",
    ]
    by_path = {
        paths[0]: ["libc.so.6"],
        paths[1]: ["libm.so.6"],
        paths[2]: ["libz.so.1"],
        paths[3]: ["libcudart.so.12"],
    }
    packages, unowned = system.owning_packages(paths, by_path)
    assert packages == [
        SystemPackage("libc6", "2.36-9+deb12u14", "dpkg", "amd64", ("libc.so.6", "libm.so.6")),
        SystemPackage("zlib1g", "1:1.2.13.dfsg-1", "dpkg", "amd64", ("libz.so.1",)),
    ]
    assert unowned == ["/opt/cuda/lib64/libcudart.so.12"]
    assert len(fake_dpkg["calls"]) == 1  # one dpkg-query -W, no -S


def test_owning_packages_cache(fake_dpkg, tmp_path, monkeypatch):
    paths = ["/usr/lib/x86_64-linux-gnu/libc.so.6"]
    first = system.owning_packages(paths, cache_dir=tmp_path / "cache")
    assert first[0][0].libraries == ("libc.so.6",)

    def boom(*a, **k):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(system, "_dpkg_owners", boom)
    assert system.owning_packages(paths, cache_dir=tmp_path / "cache") == first
    fake_dpkg["status"].write_text("Package: libc6\nStatus: install ok installed\n")
    with pytest.raises(AssertionError, match="cache should have answered"):
        system.owning_packages(paths, cache_dir=tmp_path / "cache")


def test_lists_read_ahead_answer_as_the_scan_does(tmp_path):
    info = DPKG / "info"
    libs = {
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib/x86_64-linux-gnu/libz.so.1.2.13",
        "/lib/x86_64-linux-gnu/libgcc_s.so.1",
        "/lib/x86_64-linux-gnu/libnothere.so.3",
    }
    lists = system.DpkgLists.read(info)
    assert system._dpkg_scan_lists(libs, info, lists) == system._dpkg_scan_lists(libs, info)
    assert system._dpkg_scan_lists(libs, info, lists)["/lib/x86_64-linux-gnu/libc.so.6"] == [
        "libc6:amd64"
    ]
    # the lists are what is looked up: an index of another content answers from that content
    other = system.DpkgLists({b"/lib/x86_64-linux-gnu/libc.so.6": ["elsewhere"]}, info)
    assert system._dpkg_scan_lists(libs, info, other) == {
        "/lib/x86_64-linux-gnu/libc.so.6": ["elsewhere"]
    }
    # a path without ".so" is not in them: the folder is scanned as before
    odd = libs | {"/usr/share/zoneinfo/UTC"}
    assert system._dpkg_scan_lists(odd, info, other)["/lib/x86_64-linux-gnu/libc.so.6"] == [
        "libc6:amd64"
    ]
    assert system._dpkg_scan_lists(odd, info, other)["/usr/share/zoneinfo/UTC"] == ["tzdata"]
    # lists read from another folder are not used: the folder asked about is scanned
    assert system._dpkg_scan_lists(libs, tmp_path, other) == {}


def test_read_ahead_only_when_the_answer_is_not_cached(fake_dpkg, tmp_path):
    cache = tmp_path / "system"
    lists = system.read_ahead(cache)
    assert lists is not None and lists.info_dir == DPKG / "info"
    assert lists.so_lines[b"/lib/x86_64-linux-gnu/libc.so.6"] == ["libc6:amd64"]
    paths = ["/usr/lib/x86_64-linux-gnu/libc.so.6"]
    assert system.owning_packages(paths, cache_dir=cache, dpkg_lists=lists) == (
        system.owning_packages(paths)
    )
    assert (cache / system.SYSTEM_CACHE_FILE).is_file()
    assert system.read_ahead(cache) is None  # a later capture: the cache answers


def test_read_ahead_on_a_system_without_dpkg(tmp_path, monkeypatch):
    monkeypatch.setattr(system, "DPKG_STATUS", tmp_path / "no-status")
    monkeypatch.setattr(system.proc, "which", lambda name: None)
    assert system.read_ahead(tmp_path / "system") is None


def test_diverted_path_uses_dpkg_query_search(fake_dpkg, tmp_path, monkeypatch):
    diversions = tmp_path / "diversions"
    diversions.write_text(
        "/lib/x86_64-linux-gnu/libc.so.6\n/lib/x86_64-linux-gnu/libc.so.6.real\nsomepkg\n"
    )
    monkeypatch.setattr(system, "DPKG_DIVERSIONS", diversions)
    seen = []

    def search(candidates):
        seen.append(sorted(candidates))
        return system.parse_dpkg_search((DPKG / "query-S.txt").read_text())

    monkeypatch.setattr(system, "_dpkg_search", search)
    packages, _ = system.owning_packages(["/lib/x86_64-linux-gnu/libc.so.6"])
    assert seen and packages[0].name == "libc6"


def test_no_package_manager_means_everything_unowned(monkeypatch):
    monkeypatch.setattr(system, "package_manager", lambda: None)
    assert system.owning_packages(["/b.so", "/a.so", ""]) == ([], ["/a.so", "/b.so"])
    assert system.owning_packages([]) == ([], [])


def test_rpm_output_is_matched_back_to_paths():
    paths = ["/usr/lib64/libz.so.1", "/opt/x/libfoo.so"]
    text = "zlib\t0:1.2.11-40.el9\tx86_64\nfile /opt/x/libfoo.so is not owned by any package\n"
    assert system.parse_rpm_query(paths, text) == {
        "/usr/lib64/libz.so.1": ("zlib", "1.2.11-40.el9", "x86_64")
    }
    # two owners for one file: the line count no longer matches, ask path by path
    assert system.parse_rpm_query(paths[:1], "a\t0:1-1\tx86_64\nb\t0:1-1\tx86_64\n") is None
