"""``reprobox diff`` and ``reprobox verify`` are one comparison: the same fields, the same words.

Each test changes one thing between two environments and checks that both commands see it (or,
for what a rebuild may legitimately do otherwise, that only diff does, by a named list), so that
a field added to one and not the other fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields, replace
from typing import Any

import pytest

from reprobox.capture.conda import channel_url
from reprobox.diff import (
    channel_display,
    describe_source,
    diff_environments,
    render_json,
    render_markdown,
    render_text,
)
from reprobox.diff.compute import (
    CONDA_FIELDS,
    CONDA_NOT_COMPARED,
    INTERPRETER_BUILD_FIELDS,
    INTERPRETER_FIELDS,
    INTERPRETER_NOT_COMPARED,
    INTERPRETER_REBUILT,
    conda_field_changes,
)
from reprobox.model import (
    CondaEnvironment,
    CondaPackage,
    Environment,
    InstalledChange,
    Interpreter,
    Package,
    PackageSource,
    SystemPackage,
)
from reprobox.verify import Observed, compare_environments

INTERP = Interpreter(
    "cpython",
    "3.11.7",
    abi="cp311",
    soabi="cpython-311-x86_64-linux-gnu",
    platform="linux-x86_64",
    build="main, Dec 19 2023",
    compiler="GCC 12.2.0",
    kind="venv",
)

CONDA_PKG = CondaPackage(
    "numpy",
    "1.26.4",
    "py311h64a7726_0",
    build_number=0,
    channel="https://conda.anaconda.org/conda-forge",
    subdir="linux-64",
    url="https://conda.anaconda.org/conda-forge/linux-64/numpy-1.26.4-py311h64a7726_0.conda",
    md5="a" * 32,
    sha256="b" * 64,
    files=812,
    files_sha256="c" * 64,
)


def _observed_from(env: Environment) -> Observed:
    """What the probe would see in a perfect rebuild of ``env``."""
    return Observed(
        interpreter=env.interpreter,
        packages=env.packages,
        system_packages={s.name: s.version for s in env.system_packages},
        conda=env.conda,
        installed_changes=env.installed_changes,
    )


def _other_value(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    return f"{value}-other"


# --------------------------------------------------------------------------- interpreter


def test_every_interpreter_field_is_compared_or_named_as_not_compared():
    names = {f.name for f in fields(Interpreter)}
    assert names == set(INTERPRETER_FIELDS) | set(INTERPRETER_NOT_COMPARED)
    assert not set(INTERPRETER_FIELDS) & set(INTERPRETER_NOT_COMPARED)
    assert set(INTERPRETER_REBUILT) | set(INTERPRETER_BUILD_FIELDS) == set(INTERPRETER_FIELDS)
    # what defines the environment (its digest) is compared by both, platform excepted: a
    # macOS capture is rebuilt in a Linux image
    identity = set(Interpreter("cpython", "3.11.7").identity())
    assert identity - {"platform"} <= set(INTERPRETER_REBUILT)


@pytest.mark.parametrize("name", INTERPRETER_FIELDS)
def test_an_interpreter_change_is_seen_by_diff_and_by_verify_when_a_rebuild_must_keep_it(
    name: str,
) -> None:
    env = Environment(interpreter=INTERP)
    changed = replace(INTERP, **{name: _other_value(getattr(INTERP, name))})
    d = diff_environments(env, replace(env, interpreter=changed))
    assert [c.key for c in d.interpreter] == [name]
    found = compare_environments(env, replace(_observed_from(env), interpreter=changed))
    if name in INTERPRETER_REBUILT:
        assert [(x.kind, x.subject) for x in found] == [("interpreter", name)]
        assert found[0].expected == str(getattr(INTERP, name))
    else:
        assert found == ()


# --------------------------------------------------------------------------- Python packages

SOURCES = [
    (
        PackageSource("index"),
        PackageSource("vcs", vcs="git", url="https://h/r.git", commit="1" * 40),
    ),
    (
        PackageSource("vcs", vcs="git", url="https://h/r.git", commit="1" * 12 + "2" * 28),
        PackageSource("vcs", vcs="git", url="https://h/r.git", commit="1" * 12 + "3" * 28),
    ),
    (
        PackageSource("vcs", vcs="git", url="https://h/r.git", commit="1" * 40, subdirectory="a"),
        PackageSource("vcs", vcs="git", url="https://h/r.git", commit="1" * 40, subdirectory="b"),
    ),
    (
        PackageSource("directory", path="src/p", editable=True, in_repo=True),
        PackageSource("directory", path="src/p", editable=False, in_repo=True),
    ),
    (
        PackageSource("directory", path="src/p", in_repo=True),
        PackageSource("directory", path="lib/p", in_repo=True),
    ),
    (
        PackageSource("archive", url="https://h/p.whl", hash="sha256=" + "a" * 64),
        PackageSource("archive", url="https://h/p.whl", hash="sha256=" + "b" * 64),
    ),
]


@pytest.mark.parametrize("before,after", SOURCES)
def test_a_source_change_reads_the_same_in_diff_and_verify(
    before: PackageSource, after: PackageSource
) -> None:
    env = Environment(interpreter=INTERP, packages=(Package("p", "1.0", before),))
    rebuilt = (Package("p", "1.0", after),)
    d = diff_environments(env, replace(env, packages=rebuilt))
    [change] = d.packages.source_changed
    found = compare_environments(env, replace(_observed_from(env), packages=rebuilt))
    assert [(x.subject, x.expected, x.observed) for x in found] == [
        ("p", change.a_source, change.b_source)
    ]
    # the two sides never read the same: the full commit, every identity field shown
    assert change.a_source != change.b_source
    assert "folder" not in found[0].message


def test_package_version_presence_agree():
    env = Environment(
        interpreter=INTERP, packages=(Package("a", "1.0"), Package("b", "2.0"), Package("c", "3.0"))
    )
    rebuilt = (Package("a", "1.1"), Package("c", "3.0"), Package("d", "4.0"))
    d = diff_environments(env, replace(env, packages=rebuilt))
    found = compare_environments(env, replace(_observed_from(env), packages=rebuilt))
    assert {c.name for c in d.packages.upgraded} == {"a"}
    assert {c.name for c in d.packages.removed} == {"b"}
    assert {c.name for c in d.packages.added} == {"d"}
    assert [(x.subject, x.expected, x.observed) for x in found] == [
        ("a", "1.0", "1.1"),
        ("b", "2.0", None),
        ("d", None, "4.0"),
    ]


def test_describe_source_words():
    vcs = PackageSource(
        "vcs", vcs="git", url="https://h/r.git", commit="0123456789" * 4, subdirectory="py"
    )
    assert describe_source(vcs) == "git+https://h/r.git@" + "0123456789" * 4 + "#subdirectory=py"
    assert describe_source(
        PackageSource("directory", path="src/p", editable=True, in_repo=True)
    ) == ("editable directory src/p of the repository")
    assert describe_source(PackageSource("directory", path="/opt/p")) == "directory /opt/p"


# --------------------------------------------------------------------------- system packages


def test_system_package_changes_agree():
    env = Environment(
        interpreter=INTERP,
        system_packages=(
            SystemPackage("libc6", "2.36-9+deb12u4"),
            SystemPackage("libgomp1", "12.2.0-14"),
            SystemPackage("zlib1g", "1:1.2.13.dfsg-1"),
        ),
    )
    rebuilt = {"libc6": "2.36-9+deb12u7", "zlib1g": "1:1.2.13.dfsg-1", "bash": "5.2"}
    other = replace(env, system_packages=tuple(SystemPackage(n, v) for n, v in rebuilt.items()))
    d = diff_environments(env, other)
    found = compare_environments(env, replace(_observed_from(env), system_packages=rebuilt))
    assert [c.name for c in (*d.system_packages.removed, *d.system_packages.upgraded)] == [
        "libgomp1",
        "libc6",
    ]
    assert sorted(x.subject for x in found) == ["libc6", "libgomp1"]
    # more packages in the rebuilt image than the capture depended on: diff lists them, verify
    # does not hold them against the rebuild
    assert [c.name for c in d.system_packages.added] == ["bash"]


# --------------------------------------------------------------------------- conda


def test_every_conda_field_is_compared_or_named_as_not_compared():
    assert {f.name for f in fields(CondaPackage)} == set(CONDA_FIELDS) | set(CONDA_NOT_COMPARED)
    identity = set(CONDA_PKG.identity()) - {"name"}
    assert identity <= set(CONDA_FIELDS)


@pytest.mark.parametrize("name", CONDA_FIELDS)
def test_a_conda_field_change_is_seen_by_diff_and_by_verify(name: str) -> None:
    env = Environment(interpreter=INTERP, conda=CondaEnvironment(packages=(CONDA_PKG,)))
    other_pkg = replace(CONDA_PKG, **{name: _other_value(getattr(CONDA_PKG, name))})
    other = CondaEnvironment(packages=(other_pkg,))
    d = diff_environments(env, replace(env, conda=other))
    group = "upgraded" if name == "version" else "source_changed"
    assert [c.name for c in getattr(d.conda_packages, group)] == ["numpy"]
    if group == "source_changed":
        [change] = d.conda_packages.source_changed
        assert change.a_source != change.b_source
    found = compare_environments(env, replace(_observed_from(env), conda=other))
    assert [(x.kind, x.subject) for x in found] == [("conda-package", "numpy")]
    what = "its files" if name in ("files", "files_sha256") else name
    assert f": {what} differ" in found[0].message


def test_a_conda_field_the_capture_lacks_is_not_held_against_the_rebuild():
    older = replace(CONDA_PKG, sha256=None)
    assert conda_field_changes(older, CONDA_PKG, a_is_reference=True) == ()
    assert [c.key for c in conda_field_changes(older, CONDA_PKG)] == ["sha256"]


def test_channel_display_names_the_channels_capture_spells_out():
    for name in ("conda-forge", "pkgs/main", "nvidia"):
        assert channel_display(channel_url(name)) == name
    assert channel_display("https://example.org/chan") == "https://example.org/chan"
    assert channel_display(None) == "(local build)"


# --------------------------------------------------------------------------- installed files

CHANGE = InstalledChange("demo", "demo/__init__.py", "modified", 11, "a" * 64)


@pytest.mark.parametrize(
    "before,after",
    [
        ((CHANGE,), ()),
        ((), (CHANGE,)),
        ((CHANGE,), (replace(CHANGE, sha256="b" * 64),)),
        ((CHANGE,), (replace(CHANGE, change="missing", sha256=None),)),
    ],
)
def test_installed_file_changes_agree(before: tuple, after: tuple) -> None:
    env = Environment(
        interpreter=INTERP, packages=(Package("demo", "1.0"),), installed_changes=before
    )
    d = diff_environments(env, replace(env, installed_changes=after))
    found = compare_environments(env, replace(_observed_from(env), installed_changes=after))
    assert [(f"{c.package}:{c.path}", c.a, c.b) for c in d.installed_files] == [
        (x.subject, x.expected, x.observed) for x in found
    ]
    assert len(found) == 1


def test_diff_renders_installed_files_only_when_they_differ():
    env = Environment(
        interpreter=INTERP, packages=(Package("demo", "1.0"),), installed_changes=(CHANGE,)
    )
    same = diff_environments(env, env)
    assert same.empty and "installed_files" not in json.loads(render_json(same))
    d = diff_environments(env, replace(env, installed_changes=()))
    assert not d.empty and d.digest_a != d.digest_b
    data = json.loads(render_json(d))
    assert data["installed_files"] == [
        {
            "package": "demo",
            "path": "demo/__init__.py",
            "a": "modified after install (sha256 aaaaaaaaaaaa)",
            "b": "as installed",
        }
    ]
    text = render_text(d)
    assert "installed files" in text
    assert (
        "demo: demo/__init__.py  modified after install (sha256 aaaaaaaaaaaa) -> as installed"
        in text
    )
    assert "### Installed files" in render_markdown(d, heading_level=2)


# --------------------------------------------------------------------------- layering


def test_diff_imports_nothing_above_the_records():
    """diff/ sits on the records: importing it loads no capture, lock, build or run code."""
    code = (
        "import sys, reprobox.diff; "
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('reprobox'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    allowed = (
        "reprobox.diff",
        "reprobox.model",
        "reprobox.errors",
        "reprobox.termsafe",
        "reprobox.safefs",
        "reprobox.redact",
        "reprobox.proc",
        "reprobox.progress",
    )
    above = [
        m
        for m in loaded
        if m != "reprobox" and not any(m == a or m.startswith(a + ".") for a in allowed)
    ]
    assert above == []
    assert "reprobox.diff.compute" in loaded


def test_a_hostile_installed_file_path_is_escaped_in_every_rendering():
    evil = InstalledChange("demo", "demo/\x1b[31mx\n| <b>@org", "added", 3, "d" * 64)
    env = Environment(interpreter=INTERP, packages=(Package("demo", "1.0"),))
    d = diff_environments(env, replace(env, installed_changes=(evil,)))
    text = render_text(d)
    assert "\x1b" not in text and "demo/\\x1b[31mx\\x0a| <b>@org" in text
    markdown = render_markdown(d)
    assert "<b>" not in markdown and "\x1b" not in markdown
    assert "\\| &lt;b&gt;" in markdown
    assert "\x1b" not in render_json(d)
