"""Environment diff: grouping, version order, numerics warnings, and the three renderers."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import unicodedata
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reprobox.diff import (
    EnvDiff,
    blas_providers,
    compare_system_versions,
    compare_versions,
    diff_environments,
    md_escape,
    render_json,
    render_markdown,
    render_text,
)
from reprobox.model import (
    GPU,
    Environment,
    GitInfo,
    Hardware,
    OSInfo,
    Package,
    PackageSource,
    SystemPackage,
)

from ...conftest import require_module, require_tool
from ...asserts import assert_tables_keep_their_columns
from ...factories import cpu_env, make_exp, with_packages

# --------------------------------------------------------------------------- identical


def test_identical_environments_give_an_empty_diff() -> None:
    a = cpu_env()
    exp = make_exp(a)
    d = diff_environments(a, cpu_env(), exp_a=exp, exp_b=exp)
    assert d.empty and d.same_digest and d.numerics_warnings == () and d.notes == ()
    assert "no differences" in render_text(d)
    assert "No differences." in render_markdown(d)
    assert json.loads(render_json(d))["empty"] is True


def test_hardware_only_change_is_not_empty_but_keeps_the_digest() -> None:
    a = cpu_env()
    b = cpu_env(
        hardware=replace(
            a.hardware,
            cpu_model="Intel Xeon Platinum 8481C",
            cpu_vendor="GenuineIntel",
            cpu_flags=("avx", "avx2", "avx512f", "fma", "sse4_2"),
        )
    )
    d = diff_environments(a, b)
    assert not d.empty and d.same_digest
    assert d.cpu_flags_added == ("avx512f",) and d.cpu_flags_removed == ()
    assert {c.key for c in d.hardware} == {"cpu_model", "cpu_vendor"}
    assert [w.kind for w in d.numerics_warnings] == ["cpu"]
    assert "avx512f" in d.numerics_warnings[0].message
    assert "vendor AuthenticAMD -> GenuineIntel" in d.numerics_warnings[0].message


# --------------------------------------------------------------------------- packages


def test_packages_are_grouped_by_kind_of_change() -> None:
    a = cpu_env()
    b = with_packages(
        a,
        Package("numpy", "2.10.0"),  # 2.10 > 2.4.6: PEP 440, not string order
        Package("scipy", "1.17.0"),
        Package("torch", "2.4.0+cu121"),
        Package(
            "mypkg",
            "0.1.0",
            PackageSource(
                "vcs",
                url="https://github.com/org/mypkg.git",
                vcs="git",
                commit="0123456789abcdef" * 2 + "01234567",
            ),
        ),
        Package(
            "rich",
            "14.0.0",
            PackageSource(
                "archive", url="https://example.org/rich.whl", hash="sha256=" + "ab" * 32
            ),
        ),
        drop=("accelerate",),
    )
    d = diff_environments(a, b)
    p = d.packages
    assert [(c.name, c.b) for c in p.added] == [("torch", "2.4.0+cu121")]
    assert [(c.name, c.a) for c in p.removed] == [("accelerate", "0.30.1")]
    assert [(c.name, c.a, c.b) for c in p.upgraded] == [
        ("numpy", "2.4.6", "2.10.0"),
        ("rich", "13.7.1", "14.0.0"),
    ]
    assert [(c.name, c.a, c.b) for c in p.downgraded] == [("scipy", "1.17.1", "1.17.0")]
    changed = {c.name: c for c in p.source_changed}
    assert set(changed) == {"mypkg", "rich"}  # rich: upgraded *and* from another source
    assert changed["mypkg"].a_source == "editable directory src/mypkg of the repository"
    # the full commit: two commits sharing a prefix must not read the same
    assert changed["mypkg"].b_source == (
        "git+https://github.com/org/mypkg.git@" + "0123456789abcdef" * 2 + "01234567"
    )
    assert changed["rich"].b_source.startswith("archive https://example.org/rich.whl (sha256=")
    assert p.counts() == {
        "added": 1,
        "removed": 1,
        "upgraded": 2,
        "downgraded": 1,
        "source_changed": 2,
    }


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1.9", "1.10", -1),
        ("2.0.0rc1", "2.0.0", -1),
        ("2.0.0", "2.0.0.post1", -1),
        ("1!0.1", "2.0", 1),
        ("2.4.0+cpu", "2.4.0", 1),
        ("1.0", "1.0.0", -1),  # equal under PEP 440, different text: never "no change"
        ("1.0", "1.0", 0),
        ("weird-b", "weird-a", 1),  # not PEP 440: plain string order
        ("2.0", "not.a.version", -1),
    ],
)
def test_compare_versions(a: str, b: str, expected: int) -> None:
    assert compare_versions(a, b) == expected
    assert compare_versions(b, a) == -expected


DPKG_PAIRS = [
    ("0.3.21+ds-4", "0.3.26+ds-1"),
    ("1.0~rc1-1", "1.0-1"),
    ("1:1.0", "2.0"),
    ("2.36-9+deb12u4", "2.36-9+deb12u14"),
    ("1.0a", "1.0+"),
    ("1.0", "1.0-0"),
    ("12.2.0-14", "12.2.0-14+deb12u1"),
    ("1.2.3~~", "1.2.3~"),
    ("1.0.0", "1.00"),
]


@pytest.mark.parametrize(("a", "b"), DPKG_PAIRS)
def test_system_versions_follow_dpkg(a: str, b: str) -> None:
    got = compare_system_versions(a, b)
    assert got == -compare_system_versions(b, a) and got != 0
    if shutil.which("dpkg") is not None:
        dpkg = _dpkg_order(a, b)
        assert got == dpkg or (dpkg == 0 and a != b)  # equal to dpkg, spelled apart: still a change


def _dpkg_order(a: str, b: str) -> int:
    if subprocess.run(["dpkg", "--compare-versions", a, "lt", b], check=False).returncode == 0:
        return -1
    if subprocess.run(["dpkg", "--compare-versions", a, "gt", b], check=False).returncode == 0:
        return 1
    return 0


DEB_VERSION = st.builds(
    lambda epoch, up, rev: f"{epoch}{up}{rev}",
    st.sampled_from(["", "1:", "2:"]),
    st.from_regex(r"[0-9][0-9a-z.+~]{0,6}", fullmatch=True),
    st.sampled_from(["", "-1", "-2", "-1~bpo1", "-1+deb12u1", "-0ubuntu1"]),
)


@settings(max_examples=60, deadline=None)
@given(DEB_VERSION, DEB_VERSION)
def test_system_version_order_matches_real_dpkg(a: str, b: str) -> None:
    # Equal under dpkg but spelled differently ("1.0" / "1.00") is ordered by text: still a change.
    require_tool("dpkg", "dpkg (a Debian-family system)")
    dpkg = _dpkg_order(a, b)
    ours = compare_system_versions(a, b)
    assert ours == dpkg or (dpkg == 0 and a != b)


def test_system_packages_diff() -> None:
    a = cpu_env()
    b = cpu_env(
        system_packages=(
            SystemPackage("libc6", "2.36-9+deb12u4", arch="amd64"),
            SystemPackage("libgomp1", "12.2.0-14+deb12u1", arch="arm64"),
            SystemPackage("libopenblas0-pthread", "0.3.21+ds-4", arch="amd64"),
        )
    )
    d = diff_environments(a, b).system_packages
    assert [(c.name, c.a, c.b) for c in d.downgraded] == [
        ("libc6", "2.36-9+deb12u14", "2.36-9+deb12u4")
    ]
    assert [c.name for c in d.added] == ["libopenblas0-pthread"]
    assert [(c.name, c.a_source, c.b_source) for c in d.source_changed] == [
        ("libgomp1", "dpkg amd64", "dpkg arm64")
    ]


# --------------------------------------------------------------------------- numerics warnings


def test_blas_providers_from_packages_system_packages_and_bundled_libraries() -> None:
    env = cpu_env()
    assert blas_providers(env) == {
        "library libscipy_openblas64_": "",
        "library libscipy_openblas": "",
    }
    mkl = with_packages(env, Package("mkl", "2024.2.0"), Package("intel-openmp", "2024.2.0"))
    mkl = replace(
        mkl,
        system_packages=mkl.system_packages
        + (
            SystemPackage(
                "libopenblas0-pthread",
                "0.3.21+ds-4",
                libraries=("/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",),
            ),
        ),
    )
    found = blas_providers(mkl)
    assert found["Python package mkl"] == "2024.2.0"
    assert found["Python package intel-openmp"] == "2024.2.0"
    assert found["system package libopenblas0-pthread"] == "0.3.21+ds-4"
    assert "library libopenblas" in found
    assert "Python package accelerate" not in found  # Hugging Face accelerate is not BLAS


def test_switching_blas_provider_warns() -> None:
    a = cpu_env()
    b = with_packages(cpu_env(unowned_libraries=()), Package("mkl", "2024.2.0"))
    d = diff_environments(a, b)
    blas = [w for w in d.numerics_warnings if w.kind == "blas"]
    assert len(blas) == 1
    assert "only in A: library libscipy_openblas, library libscipy_openblas64_" in blas[0].message
    assert "only in B: Python package mkl 2024.2.0" in blas[0].message


def test_system_blas_upgrade_warns() -> None:
    lib = ("/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",)
    a = cpu_env(
        system_packages=(SystemPackage("libopenblas0-pthread", "0.3.21+ds-4", libraries=lib),)
    )
    b = cpu_env(
        system_packages=(SystemPackage("libopenblas0-pthread", "0.3.26+ds-1", libraries=lib),)
    )
    d = diff_environments(a, b)
    assert [w.kind for w in d.numerics_warnings] == ["blas"]
    assert "libopenblas0-pthread 0.3.21+ds-4 -> 0.3.26+ds-1" in d.numerics_warnings[0].message


def test_cuda_gpu_libm_and_library_warnings() -> None:
    a = cpu_env(
        hardware=Hardware(
            cpu_flags=("avx2", "fma"),
            cuda_runtime="12.1",
            cudnn="8.9.2",
            gpus=(GPU("NVIDIA A100-SXM4-80GB", 81920, "535.104.05", "12.2", "8.0"),),
        )
    )
    a = with_packages(a, Package("torch", "2.4.0+cu121"), Package("nvidia-cudnn-cu12", "8.9.2.26"))
    b = cpu_env(
        hardware=Hardware(
            cpu_flags=("avx2", "fma"),
            cuda_runtime="12.4",
            cudnn="9.1.0",
            gpus=(GPU("NVIDIA H100 80GB HBM3", 81559, "550.90.07", "12.4", "9.0"),),
        ),
        os=replace(cpu_env().os, glibc="2.39"),
    )
    b = with_packages(
        b,
        Package("torch", "2.6.0+cu124"),
        Package("nvidia-cudnn-cu12", "9.1.0.70"),
        Package("rich", "14.0.0"),
    )
    d = diff_environments(a, b)
    kinds = {w.kind: w.message for w in d.numerics_warnings}
    assert set(kinds) == {"cuda", "gpu", "libm", "library"}
    assert "cuda_runtime 12.1 -> 12.4" in kinds["cuda"] and "cudnn 8.9.2 -> 9.1.0" in kinds["cuda"]
    assert "nvidia-cudnn-cu12 8.9.2.26 -> 9.1.0.70" in kinds["cuda"]
    assert "A100" in kinds["gpu"] and "H100" in kinds["gpu"]
    assert "2.36 -> 2.39" in kinds["libm"]
    assert "torch 2.4.0+cu121 -> 2.6.0+cu124" in kinds["library"]
    assert "rich" not in " ".join(kinds.values())  # not a numerical library


def test_non_numeric_changes_do_not_warn() -> None:
    a = cpu_env()
    b = with_packages(a, Package("rich", "14.0.0"), Package("tqdm", "4.66.4"))
    b = replace(b, os=replace(b.os, kernel="6.8.0"))
    d = diff_environments(a, b)
    assert not d.empty and d.numerics_warnings == ()


def test_numeric_library_from_another_source_warns() -> None:
    a = cpu_env()
    b = with_packages(
        a,
        Package(
            "numpy",
            "2.4.6",
            PackageSource(
                "vcs", url="https://github.com/numpy/numpy.git", vcs="git", commit="c" * 40
            ),
        ),
    )
    d = diff_environments(a, b)
    assert [w.kind for w in d.numerics_warnings] == ["library"]
    assert "numpy rebuilt from another source" in d.numerics_warnings[0].message


# --------------------------------------------------------------------------- env vars and git


def test_env_vars_and_git_need_both_experiments() -> None:
    a = cpu_env()
    ea = replace(make_exp(a), env={"OMP_NUM_THREADS": "4", "PYTHONHASHSEED": "0"})
    eb = replace(
        make_exp(a),
        env={"OMP_NUM_THREADS": "8", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"},
        git=GitInfo(
            commit="b" * 40, branch="feature", dirty=True, patch="patch.diff", patch_sha256="0" * 64
        ),
    )
    d = diff_environments(a, a, exp_a=ea, exp_b=eb)
    assert [(c.key, c.a, c.b) for c in d.env] == [
        ("CUBLAS_WORKSPACE_CONFIG", None, ":4096:8"),
        ("OMP_NUM_THREADS", "4", "8"),
        ("PYTHONHASHSEED", "0", None),
    ]
    assert {c.key for c in d.git} == {"commit", "branch", "dirty", "patch_sha256"}
    assert not d.empty and d.same_digest

    current = diff_environments(a, a, exp_a=ea)
    assert current.empty and current.label_b == "current environment"
    assert current.notes and "B is not a recorded experiment" in current.notes[0]
    assert f"{ea.id} (baseline)" == current.label_a


# --------------------------------------------------------------------------- renderers


def _sample_diff() -> EnvDiff:
    a = cpu_env()
    b = with_packages(a, Package("numpy", "2.10.0"), Package("torch", "2.4.0+cpu"))
    b = replace(
        b,
        interpreter=replace(a.interpreter, version="3.11.9"),
        hardware=replace(a.hardware, cpu_flags=("avx", "avx2", "avx512f", "fma", "sse4_2")),
    )
    return diff_environments(a, b, exp_a=make_exp(a), exp_b=make_exp(b, name="after"))


def test_render_text_golden() -> None:
    d = _sample_diff()
    ea, eb = d.label_a, d.label_b
    expected = "\n".join(
        [
            f"A: {ea}",
            f"B: {eb}",
            f"environment digest: {d.digest_a} -> {d.digest_b}",
            "",
            "may change numerical results:",
            "  ! CPU instruction set changed (only in B: avx512f): BLAS and vectorised code"
            " dispatch to other kernels (FMA, AVX2, AVX-512) and round differently",
            "  ! numerical libraries changed (numpy 2.4.6 -> 2.10.0; torch added (2.4.0+cpu)):"
            " algorithms, defaults and random streams change between versions",
            "",
            "interpreter",
            "  version  3.11.7 -> 3.11.9",
            "packages (1 added, 1 upgraded)",
            "  added       torch 2.4.0+cpu",
            "  upgraded    numpy 2.4.6 -> 2.10.0",
            "hardware",
            "  cpu_flags (only on this side)  (none) -> avx512f",
            "",
        ]
    )
    assert render_text(d) == expected


def test_render_text_color_and_no_color() -> None:
    d = _sample_diff()
    assert "\x1b[" not in render_text(d, color=False)
    colored = render_text(d, color=True)
    assert "\x1b[32m" in colored and "\x1b[0m" in colored
    assert re.sub(r"\x1b\[[0-9;]*m", "", colored) == render_text(d, color=False)


def test_render_text_escapes_terminal_sequences_from_a_capture() -> None:
    a = cpu_env()
    b = with_packages(a, Package("evil\x1b]0;owned\x07\u202e", "1.0"))
    out = render_text(diff_environments(a, b), color=False)
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "evil\\x1b]0;owned\\x07\\u202e 1.0" in out


def test_render_json_is_sorted_indented_and_complete() -> None:
    d = _sample_diff()
    out = render_json(d)
    assert out.endswith("}\n") and out.startswith('{\n  "a": {')
    data = json.loads(out)
    assert data == json.loads(json.dumps(d.to_dict()))
    assert json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n" == out
    assert data["packages"]["upgraded"] == [{"name": "numpy", "a": "2.4.6", "b": "2.10.0"}]
    assert data["hardware"]["cpu_flags_added"] == ["avx512f"]
    assert [w["kind"] for w in data["numerics_warnings"]] == ["cpu", "library"]


def _markdown_html(text: str) -> str:
    markdown_it = require_module("markdown_it")
    return markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(text)


def test_render_markdown_tables_and_warning_block() -> None:
    d = _sample_diff()
    out = render_markdown(d)
    assert out.startswith("### Environment diff\n")
    assert "> [!WARNING]" in out and "#### Packages (1 added, 1 upgraded)" in out
    html = _markdown_html(out)
    assert html.count("<table>") == 3  # interpreter, packages, hardware
    assert "<td><code>2.4.6</code></td>" in html


HOSTILE = [
    '<img src=x onerror="alert(1)">',
    "a|b|c",
    "x</code></td></tr></table><script>alert(1)</script>",
    "@octocat",
    "$\\color{red}{pwned}$",
    "**bold** _it_ `code` [link](https://evil.example) ~~s~~",
    "line\nbreak",
    "\u202eevil",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_markdown_escapes_every_capture_value(value: str) -> None:
    a = cpu_env()
    b = with_packages(a, Package(value, value))
    b = replace(b, os=replace(b.os, pretty_name=value, kernel=value))
    out = render_markdown(diff_environments(a, b))
    html = _markdown_html(out)
    for tag in ("<img", "<script", "<strong>bold", "<em>it", "<a ", "<del>", "<s>", "<code>code"):
        assert tag not in html
    assert_tables_keep_their_columns(out)
    assert "@octocat" not in html  # a zero-width space stops the mention
    assert "\u202e" not in out and "\n" not in md_escape(value)


# ---------------------------------------------------------------------- properties of the renderers

WILD = st.lists(
    st.sampled_from(
        [
            "\x00",
            "\n",
            "\r",
            "\t",
            "\x1b",
            "\x07",
            "\x7f",
            "\x85",
            "\u2028",
            "\u202e",
            "\u200b",
            "\ud800",
            *"|<>&\"'`*_[]()#!~$@\\",
            "a",
            "1",
            "é",
            "<b>",
            "<img src=x>",
            "</td>",
            "[x](y)",
            "**",
            "@org",
            "$x$",
        ]
    )
    | st.characters(codec=None, exclude_categories=()),
    min_size=1,
    max_size=8,
).map("".join)


@st.composite
def wild_env(draw: Any) -> Environment:
    names = draw(st.lists(WILD, max_size=4, unique=True))
    return cpu_env(
        packages=tuple(
            Package(
                n,
                draw(WILD),
                PackageSource(
                    draw(st.sampled_from(["index", "vcs"])), url=draw(WILD), commit=draw(WILD)
                ),
            )
            for n in names
        ),
        system_packages=tuple(
            SystemPackage(draw(WILD), draw(WILD)) for _ in range(draw(st.integers(0, 2)))
        ),
        os=OSInfo(id=draw(WILD), glibc=draw(WILD), pretty_name=draw(WILD)),
        hardware=Hardware(
            cpu_model=draw(WILD),
            cpu_flags=tuple(draw(st.lists(WILD, max_size=2))),
            gpus=tuple(GPU(draw(WILD)) for _ in range(draw(st.integers(0, 1)))),
        ),
    )


@functools.cache
def _allowed_tags() -> frozenset[str]:
    a, b = cpu_env(), with_packages(cpu_env(), Package("numpy", "3.0"))
    b = replace(b, hardware=replace(b.hardware, cpu_flags=("avx512f",)))
    benign = _markdown_html(render_markdown(diff_environments(a, b)))
    return frozenset(re.findall(r"<([a-z0-9]+)", benign)) | {"span", "em"}


@settings(max_examples=80, deadline=None)
@given(wild_env(), wild_env())
def test_renderers_never_crash_and_never_pass_hostile_characters(
    a: Environment, b: Environment
) -> None:
    d = diff_environments(a, b)
    text = render_text(d, color=False)
    assert all(
        ch == "\n" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in text
    )
    md = render_markdown(d)
    assert all(
        ch == "\n" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in md
    )
    data = json.loads(render_json(d))
    render_json(d).encode("utf-8")  # printable on any UTF-8 stream
    assert data["packages"] == json.loads(json.dumps(d.to_dict()["packages"]))
    html = _markdown_html(md)
    assert set(re.findall(r"<([a-z0-9]+)", html)) <= _allowed_tags()
    assert_tables_keep_their_columns(md)
