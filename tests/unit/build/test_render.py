"""Dockerfile rendering: golden files, layer order, quoting, and refusal of hostile captures.

Golden files live in ``tests/golden/``; after an intended template change, regenerate them with
``REPROBOX_UPDATE_GOLDEN=1 pytest tests/unit/build/test_render.py`` and review the diff.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import pytest

from reprobox.build import render_dockerfile
from reprobox.base import render_base_dockerfile
from reprobox.engine import step_titles
from reprobox.build.render import RenderOptions, plan_image, render_plan
from reprobox.errors import UsageError, ValidationError
from reprobox.model import Package, PackageSource, SystemPackage

from ...asserts import refuses
from ...factories import (
    GOLDEN,
    datascience,
    gpu,
    mixed_sources,
    outside_folder,
    no_packages,
    small,
    ubuntu,
    with_env,
)

ROOT = Path(__file__).resolve().parents[3]
BOOKWORM = "python:3.11.7-slim-bookworm"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("REPROBOX_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"missing golden file {path}: set REPROBOX_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden file"


CASES = {
    "small-buildkit-uv.Dockerfile": (small, lambda e: e, BOOKWORM, RenderOptions()),
    "small-classic-pip.Dockerfile": (
        small,
        lambda e: e,
        BOOKWORM,
        RenderOptions(buildkit=False, installer="pip"),
    ),
    "datascience-buildkit-uv.Dockerfile": (datascience, lambda e: e, BOOKWORM, RenderOptions()),
    "mixed-sources-buildkit-pip.Dockerfile": (
        small,
        mixed_sources,
        BOOKWORM,
        RenderOptions(installer="pip"),
    ),
    "ubuntu-host-unpinned.Dockerfile": (small, ubuntu, BOOKWORM, RenderOptions()),
    "gpu-cuda-base.Dockerfile": (
        small,
        gpu,
        "nvidia/cuda:12.1.1-cudnn8-runtime-ubuntu22.04",
        RenderOptions(),
    ),
    "no-packages.Dockerfile": (small, no_packages, BOOKWORM, RenderOptions()),
    "compiled-bytecode.Dockerfile": (
        datascience,
        lambda e: e,
        BOOKWORM,
        RenderOptions(compile_bytecode=True, cache_id="team-ci"),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    load, change, base, options = CASES[name]
    exp, env = load()
    env = change(env)
    exp = with_env(exp, env) if env.digest != exp.environment_digest else exp
    check_golden(name, render_dockerfile(exp, env, base_image=base, options=options))


def test_dockerfile_base_at_the_top_is_the_template_rendered() -> None:
    expected = render_base_dockerfile(
        "3.11.7", "bookworm", "reprobox/rootfs:bookworm-minbase", "pyenv build"
    )
    assert (ROOT / "Dockerfile.base").read_text() == expected


def test_each_locked_layer_is_finished_with_or_without_bytecode() -> None:
    exp, env = datascience()
    finish = "python3.11 -I /tmp/reprobox/tools/finish_layer.py /tmp/reprobox/lock/"
    with_pyc = render_dockerfile(exp, env, base_image=BOOKWORM)
    without = render_dockerfile(
        exp, env, base_image=BOOKWORM, options=RenderOptions(compile_bytecode=False)
    )
    for text in (with_pyc, without):
        lines = [line.strip() for line in text.splitlines() if finish in line]
        assert [line.split("/lock/")[1].split()[0] for line in lines] == [
            "compiled.txt",
            "pure.txt",
        ]
    assert "--no-bytecode" not in with_pyc
    assert [
        line.strip().endswith("--no-bytecode") for line in without.splitlines() if finish in line
    ] == [True, True]


def test_rendering_is_pure_and_deterministic() -> None:
    exp, env = datascience()
    first = render_dockerfile(exp, env, base_image=BOOKWORM)
    assert first == render_dockerfile(exp, env, base_image=BOOKWORM)
    # Nothing from this machine leaks in: no user paths, no index URLs, no syntax directive
    # (a `# syntax=` line would make BuildKit pull a frontend image).
    assert "/root/.pyenv" not in first and "pypi" not in first and "/opt/" not in first
    assert not re.search(r"(?im)^#\s*syntax\s*=", first)


def test_layer_order_base_system_lock_code() -> None:
    exp, env = small()
    env = mixed_sources(env)
    text = render_dockerfile(with_env(exp, env), env, base_image=BOOKWORM)
    positions = [
        text.index(marker)
        for marker in (
            "FROM python:3.11.7-slim-bookworm",
            "dpkg-query",
            "/lock/all.txt",
            "pyjokes @ file:///tmp/reprobox/wheels/direct/pyjokes-0.6.0-3b3b7f6a8f6e.tar.gz",
            "--mount=type=bind,source=meta,target=/workspace,rw",
            "--editable /workspace",
            "prune.py",
            'COPY ["src/", "/workspace/"]',
            "LABEL reprobox.experiment=",
        )
    ]
    assert positions == sorted(positions)


def test_each_install_step_mounts_only_its_own_wheels() -> None:
    """BuildKit keys a step on what it mounts: each step mounts its own folder of wheels/, so a
    new pure-Python package leaves the compiled layer cached; the code is copied after the
    last install step (a change to the code alone rebuilds no install)."""
    exp, env = datascience()
    text = render_dockerfile(exp, env, base_image=BOOKWORM)
    steps = text.split("\nRUN ")[1:]
    compiled = next(s for s in steps if "lock/compiled.txt" in s)
    pure = next(s for s in steps if "lock/pure.txt" in s)
    local = next(s for s in steps if "--editable /workspace" in s)
    assert (
        "source=wheels/lock-compiled," in compiled
        and "--find-links /tmp/reprobox/wheels/lock-compiled " in compiled
    )
    assert "source=wheels/lock-pure," in pure and "lock-compiled" not in pure
    assert "source=wheels/local," in local and "source=meta,target=/workspace,rw" in local
    assert not any("source=wheels," in s for s in steps)
    assert text.index('COPY ["src/", "/workspace/"]') > text.index("--editable /workspace")


def test_two_lock_layers_compiled_first() -> None:
    exp, env = datascience()
    plan = plan_image(exp, env, base_image=BOOKWORM)
    files = [g.file for g in plan.lock_groups]
    assert files == ["compiled.txt", "pure.txt"]
    compiled, pure = plan.lock_groups
    assert "numpy" in compiled.names and "scipy" in compiled.names
    assert "tqdm" in pure.names and "requests" in pure.names
    assert set(compiled.names) | set(pure.names) == {
        p.name for p in env.packages if p.source.kind == "index"
    }


def test_system_packages_pinned_only_on_the_same_release() -> None:
    exp, env = small()
    pinned = plan_image(exp, env, base_image=BOOKWORM).system
    assert pinned.pinned and "libssl3=3.0.19-1~deb12u2" in pinned.packages
    other = plan_image(exp, env, base_image="python:3.11.7-slim-trixie")
    assert not other.system.pinned and "libssl3" in other.system.packages
    assert any("not pinned" in w for w in other.warnings)
    text = render_dockerfile(exp, env, base_image="python:3.11.7-slim-trixie")
    assert "echo 'reprobox: warning: system packages are not pinned" in text
    unknown = plan_image(exp, env, base_image="registry.example/team/base:1")
    assert not unknown.system.pinned


def test_local_packages_in_the_repository_are_copied_from_the_commit() -> None:
    exp, env = small()
    env = mixed_sources(env)
    plan = plan_image(with_env(exp, env), env, base_image=BOOKWORM)
    assert [p.name for p in plan.local] == ["helpers", "mypkg"]
    # The root package covers libs/helpers: one COPY of the whole tree.
    assert [(d.src, d.dest) for d in plan.copy_dirs] == [("", "/workspace/")]


def test_a_folder_or_file_archive_outside_the_repository_is_refused_naming_the_package() -> None:
    """A capture's path outside the repository is never read, so never copied into a build."""
    exp, env = small()
    outside = outside_folder(env)
    with refuses(UsageError, names=["package outside 1.0", "/home/someone/outside"]) as exc:
        plan_image(with_env(exp, outside), outside, base_image=BOOKWORM)
    assert exc.value.exit_code == 2
    key = replace(
        env,
        packages=env.packages
        + (
            Package(
                "sshkey", "1.0", PackageSource("archive", url="file:///root/.ssh/id_rsa.tar.gz")
            ),
        ),
    )
    with refuses(UsageError, names=["package sshkey", "file:///root/.ssh/id_rsa"]) as exc:
        plan_image(with_env(exp, key), key, base_image=BOOKWORM)
    assert exc.value.exit_code == 2
    inside = replace(
        env,
        packages=env.packages
        + (
            Package(
                "vendored",
                "2.0",
                PackageSource(
                    "archive",
                    url="file:///home/me/proj/vendor/vendored-2.0.tar.gz",
                    path="vendor/vendored-2.0.tar.gz",
                    hash="sha256=" + "9" * 64,
                ),
            ),
        ),
    )
    plan = plan_image(with_env(exp, inside), inside, base_image=BOOKWORM)
    assert [(d.name, d.repo_path) for d in plan.direct_sources] == [
        ("vendored", "vendor/vendored-2.0.tar.gz")
    ]
    assert plan.direct == ("vendored @ file:///tmp/reprobox/wheels/direct/vendored-2.0.tar.gz",)


