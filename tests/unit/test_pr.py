"""The pull-request comment: marker, summary, diff, folded package lists, escaping, size limit."""

from __future__ import annotations

import re
from dataclasses import replace
from importlib.resources import files
from pathlib import Path

import pytest

from reprobox.model import GPU, Hardware, Package, SystemPackage
from reprobox.pr import MAX_COMMENT_CHARS, PR_MARKER, pr_markdown
from reprobox.store import Store, StoredExperiment

from .test_diff import cpu_env, with_packages
from .test_model_store import make_exp


def _html(text: str) -> str:
    markdown_it = pytest.importorskip("markdown_it")
    return markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(text)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path)


def _save(store: Store, env: object, **exp_changes: object) -> StoredExperiment:
    exp = replace(make_exp(env), **exp_changes)  # type: ignore[arg-type]
    return store.save(exp, env)  # type: ignore[arg-type]


def test_template_ships_as_package_data() -> None:
    assert "{{ marker }}" in files("reprobox.templates").joinpath("pr.md.j2").read_text()


def test_comment_without_base(store: Store) -> None:
    stored = _save(store, cpu_env(), image="reprobox/abc:1")
    out = pr_markdown(stored, None, repo_root=store.root)
    assert out.splitlines()[0] == PR_MARKER
    assert "No base experiment to compare with" in out
    assert f"| **experiment** | <code>{stored.id}</code> |" in out
    assert "| **python** | cpython 3.11.7 (venv) |" in out
    assert "| **packages** | 5 |" in out and "| **system packages** | 2 |" in out
    assert f"<code>{stored.environment.digest[:19]}</code>" in out
    assert "<code>reprobox/abc:1</code>" in out
    assert "<code>metrics.json: accuracy = 0.93</code>" in out
    assert f"<code>.reprobox/experiments/{stored.id}</code>" in out
    assert "Environment diff" not in out
    html = _html(out)
    assert "<details>" in html and "<summary>Python packages (5)</summary>" in html
    assert "<summary>System packages (2)</summary>" in html


def test_comment_with_base_shows_warnings_and_the_diff(store: Store) -> None:
    base_env = cpu_env()
    base = _save(store, base_env, name="main")
    env = with_packages(base_env, Package("numpy", "2.10.0"))
    env = replace(env, hardware=Hardware(cpu_flags=("avx2", "fma"), cuda_runtime="12.4", cudnn="9.1.0",
                                         gpus=(GPU("NVIDIA H100 80GB HBM3", compute_capability="9.0"),) * 2))
    head = _save(store, env, name="pr")
    out = pr_markdown(head, base, repo_root=store.root)
    assert f"The environment differs from the base <code>{base.id}</code> (main)." in out
    warn = out.index("> [!WARNING]")
    assert warn < out.index("| | this pull request | base |") < out.index("### Environment diff")
    assert "numpy 2.4.6 -&gt; 2.10.0" in out
    assert "2× NVIDIA H100 80GB HBM3 (compute 9.0); CUDA 12.4, cuDNN 9.1.0" in out
    assert "#### Packages (1 upgraded)" in out
    assert f"<code>reprobox diff {base.id} {head.id}</code>" in out
    html = _html(out)
    assert html.count("<table>") >= 4  # summary, packages diff, hardware, two package lists


def test_identical_environment_says_so(store: Store) -> None:
    env = cpu_env()
    base = _save(store, env, name="main")
    head = _save(store, env, name="pr")
    out = pr_markdown(head, base)
    assert f"The environment is identical to the base <code>{base.id}</code> (main)." in out
    assert "Environment diff" not in out and "[!WARNING]" not in out


def test_hostile_capture_values_are_inert(store: Store) -> None:
    evil = '<img src=x onerror=alert(1)>|@octocat $x$ **b**'
    env = with_packages(cpu_env(), Package(evil, evil))
    env = replace(env, system_packages=env.system_packages + (SystemPackage(evil, evil, manager=evil),),
                  os=replace(env.os, pretty_name=evil),
                  hardware=Hardware(gpus=(GPU(evil + "\n| injected | row |"),)))
    head = StoredExperiment(
        replace(make_exp(env), name=evil, command=evil, metrics={evil: {evil: evil}}), env,
        store.experiments_dir / "0123456789ab")
    out = pr_markdown(head, StoredExperiment(make_exp(cpu_env()), cpu_env(),
                                             store.experiments_dir / "ba9876543210"))
    html = _html(out)
    assert "<img" not in html and "<strong>b</strong>" not in html and "@octocat" not in html
    assert "<td>injected</td>" not in html and "\\x0a" in out  # the newline is shown, not obeyed
    for table in re.findall(r"<table>(.*?)</table>", html, re.DOTALL):
        header_cells = len(re.findall(r"<th[ >]", table.split("</thead>")[0]))
        for row in re.findall(r"<tr>(.*?)</tr>", table.split("</thead>")[1], re.DOTALL):
            assert len(re.findall(r"<td[ >]", row)) == header_cells


def test_huge_environment_stays_under_the_comment_limit(store: Store) -> None:
    many = tuple(Package(f"package-number-{i:05d}", f"1.{i}.0") for i in range(4000))
    base_env = cpu_env()
    env = replace(base_env, packages=many,
                  system_packages=tuple(SystemPackage(f"libexample{i}", "1.0-1") for i in range(1500)))
    base = _save(store, base_env)
    head = _save(store, env, name="big")
    out = pr_markdown(head, base)
    assert len(out) <= MAX_COMMENT_CHARS
    assert out.splitlines()[0] == PR_MARKER
    assert "too long for one comment" in out and "The list left out to fit in one comment" in out
    small = pr_markdown(_save(store, with_packages(base_env, *many[:50]), name="small"), base)
    assert "left out" not in small and "package-number-00049" in small
