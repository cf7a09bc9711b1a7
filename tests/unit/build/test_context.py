"""Build context assembly and index forwarding, with real git, real files and a real shell."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path


from reprobox.build.context import (
    ContextInputs,
    SecretFiles,
    assemble_context,
    context_dir,
    export_code,
    forward_index_config,
    lock_parts,
    secrets_env_text,
)
from reprobox.lock.uv import find_uv
from reprobox.build.render import RenderOptions, plan_image
from reprobox.errors import LockError, UsageError
from reprobox.lock import read_index_config
from reprobox.lock.wheelhouse import Artifact
from reprobox.model import Package, PackageSource
from reprobox.store import Store

from ...asserts import refuses
from ...conftest import git
from ...factories import FIXTURES, small, with_env

LOCK = (FIXTURES / "requirements.lock").read_text()


def _pins():  # type: ignore[no-untyped-def]
    from reprobox.lock.checks import check_requirements_lock

    return check_requirements_lock(LOCK, small()[1])


def _config(tmp_path: Path, **env: str):  # type: ignore[no-untyped-def]
    environ = {"PIP_CONFIG_FILE": os.devnull, "HOME": str(tmp_path), **env}
    return read_index_config(environ=environ, venv=tmp_path)


# --------------------------------------------------------------------------- the lock


def test_lock_parts_put_each_checked_pin_with_its_hashes_in_its_layer() -> None:
    exp, env = small()
    plan = plan_image(exp, env, base_image="python:3.11.7-slim-bookworm")
    parts, warnings = lock_parts(_pins(), plan.lock_groups)
    assert list(parts) == ["all.txt"] and warnings == []
    text = parts["all.txt"]
    assert "attrs==23.2.0 --hash=sha256:935dc3b5" in text
    assert text.count("--hash=sha256:") == LOCK.count("--hash=sha256:")
    assert "mypkg" not in text  # the editable package is not an index requirement
    assert "--index-url" not in text and "--find-links" not in text


def test_lock_parts_split_by_layer_and_name_what_is_missing() -> None:
    from reprobox.build.render import LockGroup
    from reprobox.lock.checks import Pin

    pins = (Pin("numpy", "1.26.4", ("a" * 64,), 1), Pin("tqdm", "4.66.1", ("b" * 64, "c" * 64), 3))
    groups = (
        LockGroup("compiled.txt", "", ("numpy",)),
        LockGroup("pure.txt", "", ("tqdm", "gone")),
    )
    parts, warnings = lock_parts(pins, groups)
    assert "numpy==1.26.4" in parts["compiled.txt"] and "tqdm" not in parts["compiled.txt"]
    assert parts["pure.txt"].count("--hash=") == 2
    assert any("gone is not in requirements.lock" in w for w in warnings)


# --------------------------------------------------------------------------- forwarding


def test_no_index_configuration_reaches_the_build(tmp_path: Path) -> None:
    """Only proxies and the CA bundle are forwarded (apt, the CPython download): never an index
    URL or its credentials, which no build step needs any more."""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    cfg = _config(
        tmp_path,
        PIP_INDEX_URL="https://user:s3cret@private.example/simple",
        PIP_EXTRA_INDEX_URL="file:///opt/pypi/simple https://pypi.org/simple",
        PIP_FIND_LINKS="/opt/wheels",
        PIP_CERT=str(ca),
        PIP_TRUSTED_HOST="private.example",
        HTTPS_PROXY="http://proxy.example:3128",
    )
    fwd = forward_index_config(cfg)
    text = secrets_env_text(fwd.env)
    assert "s3cret" not in text and "private.example" not in text and "INDEX" not in text
    assert not any(k.startswith(("PIP_", "UV_")) for k in fwd.env)
    assert fwd.env["SSL_CERT_FILE"] == "/run/secrets/reprobox-ca"
    assert fwd.ca_bundle == ca
    assert fwd.env["https_proxy"] == fwd.env["HTTPS_PROXY"] == "http://proxy.example:3128"
    assert not fwd.has_secret_values and fwd.build_args == {}


def test_a_proxy_on_localhost_warns_about_the_network_mode(tmp_path: Path) -> None:
    fwd = forward_index_config(_config(tmp_path, HTTP_PROXY="http://127.0.0.1:3128", PIP_CERT=""))
    assert any("--network host" in w for w in fwd.warnings)


def test_a_missing_ca_bundle_is_a_clear_error(tmp_path: Path) -> None:
    with refuses(UsageError, names=[str(tmp_path / "nope.pem"), "does not exist"]):
        forward_index_config(_config(tmp_path, PIP_CERT=str(tmp_path / "nope.pem")))


def test_the_secret_env_file_round_trips_through_a_real_shell(tmp_path: Path) -> None:
    tricky = "https://u:p'a$s\"w`o rd@x.example/simple"
    path = tmp_path / "env"
    path.write_text(secrets_env_text({"PIP_INDEX_URL": tricky, "NO_PROXY": "a,b", "1BAD": "x"}))
    out = subprocess.run(
        ["sh", "-c", '. "$1"; printf %s "$PIP_INDEX_URL"', "sh", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == tricky
    assert "1BAD" not in path.read_text()


def test_secret_files_are_private_and_removed(tmp_path: Path) -> None:
    fwd = forward_index_config(
        _config(tmp_path, HTTPS_PROXY="http://t:tok@proxy.example:3128", PIP_CERT="")
    )
    assert fwd.has_secret_values
    with SecretFiles(fwd) as files:
        env_file = files["reprobox-env"]
        assert oct(env_file.stat().st_mode & 0o777) == "0o600"
        assert "t:tok@" in env_file.read_text()
        assert "reprobox-ca" not in files
    assert not env_file.exists() and not env_file.parent.exists()


# --------------------------------------------------------------------------- code and context


def _stored(repo: Path, *, patch: str | None = None):  # type: ignore[no-untyped-def]
    exp, env = small()
    env = replace(
        env,
        packages=env.packages
        + (
            Package(
                "helpers",
                "0.2.0",
                PackageSource("directory", path="libs/helpers", editable=False, in_repo=True),
            ),
        ),
    )
    commit = git(repo, "rev-parse", "HEAD").strip()
    exp = replace(
        exp,
        git=replace(
            exp.git, commit=commit, patch="patch.diff" if patch else None, dirty=bool(patch)
        ),
    )
    exp = with_env(exp, env)
    files = {"requirements.lock": LOCK, "pylock.toml": (FIXTURES / "pylock.toml").read_text()}
    if patch:
        files["patch.diff"] = patch
    return Store(repo).save(exp, env, files)


def _project(git_repo: Path) -> Path:
    (git_repo / "pyproject.toml").write_text('[project]\nname = "mypkg"\nversion = "0.1.0"\n')
    (git_repo / "libs" / "helpers").mkdir(parents=True)
    (git_repo / "libs" / "helpers" / "setup.py").write_text("VERSION = 1\n")
    (git_repo / "data").mkdir()
    (git_repo / "data" / "big.csv").write_text("1,2,3\n")
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-qm", "project")
    return git_repo


def test_export_code_takes_the_commit_not_the_working_tree(git_repo: Path, tmp_path: Path) -> None:
    repo = _project(git_repo)
    (repo / "libs" / "helpers" / "setup.py").write_text("VERSION = 2  # uncommitted\n")
    (repo / "libs" / "helpers" / "untracked.py").write_text("x = 1\n")
    stored = _stored(repo)
    dest = tmp_path / "out"
    export_code(repo, stored, ["libs/helpers"], dest)
    assert (dest / "libs" / "helpers" / "setup.py").read_text() == "VERSION = 1\n"
    assert not (dest / "libs" / "helpers" / "untracked.py").exists()
    assert not (dest / "data").exists() and not (dest / "README.md").exists()


def test_export_code_applies_the_recorded_patch(git_repo: Path, tmp_path: Path) -> None:
    repo = _project(git_repo)
    (repo / "README.md").write_text("patched\n")
    (repo / "libs" / "helpers" / "setup.py").write_text("VERSION = 3\n")
    patch = git(repo, "diff", "HEAD", "--binary")
    git(repo, "checkout", "--", ".")
    stored = _stored(repo, patch=patch)
    dest = tmp_path / "out"
    export_code(repo, stored, ["."], dest)
    assert (dest / "libs" / "helpers" / "setup.py").read_text() == "VERSION = 3\n"
    assert (dest / "README.md").read_text() == "patched\n"
    assert not (dest / ".git").exists()


def test_a_same_size_change_in_the_same_second_changes_the_mtime(
    git_repo: Path, tmp_path: Path
) -> None:
    """BuildKit resends a context file only when its size or mtime changed."""
    repo = _project(git_repo)
    same_second = {
        **os.environ,
        "GIT_COMMITTER_DATE": "@1700000000 +0000",
        "GIT_AUTHOR_DATE": "@1700000000 +0000",
    }

    def commit(message: str) -> None:
        subprocess.run(
            [
                "git",
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.com",
                "commit",
                "-qam",
                message,
                "--allow-empty",
            ],
            cwd=repo,
            env=same_second,
            check=True,
        )

    commit("first")
    first = _stored(repo)
    (repo / "libs" / "helpers" / "setup.py").write_text("VERSION = 2\n")  # same size
    commit("same size, same second")
    second = _stored(repo)
    a, b = tmp_path / "a", tmp_path / "b"
    export_code(repo, first, ["libs/helpers"], a)
    export_code(repo, second, ["libs/helpers"], b)
    fa, fb = a / "libs/helpers/setup.py", b / "libs/helpers/setup.py"
    assert fa.stat().st_size == fb.stat().st_size
    assert fa.stat().st_mtime_ns != fb.stat().st_mtime_ns
    export_code(repo, second, ["libs/helpers"], a)  # same content again: same stamp
    assert fa.stat().st_mtime_ns == fb.stat().st_mtime_ns


def test_assemble_context_layout(git_repo: Path, tmp_path: Path) -> None:
    repo = _project(git_repo)
    stored = _stored(repo)
    uv = find_uv()
    assert uv is not None, "uv is a test dependency"
    plan = plan_image(
        stored.experiment,
        stored.environment,
        base_image="python:3.11.7-slim-bookworm",
        options=RenderOptions(),
    )
    dest = tmp_path / "ctx"
    ctx = assemble_context(repo, stored, ContextInputs(plan, "FROM scratch\n", uv, _pins()), dest)
    names = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert "Dockerfile" in names and "lock/all.txt" in names and "tools/uv" in names
    assert "tools/prune.py" in names and "tools/packages.txt" in names
    assert "src/libs/helpers/setup.py" in names and "src/pyproject.toml" in names
    assert (dest / "tools" / "packages.txt").read_text().split() == sorted(plan.expected)
    assert (
        os.path.samefile(dest / "tools" / "uv", uv)
        or (dest / "tools" / "uv").stat().st_size == uv.stat().st_size
    )
    # A second assembly keeps unchanged files as they are (same mtime: BuildKit skips them).
    before = (dest / "lock" / "all.txt").stat().st_mtime_ns
    assemble_context(repo, stored, ContextInputs(plan, "FROM scratch\n", uv, _pins()), dest)
    assert (dest / "lock" / "all.txt").stat().st_mtime_ns == before
    assert ctx.dockerfile == dest / "Dockerfile"


def test_assemble_context_without_a_lock_names_the_fix(git_repo: Path, tmp_path: Path) -> None:
    repo = _project(git_repo)
    stored = _stored(repo)
    plan = plan_image(
        stored.experiment,
        stored.environment,
        base_image="python:3.11.7-slim-bookworm",
        options=RenderOptions(installer="pip"),
    )
    with refuses(LockError, names=["requirements.lock", f"reprobox lock {stored.id}"]):
        assemble_context(
            repo, stored, ContextInputs(plan, "FROM scratch\n", None, None), tmp_path / "ctx"
        )


def test_context_dir_is_stable_per_repository(tmp_path: Path) -> None:
    assert context_dir(tmp_path / "a") == context_dir(tmp_path / "a")
    assert context_dir(tmp_path / "a") != context_dir(tmp_path / "b")


def test_find_uv_returns_the_binary_not_a_shim() -> None:
    uv = find_uv()
    assert uv is not None
    assert uv.read_bytes()[:4] == b"\x7fELF"


# --------------------------------------------------------------------------- wheels and meta


def _artifact(tmp_path: Path, name: str, filename: str, origin: str = "index") -> Artifact:
    path = tmp_path / "house" / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(filename.encode())
    return Artifact(name, "1.0", filename, "0" * 64, path, "lock", origin)


def test_each_lock_layer_gets_a_wheels_folder_of_its_own(tmp_path: Path) -> None:
    """A step's cache key is what it mounts: the compiled layer's folder holds no pure-Python
    wheel, so moving one leaves the compiled layer cached."""
    from reprobox.build.context import place_wheels, wheel_folders
    from reprobox.build.render import LockGroup

    exp, env = small()
    plan = plan_image(exp, env, base_image="python:3.11.7-slim-bookworm")
    plan = replace(
        plan,
        lock_groups=(
            LockGroup("compiled.txt", "c", ("numpy",)),
            LockGroup("pure.txt", "p", ("six", "attrs")),
        ),
    )
    numpy = _artifact(tmp_path, "numpy", "numpy-1.0-cp311-cp311-manylinux_2_17_x86_64.whl")
    six = _artifact(tmp_path, "six", "six-1.0-py3-none-any.whl")
    old = _artifact(tmp_path, "attrs", "attrs-1.0.tar.gz")  # an sdist: needs the backend
    stray = _artifact(tmp_path, "extra-pin", "extra_pin-1.0-py3-none-any.whl")
    backend = _artifact(tmp_path, "setuptools", "setuptools-1.0-py3-none-any.whl", "build backend")
    folders = wheel_folders(plan, [numpy, six, old, stray, backend])
    files = {k: sorted(a.filename for a in v) for k, v in folders.items()}
    assert files["lock-compiled"] == sorted([numpy.filename, stray.filename])
    assert files["lock-pure"] == sorted([six.filename, old.filename, backend.filename])
    assert files["local"] == [backend.filename]  # the project's own package (mypkg)
    wheels = tmp_path / "ctx" / "wheels"
    (wheels / "flat-leftover.whl").parent.mkdir(parents=True)
    (wheels / "flat-leftover.whl").write_text("from the flat layout")
    place_wheels(folders, wheels)
    found = sorted(p.relative_to(wheels).as_posix() for p in wheels.rglob("*") if p.is_file())
    assert found == sorted(f"{k}/{f}" for k, v in files.items() for f in v)
    assert os.path.samefile(wheels / "lock-compiled" / numpy.filename, numpy.path)


def test_every_direct_source_goes_to_the_direct_folder(tmp_path: Path) -> None:
    """VCS, archive and in-repository sources, and a local-path VCS source sealed into the
    experiment at capture, all install in the ``direct`` step: none is left out of its folder."""
    from reprobox.build.context import DIRECT_ORIGINS, wheel_folders

    exp, env = small()
    plan = replace(
        plan_image(exp, env, base_image="python:3.11.7-slim-bookworm"),
        direct=("tinyvcs @ file:///tmp/reprobox/wheels/direct/tinyvcs-0.2.0-a7d150d47be2.tar.gz",),
    )
    direct = [_artifact(tmp_path, f"pkg-{o}", f"pkg_{o}-1.0.tar.gz", o) for o in DIRECT_ORIGINS]
    backend = _artifact(tmp_path, "setuptools", "setuptools-1.0-py3-none-any.whl", "build backend")
    folders = wheel_folders(plan, [*direct, backend])
    assert sorted(a.origin for a in folders["direct"]) == sorted([*DIRECT_ORIGINS, "build backend"])
    assert "sealed" in DIRECT_ORIGINS
    assert all(a.origin == "build backend" for k, v in folders.items() if k != "direct" for a in v)


STATIC = (
    '[build-system]\nrequires = ["setuptools>=61", "wheel"]\n'
    'build-backend = "setuptools.build_meta"\n'
    '[project]\nname = "proj"\nversion = "0.1.0"\ndependencies = ["numpy"]\n'
)


def test_a_linked_pyproject_or_package_folder_is_never_read_through(tmp_path: Path) -> None:
    """A stranger's code may link pyproject.toml, or the package's folder, to a file or folder
    outside it: the layout check then reads nothing through the link and the install sees all
    of the code (same result as a pyproject it cannot judge)."""
    from reprobox.build.context import reads_only_metadata, write_meta

    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "pyproject.toml").write_text(STATIC)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "pyproject.toml").symlink_to(outside / "pyproject.toml")
    assert not reads_only_metadata(linked, True)
    real = tmp_path / "real"
    real.mkdir()
    (real / "pyproject.toml").write_text(STATIC)
    assert reads_only_metadata(real, True)  # the same content, not through a link: judged

    src = tmp_path / "src"
    src.mkdir()
    (src / "pkg").symlink_to(outside, target_is_directory=True)
    (src / "train.py").write_text("print(1)\n")
    exp, env = small()
    plan = plan_image(exp, env, base_image="python:3.11.7-slim-bookworm")
    local = replace(plan.local[0], path="pkg", editable=True)
    assert not write_meta(src, tmp_path / "meta", replace(plan, local=(local,)))
    assert (tmp_path / "meta" / "train.py").read_text() == "print(1)\n"  # code kept as is
    assert (tmp_path / "meta" / "pkg").is_symlink()  # the link copied as a link, not followed


def test_an_install_reads_only_metadata_for_a_static_pyproject_only(tmp_path: Path) -> None:
    from reprobox.build.context import reads_only_metadata

    def case(pyproject: str, editable: bool = True, **files: str) -> bool:
        folder = tmp_path / f"p{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        (folder / "pyproject.toml").write_text(pyproject)
        for name, text in files.items():
            (folder / name.replace("_", ".")).write_text(text)
        return reads_only_metadata(folder, editable)

    assert case(STATIC)
    assert case(
        STATIC.replace("setuptools.build_meta", "hatchling.build").replace(
            '"setuptools>=61", "wheel"', '"hatchling"'
        )
    )
    assert not case(STATIC, editable=False)  # a regular install copies the code
    assert not case(STATIC, setup_py="from setuptools import setup; setup()")
    assert not case(STATIC, setup_cfg="[metadata]\nversion = attr: proj.__version__\n")
    assert not case(STATIC.replace('version = "0.1.0"', 'dynamic = ["version"]'))
    assert not case(STATIC.replace('"wheel"', '"setuptools-scm"'))
    assert not case(STATIC + '\n[tool.setuptools.cmdclass]\nbuild_py = "x.Cmd"\n')
    assert not case(
        STATIC.replace("setuptools.build_meta", "custom_backend") + "\n[tool.x]\na = 1\n"
    )
    assert not case(
        STATIC.replace(
            'build-backend = "setuptools.build_meta"\n',
            'build-backend = "setuptools.build_meta"\nbackend-path = ["."]\n',
        )
    )
    hatch = STATIC.replace("setuptools.build_meta", "hatchling.build").replace(
        '"setuptools>=61", "wheel"', '"hatchling"'
    )
    assert not case(hatch + '\n[tool.hatch.build.hooks.custom]\npath = "hook.py"\n')
    assert not case("[project\nbroken")
    assert not case('[project]\nname = "x"\nversion = "1"\n')  # no build-system: legacy


def test_meta_empties_python_files_only_when_the_install_reads_metadata(tmp_path: Path) -> None:
    from reprobox.build.context import write_meta
    from reprobox.build.render import LocalInstall

    src = tmp_path / "src"
    (src / "src" / "proj").mkdir(parents=True)
    (src / "pyproject.toml").write_text(STATIC)
    (src / "README.md").write_text("readme\n")
    (src / "src" / "proj" / "__init__.py").write_text("SEED = 1\n")
    exp, env = small()
    plan = plan_image(exp, env, base_image="python:3.11.7-slim-bookworm")
    plan = replace(plan, local=(LocalInstall("proj", ".", "/workspace", True),))
    meta = tmp_path / "meta"
    assert write_meta(src, meta, plan)
    assert (meta / "src" / "proj" / "__init__.py").read_text() == ""
    assert (meta / "pyproject.toml").read_text() == STATIC
    assert os.path.samefile(meta / "README.md", src / "README.md")
    first = {p.relative_to(meta).as_posix(): p.stat().st_mtime_ns for p in meta.rglob("*")}
    (src / "src" / "proj" / "__init__.py").write_text("SEED = 2\n")  # the code alone changed
    assert write_meta(src, meta, plan)
    assert {
        p.relative_to(meta).as_posix(): p.stat().st_mtime_ns for p in meta.rglob("*")
    } == first  # BuildKit sees no change: the install is cached
    # a package whose install may read the code: meta/ is the code as it is
    (src / "setup.py").write_text("from setuptools import setup\nsetup()\n")
    assert not write_meta(src, meta, plan)
    assert (meta / "src" / "proj" / "__init__.py").read_text() == "SEED = 2\n"
    assert (meta / "setup.py").read_text().startswith("from setuptools")