def test_no_python_install_step_sees_a_secret_or_an_index() -> None:
    exp, env = small()
    env = mixed_sources(env)
    for opts in (RenderOptions(), RenderOptions(installer="pip"), RenderOptions(network_none=True)):
        text = render_dockerfile(with_env(exp, env), env, base_image=BOOKWORM, options=opts)
        steps = text.split("\nRUN ")[1:]
        installs = [s for s in steps if " install " in s and "apt-get" not in s]
        assert len(installs) == 3  # the lock, the VCS/archive packages, the project's own
        for step in installs:
            assert "secret" not in step and "/run/secrets" not in step
            assert "--no-index" in step
            assert "--index-url" not in step and "git+" not in step and "https://" not in step
            assert ("--network=none" in step) == opts.network_none
        apt = [s for s in steps if "apt-get" in s]
        assert apt and all("--network=none" not in s for s in apt)


def test_a_package_built_from_source_on_the_host_is_flagged() -> None:
    exp, env = small()
    built = replace(
        env,
        packages=env.packages
        + (Package("fastcore-ext", "0.1.0", wheel_tags=("cp311-cp311-linux_x86_64",)),),
    )
    plan = plan_image(with_env(exp, built), built, base_image=BOOKWORM)
    assert any(w.startswith("fastcore-ext 0.1.0 was built from source") for w in plan.warnings)
    assert not any(
        "built from source" in w for w in plan_image(exp, env, base_image=BOOKWORM).warnings
    )


