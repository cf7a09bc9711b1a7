"""The repository's own packages in every layout, local-path VCS sources, post-install changes.

Real projects built in tmp folders, real virtualenvs (setuptools from the real index), the real
CLI, a fresh clone of a bare origin, and real rebuilds: Docker images (uv, and the image's own
pip) and the venv backend.

* Layouts: a legacy ``setup.py develop`` install (egg-link, untracked egg-info in the
  repository), a PEP 660 editable flat layout, a PEP 660 src layout and a namespace package
  (``acme.alpha``), each with a console script. The command reads every distribution's metadata
  and runs every entry point; run and verify must see them all, with both backends.
* A package installed from ``git+file:///.../dep.git@<commit>``: capture seals the commit into
  the experiment; the clone rebuilds it after that repository is deleted.
* A post-install change (a file of an installed wheel rewritten): capture records it; verify of
  the rebuild names the file (never IDENTICAL).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ..factories import (
    DOCKER,
    capture,
    commit,
    make_venv,
    new_repo,
    publish_and_clone,
    reprobox,
    run_json,
    sh,
)
from .test_run_e2e import (  # noqa: F401 - the fixtures are used by name
    _remove_built_images,
    base_image,
    remove_images,
)

pytestmark = [pytest.mark.slow]

_PYPROJECT = (
    '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n\n'
    '[project]\nname = "{name}"\nversion = "{version}"\n\n'
    '[project.scripts]\n{script} = "{module}:main"\n'
)


def _main(word: str) -> str:
    return f"def main():\n    print({word!r})\n"


LAYOUT_FILES = {
    # legacy: setup.py only, installed with `setup.py develop` (egg-link + egg-info in the repo)
    "legacy/setup.py": (
        "from setuptools import setup\n"
        "setup(name='legacy-lib', version='0.1.0', py_modules=['legacy_lib'],\n"
        "      entry_points={'console_scripts': ['legacy-hello=legacy_lib:main']})\n"
    ),
    "legacy/legacy_lib.py": _main("legacy"),
    # PEP 660, flat layout
    "flat/pyproject.toml": _PYPROJECT.format(
        name="flat-lib", version="0.2.0", script="flat-hello", module="flat_lib"
    ),
    "flat/flat_lib/__init__.py": _main("flat"),
    # PEP 660, src layout
    "srclay/pyproject.toml": _PYPROJECT.format(
        name="src-lib", version="0.3.0", script="src-hello", module="src_lib"
    ),
    "srclay/src/src_lib/__init__.py": _main("src"),
    # PEP 660, a namespace package (no acme/__init__.py)
    "ns/pyproject.toml": _PYPROJECT.format(
        name="acme-alpha", version="0.4.0", script="alpha-hello", module="acme.alpha"
    ),
    "ns/src/acme/alpha/__init__.py": _main("alpha"),
    "train.py": (
        "import json, subprocess\n"
        "from importlib.metadata import version, entry_points\n"
        "import legacy_lib, flat_lib, src_lib, acme.alpha\n"
        "names = ['legacy-lib', 'flat-lib', 'src-lib', 'acme-alpha']\n"
        "versions = {n: version(n) for n in names}\n"
        "scripts = sorted(e.name for e in entry_points(group='console_scripts')\n"
        "                 if e.name.endswith('-hello'))\n"
        "out = [subprocess.run([s], capture_output=True, text=True, check=True).stdout.strip()\n"
        "       for s in scripts]\n"
        "json.dump({'packages': len(versions), 'scripts': len(out),\n"
        "           'said': len(set(out) & {'legacy', 'flat', 'src', 'alpha'})},\n"
        "          open('metrics.json', 'w'))\n"
        "print(versions, scripts, out)\n"
    ),
    ".gitignore": "metrics.json\n*.egg-info/\n",
}


def _layouts_venv(repo: Path, where: Path) -> Path:
    venv = make_venv(where, "setuptools==75.3.0")
    py = str(venv / "bin" / "python")
    sh(repo / "legacy", py, "setup.py", "-q", "develop")
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for folder in ("flat", "srclay", "ns"):
        sh(repo, *pip, "-e", str(repo / folder))
    return venv


def _no_package_difference(report: dict) -> list:
    return [d for d in report["differences"] if d["kind"] != "system-package"]


@pytest.fixture(scope="module")
def layouts_clone(tmp_path_factory: pytest.TempPathFactory, index_access: None) -> Path:
    tmp = tmp_path_factory.mktemp("layouts")
    repo = new_repo(tmp / "project", LAYOUT_FILES)
    venv = _layouts_venv(repo, tmp / "venv")
    assert (repo / "legacy" / "legacy_lib.egg-info").is_dir()  # untracked, ignored
    sh(
        repo,
        str(venv / "bin" / "python"),
        "train.py",
        env={
            **__import__("os").environ,
            "PATH": f"{venv / 'bin'}:{__import__('os').environ['PATH']}",
        },
    )
    data = capture(
        repo, venv, "--name", "layouts", "--cmd", "python train.py", "--metrics", "metrics.json"
    )
    env_json = json.loads(reprobox(repo, "show", data["id"], "--json").stdout)["environment"]
    sources = {p["name"]: p["source"] for p in env_json["packages"]}
    for name, path in (
        ("legacy-lib", "legacy"),
        ("flat-lib", "flat"),
        ("src-lib", "srclay"),
        ("acme-alpha", "ns"),
    ):
        assert sources[name] == {
            "kind": "directory",
            "path": path,
            "editable": True,
            "in_repo": True,
        }, name
    clone = publish_and_clone(repo, tmp)
    remove_images(data["id"])
    return clone


def _check_layouts_run(report: dict) -> None:
    observed = {m["key"]: m["observed"] for m in report["metrics"]}
    assert observed == {"packages": 4, "scripts": 4, "said": 4}, report


@pytest.mark.docker
@pytest.mark.network
def test_every_layout_runs_and_verifies_in_an_image(layouts_clone: Path, base_image: str):  # noqa: F811
    status, report, err = run_json(layouts_clone, "layouts", "--backend", "docker")
    assert status == 0, (report, err)
    _check_layouts_run(report)
    done = reprobox(
        layouts_clone, "verify", "layouts", "--backend", "docker", "--json", check=False
    )
    assert _no_package_difference(json.loads(done.stdout)) == [], done.stdout


@pytest.mark.docker
@pytest.mark.network
def test_every_layout_runs_in_an_image_built_with_pip(
    layouts_clone: Path, base_image: str, tmp_path: Path
):  # noqa: F811
    """The image's own pip (a host without uv): a legacy project is installed PEP 660 too."""
    shown = json.loads(reprobox(layouts_clone, "show", "layouts", "--json").stdout)
    remove_images(shown["experiment"]["id"])  # built again, by the image's pip
    done = reprobox(
        layouts_clone,
        "run",
        "layouts",
        "--backend",
        "docker",
        "--json",
        check=False,
        extra_env={"REPROBOX_BUILD_INSTALLER": "pip"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    image = sh(
        layouts_clone,
        DOCKER,
        "images",
        "-q",
        "--filter",
        f"label=reprobox.experiment={shown['experiment']['id']}",
    ).stdout.split()[0]
    history = sh(layouts_clone, DOCKER, "history", "--no-trunc", image).stdout
    assert "-m pip install" in history and "--use-pep517" in history
    _check_layouts_run(json.loads(done.stdout))
    verified = reprobox(
        layouts_clone, "verify", "layouts", "--backend", "docker", "--json", check=False
    )
    assert _no_package_difference(json.loads(verified.stdout)) == [], verified.stdout


@pytest.mark.network
def test_every_layout_runs_and_verifies_in_a_venv(layouts_clone: Path):
    status, report, err = run_json(layouts_clone, "layouts", "--backend", "venv")
    assert status == 0, (report, err)
    _check_layouts_run(report)
    done = reprobox(layouts_clone, "verify", "layouts", "--backend", "venv", "--json", check=False)
    assert _no_package_difference(json.loads(done.stdout)) == [], done.stdout
    # nothing was written into the clone (an egg-info of a legacy develop install)
    assert not list(layouts_clone.glob("legacy/*.egg-info"))


# --------------------------------------------------------------------------- git+file://


def _bare_dependency(where: Path) -> tuple[Path, str]:
    """A bare repository holding the package ``localdep`` (one commit)."""
    work = new_repo(
        where / "dep-work",
        {
            "pyproject.toml": _PYPROJECT.format(
                name="localdep", version="1.2.0", script="localdep-hello", module="localdep"
            ),
            "localdep/__init__.py": "FACTOR = 7\n" + _main("dep"),
        },
    )
    bare = where / "dep.git"
    sh(where, "git", "clone", "-q", "--bare", str(work), str(bare))
    head = sh(work, "git", "rev-parse", "HEAD").stdout.strip()
    shutil.rmtree(work)
    return bare, head


@pytest.fixture(scope="module")
def vcs_clone(tmp_path_factory: pytest.TempPathFactory, index_access: None) -> Path:
    tmp = tmp_path_factory.mktemp("vcs")
    bare, head = _bare_dependency(tmp)
    repo = new_repo(
        tmp / "project",
        {
            "train.py": (
                "import json, localdep\n"
                "json.dump({'factor': localdep.FACTOR}, open('metrics.json', 'w'))\n"
            ),
            ".gitignore": "metrics.json\n",
        },
    )
    venv = make_venv(tmp / "venv", f"git+file://{bare}@{head}#egg=localdep")
    sh(repo, str(venv / "bin" / "python"), "train.py")
    done = reprobox(
        repo,
        "capture",
        "--json",
        "--name",
        "vcs",
        "--cmd",
        "python train.py",
        "--metrics",
        "metrics.json",
        venv=venv,
    )
    data = json.loads(done.stdout)
    assert (
        any("localdep" in w and "sealed into the experiment" in w for w in data.get("warnings", []))
        or "sealed into the experiment" in done.stderr
    )
    commit(repo, "reprobox capture", ".reprobox")
    env_json = json.loads(reprobox(repo, "show", data["id"], "--json").stdout)["environment"]
    src = next(p["source"] for p in env_json["packages"] if p["name"] == "localdep")
    assert src["kind"] == "vcs" and src["commit"] == head
    assert src["path"] == f"localdep-1.2.0-{head[:12]}.tar.gz"
    assert src["hash"].startswith("sha256=")
    folder = next((repo / ".reprobox" / "experiments").glob(f"{data['id']}*"))
    assert (folder / src["path"]).is_file()
    lock = (folder / "requirements.lock").read_text()
    assert "sealed into the experiment as " + src["path"] in lock
    clone = publish_and_clone(repo, tmp)
    shutil.rmtree(bare)  # the path the capture names exists nowhere now
    remove_images(data["id"])
    return clone


@pytest.mark.network
def test_a_local_path_vcs_dependency_reproduces_in_a_venv_after_its_repository_is_gone(
    vcs_clone: Path,
):
    status, report, err = run_json(vcs_clone, "vcs", "--backend", "venv")
    assert status == 0, (report, err)
    assert report["metrics"][0]["observed"] == 7
    done = reprobox(vcs_clone, "verify", "vcs", "--backend", "venv", "--json", check=False)
    assert _no_package_difference(json.loads(done.stdout)) == [], done.stdout


@pytest.mark.docker
@pytest.mark.network
def test_a_local_path_vcs_dependency_reproduces_in_an_image(vcs_clone: Path, base_image: str):  # noqa: F811
    status, report, err = run_json(vcs_clone, "vcs", "--backend", "docker")
    assert status == 0, (report, err)
    assert report["metrics"][0]["observed"] == 7
    done = reprobox(vcs_clone, "verify", "vcs", "--backend", "docker", "--json", check=False)
    assert _no_package_difference(json.loads(done.stdout)) == [], done.stdout


@pytest.mark.network
def test_capture_refuses_a_local_vcs_commit_its_repository_lost(tmp_path: Path):
    bare, head = _bare_dependency(tmp_path)
    repo = new_repo(tmp_path / "project", {"train.py": "import localdep\n"})
    venv = make_venv(tmp_path / "venv", f"git+file://{bare}@{head}#egg=localdep")
    shutil.rmtree(bare)
    done = reprobox(repo, "capture", "--cmd", "python train.py", venv=venv, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "localdep" in done.stderr and str(bare) in done.stderr
    assert "Traceback" not in done.stderr
    assert not (repo / ".reprobox" / "experiments").exists() or not any(
        (repo / ".reprobox" / "experiments").iterdir()
    )


# --------------------------------------------------------------------------- post-install change


@pytest.fixture(scope="module")
def patched_clone(tmp_path_factory: pytest.TempPathFactory, index_access: None) -> Path:
    """six.py (small text) patched after install: carried, re-applied by a rebuild;
    typing_extensions.py (over 64 KiB) patched too: recorded only, verify names it."""
    tmp = tmp_path_factory.mktemp("patched")
    repo = new_repo(
        tmp / "project",
        {
            "train.py": (
                "import json, six, typing_extensions as te\n"
                "json.dump({'six': int(hasattr(six, 'PATCHED')),\n"
                "           'te': int(hasattr(te, 'PATCHED'))}, open('metrics.json', 'w'))\n"
            ),
            ".gitignore": "metrics.json\n",
        },
    )
    venv = make_venv(tmp / "venv", "six==1.16.0", "typing_extensions==4.12.2")
    site = next((venv / "lib").glob("python3*/site-packages"))
    for name in ("six.py", "typing_extensions.py"):
        with open(site / name, "a") as fh:
            fh.write("PATCHED = True\n")
    assert (site / "typing_extensions.py").stat().st_size > 65536
    sh(repo, str(venv / "bin" / "python"), "train.py")
    data = capture(
        repo, venv, "--name", "patched", "--cmd", "python train.py", "--metrics", "metrics.json"
    )
    warnings = "\n".join(data.get("warnings", []))
    assert "six.py (modified)" in warnings and "typing_extensions.py (modified)" in warnings
    assert "typing_extensions.py of typing-extensions is recorded but not carried" in warnings
    env_json = json.loads(reprobox(repo, "show", data["id"], "--json").stdout)["environment"]
    changes = {c["path"]: c for c in env_json["installed_changes"]}
    assert sorted(changes) == ["six.py", "typing_extensions.py"]
    assert changes["six.py"]["replay"].startswith("installed-")
    assert "replay" not in changes["typing_extensions.py"]
    clone = publish_and_clone(repo, tmp)
    remove_images(data["id"])
    return clone


def _check_patched(clone: Path, backend: str) -> None:
    status, report, err = run_json(clone, "patched", "--backend", backend)
    observed = {m["key"]: m["observed"] for m in report["metrics"]}
    assert observed == {"six": 1, "te": 0}, (report, err)  # six re-applied, the other not
    assert status == 1
    done = reprobox(clone, "verify", "patched", "--backend", backend, "--json", check=False)
    report = json.loads(done.stdout)
    assert done.returncode == 1 and report["verdict"] == "differs", done.stdout
    files = [d for d in report["differences"] if d["kind"] == "installed-file"]
    assert [d["subject"] for d in files] == ["typing-extensions:typing_extensions.py"]
    assert "modified after install" in files[0]["message"]
    assert "as installed" in files[0]["message"]


@pytest.mark.network
def test_post_install_changes_are_replayed_or_named_by_verify_in_a_venv(patched_clone: Path):
    _check_patched(patched_clone, "venv")


@pytest.mark.docker
@pytest.mark.network
def test_post_install_changes_are_replayed_or_named_by_verify_in_an_image(
    patched_clone: Path, base_image: str
):  # noqa: F811
    _check_patched(patched_clone, "docker")


@pytest.mark.network
def test_a_folder_package_whose_source_changed_since_its_install_is_named(tmp_path: Path):
    """`pip install ./libs/mylib` (not editable), then its source edited: the run uses the
    installed copy, a rerun builds the folder as committed. The capture says so, naming the
    file, and says nothing once the package is installed again from the current source."""
    repo = new_repo(
        tmp_path / "project",
        {
            "libs/mylib/pyproject.toml": _PYPROJECT.format(
                name="mylib", version="0.2.0", script="mylib-hello", module="mylib"
            ),
            "libs/mylib/mylib/__init__.py": "VALUE = 42\n" + _main("hello"),
            ".gitignore": ".venv/\n*.egg-info/\nbuild/\n",
        },
    )
    venv = make_venv(tmp_path / "venv", str(repo / "libs" / "mylib"))
    done = reprobox(repo, "capture", "--no-lock", "--json", venv=venv)
    assert not [w for w in json.loads(done.stdout)["warnings"] if "source changed" in w]

    (repo / "libs" / "mylib" / "mylib" / "__init__.py").write_text("VALUE = 43\n" + _main("hi"))
    commit(repo, "a new value")
    done = reprobox(repo, "capture", "--no-lock", "--json", venv=venv)
    (warning,) = [w for w in json.loads(done.stdout)["warnings"] if "source changed" in w]
    assert "package mylib 0.2.0 was installed from libs/mylib before its source changed" in warning
    assert "mylib/__init__.py, which differs from libs/mylib/mylib/__init__.py" in warning

    sh(
        tmp_path,
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        str(repo / "libs" / "mylib"),
    )
    done = reprobox(repo, "capture", "--no-lock", "--json", venv=venv)
    assert not [w for w in json.loads(done.stdout)["warnings"] if "source changed" in w]
