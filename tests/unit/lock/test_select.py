"""Which files a lock names: the installed one (by WHEEL tags) and the Linux rebuild candidates.

The release used is PyYAML 6.0.2 as PyPI lists it (recorded page): 52 files for five Python
versions on Linux, macOS and Windows, plus the sdist.
"""

from __future__ import annotations

import pytest

from reprobox.lock.dists import DistFile, ReleaseFilter, Source, parse_filename
from reprobox.lock.select import (
    Target,
    capture_platform_files,
    installed_files,
    interpreter_pairs,
    ordered,
    parse_wheel_tags,
    rebuild_files,
    wheel_fits,
)
from tests.fixtures.lock.fakeindex import json_files

SRC = Source("https://pypi.org/simple", "index")
CP311 = Target("3.11.7", "cpython", "cp311", "linux", "x86_64")


def _release(project: str, version: str) -> list[DistFile]:
    keep = ReleaseFilter(project, version)
    return [
        DistFile(f["filename"], f["url"], SRC, f["hashes"], f.get("size"))
        for f in json_files(project)
        if keep(f["filename"])
    ]


@pytest.fixture(scope="module")
def pyyaml() -> list[DistFile]:
    files = _release("pyyaml", "6.0.2")
    assert len(files) == 53  # the recorded release, whole
    return files


def test_installed_wheel_is_found_by_its_exact_tag_set(pyyaml):
    tags = parse_wheel_tags(
        ["cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-manylinux2014_x86_64"]
    )
    found = installed_files(pyyaml, tags)
    assert [f.filename for f in found] == [
        "PyYAML-6.0.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    ]
    # one tag of the pair alone still points at that file (best overlap), not at another one
    found = installed_files(pyyaml, parse_wheel_tags(["cp311-cp311-manylinux2014_x86_64"]))
    assert [f.filename for f in found] == [
        "PyYAML-6.0.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    ]


def test_a_locally_built_wheel_matches_nothing(pyyaml):
    assert installed_files(pyyaml, parse_wheel_tags(["cp311-cp311-linux_x86_64"])) == []
    assert installed_files(pyyaml, frozenset()) == []


def test_rebuild_candidates_are_linux_wheels_of_the_same_interpreter_and_the_sdist(pyyaml):
    names = sorted(f.filename for f in rebuild_files(pyyaml, CP311))
    assert names == [
        "PyYAML-6.0.2-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
        "PyYAML-6.0.2-cp311-cp311-manylinux_2_17_s390x.manylinux2014_s390x.whl",
        "PyYAML-6.0.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "PyYAML-6.0.2-cp311-cp311-musllinux_1_1_aarch64.whl",
        "PyYAML-6.0.2-cp311-cp311-musllinux_1_1_x86_64.whl",
        "pyyaml-6.0.2.tar.gz",
    ]
    arm = sorted(f.filename for f in rebuild_files(pyyaml, CP311, machines=frozenset({"aarch64"})))
    assert arm == [
        "PyYAML-6.0.2-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
        "PyYAML-6.0.2-cp311-cp311-musllinux_1_1_aarch64.whl",
        "pyyaml-6.0.2.tar.gz",
    ]


def test_a_macos_capture_also_keeps_its_own_platform_wheels(pyyaml):
    mac = Target("3.12.4", "cpython", "cp312", "darwin", "arm64")
    names = sorted(f.filename for f in capture_platform_files(pyyaml, mac))
    assert names == [
        "PyYAML-6.0.2-cp312-cp312-macosx_10_9_x86_64.whl",
        "PyYAML-6.0.2-cp312-cp312-macosx_11_0_arm64.whl",
    ]
    assert capture_platform_files(pyyaml, CP311) == []


def test_pure_and_abi3_wheels_fit_newer_interpreters():
    def fits(filename: str, target: Target = CP311) -> bool:
        return wheel_fits(DistFile(filename, "u", SRC), target)

    assert fits("six-1.16.0-py2.py3-none-any.whl")
    assert fits("cryptography-42.0.5-cp39-abi3-manylinux_2_28_x86_64.whl")
    assert not fits("cryptography-42.0.5-cp39-abi3-macosx_10_12_universal2.whl")
    assert not fits("numpy-2.0.0-cp312-cp312-manylinux_2_17_x86_64.whl")
    assert not fits("x-1.0-cp311-cp311-win_amd64.whl")
    # free-threaded CPython: its own ABI, and no abi3
    ft = Target("3.13.1", "cpython", "cp313t", "linux", "x86_64")
    assert fits("x-1.0-cp313-cp313t-manylinux_2_17_x86_64.whl", ft)
    assert not fits("x-1.0-cp313-cp313-manylinux_2_17_x86_64.whl", ft)
    assert not fits("x-1.0-cp39-abi3-manylinux_2_17_x86_64.whl", ft)
    assert ("cp311", "abi3") in interpreter_pairs(CP311)
    assert ("cp38", "abi3") in interpreter_pairs(CP311)


def test_release_filter_and_name_parsing():
    keep = ReleaseFilter("python-dateutil", "2.8.2")
    assert keep("python_dateutil-2.8.2-py2.py3-none-any.whl")
    assert keep("python-dateutil-2.8.2.tar.gz")
    assert not keep("python-dateutil-2.8.1.tar.gz")
    assert not keep("python_dateutil-2.8.2-py2.py3-none-any.whl.metadata")
    assert ReleaseFilter("torch", "2.3.0+cpu")("torch-2.3.0+cpu-cp311-cp311-linux_x86_64.whl")
    assert not ReleaseFilter("torch", "2.3.0")("torch-2.3.0+cpu-cp311-cp311-linux_x86_64.whl")
    # PEP 440 equality of spellings: "1.0" is "1.0.0"? no, but "2.0rc1" is "2.0.rc1"
    assert ReleaseFilter("foo", "2.0rc1")("foo-2.0.rc1.tar.gz")
    parsed = parse_filename("PyYAML-6.0.2-cp311-cp311-musllinux_1_1_x86_64.whl")
    assert parsed is not None and parsed.name == "pyyaml" and str(parsed.version) == "6.0.2"
    assert parse_filename("foo-1.0-py2.7.egg") is None


def test_target_marker_and_order():
    assert CP311.marker() == (
        "python_full_version == '3.11.7' and implementation_name == "
        "'cpython' and sys_platform == 'linux' and platform_machine == "
        "'x86_64'"
    )
    a = DistFile("b.whl", "u1", SRC)
    b = DistFile("a.tar.gz", "u2", SRC)
    c = DistFile("b.whl", "u3", SRC)
    assert [f.url for f in ordered([a, b, c])] == ["u2", "u1"]