def test_labels_carry_provenance_without_credentials() -> None:
    exp, env = small()
    exp = replace(exp, git=replace(exp.git, remote="https://github.com/team/project.git"))
    text = render_dockerfile(exp, env, base_image=BOOKWORM)
    for label in (
        "reprobox.experiment",
        "reprobox.env-digest",
        "org.opencontainers.image.revision",
        "org.opencontainers.image.source",
    ):
        assert f"{label}=" in text
    assert '"https://github.com/team/project.git"' in text


def test_install_python_needs_uv_on_a_cuda_base() -> None:
    exp, env = small()
    env = gpu(env)
    with refuses(UsageError, names=["needs uv", "nvidia/cuda:12.1.1-runtime-ubuntu22.04"]):
        plan_image(
            with_env(exp, env),
            env,
            base_image="nvidia/cuda:12.1.1-runtime-ubuntu22.04",
            options=RenderOptions(installer="pip"),
        )


def test_step_titles_name_each_build_step() -> None:
    exp, env = datascience()
    titles = step_titles(render_dockerfile(exp, env, base_image=BOOKWORM))
    assert titles[0] == f"FROM {BOOKWORM}"
    assert "System packages that own the native libraries the Python packages load" in titles
    assert "Locked Python packages, layer 1 of 2" in titles
    assert "Locked Python packages, layer 2 of 2" in titles
    assert titles[-1] == "WORKDIR /workspace"


# --------------------------------------------------------------------------- hostile captures


def _with_package(env, pkg):  # type: ignore[no-untyped-def]
    return replace(env, packages=env.packages + (pkg,))


HOSTILE = {
    "package name with a newline": lambda env: _with_package(
        env, Package("evil\nRUN curl x|sh", "1.0")
    ),
    "version with a command substitution": lambda env: _with_package(
        env, Package("evil", "1.0$(id)")
    ),
    "system package with a semicolon": lambda env: replace(
        env, system_packages=env.system_packages + (SystemPackage("foo;rm", "1.0"),)
    ),
    "system version with a space": lambda env: replace(
        env, system_packages=(SystemPackage("libfoo1", "1.0 bar"),)
    ),
    "directory escaping the repository": lambda env: _with_package(
        env,
        Package(
            "evil", "1.0", PackageSource("directory", path="../../etc", editable=True, in_repo=True)
        ),
    ),
    "vcs URL with a quote": lambda env: _with_package(
        env,
        Package(
            "evil",
            "1.0",
            PackageSource("vcs", vcs="git", commit="a" * 40, url="https://x.example/r'$(id)"),
        ),
    ),
    "archive hash that is not hex": lambda env: _with_package(
        env,
        Package(
            "evil",
            "1.0",
            PackageSource("archive", url="https://x.example/e.whl", hash="sha256=`id`"),
        ),
    ),
    "interpreter version with shell": lambda env: replace(
        env, interpreter=replace(env.interpreter, version="3.11.7;id")
    ),
    "codename with a slash": lambda env: replace(env, os=replace(env.os, codename="bookworm/x")),
}


#: The field each hostile case must be refused by (packages sort by name: "evil" is the second).
HOSTILE_FIELD = {
    "archive hash that is not hex": "packages[evil].source.hash",
    "codename with a slash": "os.codename",
    "directory escaping the repository": "packages[evil].source.path",
    "interpreter version with shell": "interpreter version",
    "package name with a newline": "packages[evil\nRUN curl x|sh].name",
    "system package with a semicolon": "system_packages[0].name",
    "system version with a space": "system_packages[0].version",
    "vcs URL with a quote": "packages[evil].source.url",
    "version with a command substitution": "packages[evil].version",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_values_are_refused_naming_the_field(case: str) -> None:
    exp, env = small()
    bad = HOSTILE[case](env)
    with refuses(ValidationError, field=HOSTILE_FIELD[case]):
        render_dockerfile(with_env(exp, bad), bad, base_image=BOOKWORM)


def test_hostile_experiment_name_and_base_image_are_refused() -> None:
    exp, env = small()
    with refuses(ValidationError, field="name"):
        render_dockerfile(replace(exp, name='x" && curl evil'), env, base_image=BOOKWORM)
    with refuses(ValidationError, field="base image", names="control character"):
        render_dockerfile(exp, env, base_image="python:3.11 \nRUN id")
    with refuses(ValidationError, field="base image", names="'python:$(id)'"):
        render_dockerfile(exp, env, base_image="python:$(id)")


def test_unknown_installer_and_cache_id_are_usage_errors() -> None:
    exp, env = small()
    with refuses(UsageError, names="installer 'conda'"):
        render_dockerfile(exp, env, base_image=BOOKWORM, options=RenderOptions(installer="conda"))
    with refuses(UsageError, names="cache id 'a b'"):
        render_dockerfile(exp, env, base_image=BOOKWORM, options=RenderOptions(cache_id="a b"))


def test_the_two_parts_split_network_steps_from_python_steps() -> None:
    """For builders without `RUN --network`: the system part (network, proxies and CA only) and
    the Python part (built with the network off) together hold every step of the whole file."""
    exp, env = small()
    env = mixed_sources(env)
    plan = plan_image(with_env(exp, env), env, base_image=BOOKWORM)
    assert plan.has_system_part
    system = render_plan(plan, part="system")
    python = render_plan(plan, part="python", system_image="reprobox/system:abc")
    assert system.count("\nFROM ") == 1 and f"FROM {BOOKWORM}" in system
    assert "apt-get" in system and "pip install" not in system
    assert "\nLABEL " not in system and "/tmp/reprobox/wheels" not in system
    assert "FROM reprobox/system:abc" in python and "apt-get" not in python
    assert "type=secret" not in python and "LABEL reprobox.experiment=" in python
    whole = render_plan(plan)
    for step in (s for s in python.split("\nRUN ")[1:]):
        assert step in whole
    with pytest.raises(ValueError, match="'python'"):
        render_plan(plan, part="python")
