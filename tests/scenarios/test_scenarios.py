"""Scenario tests: real-world project layouts, each captured, cloned afresh and reproduced.

One folder per case under ``tests/scenarios/<case>/``:

* ``README.md``: the real-world situation the case stands for;
* ``project/``: the project's files (committed to a fresh git repository by the runner);
* ``recipe.toml``: how its environment is made (Python version, requirements, install steps,
  Debian packages the host needs, extra git repositories, how the run is captured);
* ``expect.toml``: what must happen: capture (exit status, warnings), the fresh clone's
  ``reprobox run`` with the docker and the venv backend (exit status, verdict, named
  differences) and ``reprobox verify`` (identical or which differences).

For every case the runner builds the environment in a temporary folder (a venv of the requested
interpreter), makes the project a git repository, runs the recipe's steps, captures (``reprobox
capture`` or ``reprobox record -- CMD``), commits the capture, clones to another folder and there
runs and verifies with each backend. The capture is made once per case and shared by its two
backend tests (``-n`` with ``--dist loadscope`` keeps them on one worker).

A case whose feature is not there yet carries ``[xfail]`` in its expect.toml, per backend:
``xfail(strict=True)``, so the test fails the moment the feature lands and the mark must go.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.conftest import require

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DOCKER = (
    "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")
)
BACKENDS = ("docker", "venv")
#: Variables of the test process that would leak into a capture or a rerun.
_DROPPED = ("VIRTUAL_ENV", "CONDA_PREFIX", "OMP_NUM_THREADS", "PYTHONHASHSEED", "PYTHONPATH")


# --------------------------------------------------------------------------- the cases


@dataclass
class Case:
    name: str
    folder: Path
    recipe: dict[str, Any]
    expect: dict[str, Any]

    @property
    def python(self) -> str:
        return str(self.recipe.get("python", "3.11.7"))

    @property
    def project(self) -> Path:
        """The project's files: the case's own ``project/``, or ``project-from`` (a folder of
        this repository, e.g. an example) when the recipe names one."""
        source = self.recipe.get("project-from")
        return ROOT / source if source else self.folder / "project"

    def markers(self) -> list[str]:
        return list(self.recipe.get("markers", []))

    def expected(self, step: str, backend: str) -> dict[str, Any]:
        """``[run]`` / ``[verify]`` for both backends, ``[run.docker]`` etc. overriding."""
        table = dict(self.expect.get(step, {}))
        specific = table.pop("docker", None), table.pop("venv", None)
        override = specific[0] if backend == "docker" else specific[1]
        return {**table, **(override or {})}


def load_cases() -> list[Case]:
    cases = []
    for folder in sorted(p for p in HERE.iterdir() if (p / "recipe.toml").is_file()):
        recipe = tomllib.loads((folder / "recipe.toml").read_text())
        expect = tomllib.loads((folder / "expect.toml").read_text())
        cases.append(Case(folder.name, folder, recipe, expect))
    return cases


CASES = load_cases()


def _backend_params(case: Case) -> list[Any]:
    params = []
    for backend in BACKENDS:
        marks = [pytest.mark.slow, pytest.mark.network]
        marks += [getattr(pytest.mark, m) for m in case.markers()]
        if backend == "docker":
            marks.append(pytest.mark.docker)
        reason = case.expect.get("xfail", {}).get(backend)
        if reason:
            marks.append(pytest.mark.xfail(strict=True, reason=reason))
        params.append(pytest.param(backend, id=backend, marks=marks))
    return params


# --------------------------------------------------------------------------- helpers


def sh(
    cwd: Path, *argv: str, env: Optional[dict] = None, check: bool = True
) -> subprocess.CompletedProcess:
    done = subprocess.run(
        list(argv),
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env if env is not None else os.environ.copy(),
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{argv} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def clean_env(venv: Optional[Path] = None, extra: Optional[dict] = None) -> dict[str, str]:
    env = os.environ.copy()
    for var in _DROPPED:
        env.pop(var, None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    for key in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        env.setdefault(key, "Dev")
    for key in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        env.setdefault(key, "dev@example.org")
    env.update(extra or {})
    return env


def reprobox_exe() -> str:
    here = Path(sys.executable).parent / "reprobox"
    return str(here) if here.exists() else (shutil.which("reprobox") or "reprobox")


def commit_all(repo: Path, message: str) -> None:
    sh(repo, "git", "add", "-A")
    if sh(repo, "git", "status", "--porcelain").stdout.strip():
        sh(repo, "git", "commit", "-q", "-m", message, env=clean_env())


def init_repo(path: Path, source: Path) -> Path:
    shutil.copytree(source, path, symlinks=True)
    sh(path, "git", "init", "-q", "-b", "main")
    sh(path, "git", "config", "user.email", "dev@example.org")
    sh(path, "git", "config", "user.name", "Dev")
    commit_all(path, "initial")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_python(version: str) -> str:
    from reprobox.backends.venv import find_interpreter

    try:
        return str(find_interpreter(version))
    except Exception as exc:  # noqa: BLE001 - reported through require()
        require(False, f"CPython {version} ({exc}); scripts/setup.sh installs it with pyenv")
        raise


def debian_package_installed(name: str) -> bool:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status}", name], capture_output=True, text=True, check=False
    )
    return done.returncode == 0 and "install ok installed" in done.stdout


def pipfile_lock_requirements(lock: Path) -> str:
    """What ``pipenv install --deploy`` installs from Pipfile.lock, as pip requirements: the
    ``default`` section's pins with every recorded hash (pip then installs the same files)."""
    data = json.loads(lock.read_text())
    lines = []
    for name, entry in sorted(data["default"].items()):
        hashes = " ".join(f"--hash={h}" for h in entry["hashes"])
        lines.append(f"{name}{entry['version']} {hashes}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- environments


@dataclass
class Prepared:
    case: Case
    where: Path
    repo: Path
    venv: Path
    clone: Path
    exp_id: str
    capture: subprocess.CompletedProcess
    data: dict[str, Any] = field(default_factory=dict)
    images: set[str] = field(default_factory=set)


class GitDaemon:
    """A real ``git daemon`` on 127.0.0.1 serving the case's extra repositories (git://)."""

    def __init__(self, base: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                "git",
                "daemon",
                "--reuseaddr",
                "--export-all",
                f"--base-path={base}",
                "--listen=127.0.0.1",
                f"--port={self.port}",
                str(base),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        self.stop()
        raise AssertionError("git daemon did not start")

    @property
    def url(self) -> str:
        return f"git://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def substitute(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), text)


def prepare_case(case: Case, where: Path, daemons: list[GitDaemon]) -> Prepared:
    recipe = case.recipe
    for package in recipe.get("debian-packages", []):
        require(
            debian_package_installed(package),
            f"Debian package {package} (scripts/setup.sh installs it)",
        )
    values = {"case": str(case.folder), "where": str(where), "python": case.python}
    # Extra repositories (a VCS dependency): each a real git repository, served by a real
    # git daemon when the recipe asks for one.
    vcs_root = where / "vcs"
    for name in recipe.get("vcs-repos", []):
        repo = init_repo(vcs_root / name, case.folder / "vcs" / name)
        values[f"sha_{name}"] = sh(repo, "git", "rev-parse", "HEAD").stdout.strip()
    values["vcs"] = str(vcs_root)
    if recipe.get("git-daemon"):
        daemon = GitDaemon(vcs_root)
        daemons.append(daemon)
        values["git_daemon"] = daemon.url
    values["dvc_remote"] = str(where / "dvc-remote")

    repo = init_repo(where / "project", case.project)
    venv = where / "venv"
    sh(where, find_python(case.python), "-m", "venv", str(venv))
    extra = {k: substitute(str(v), values) for k, v in recipe.get("env", {}).items()}
    env = clean_env(venv, extra)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    if recipe.get("pip"):
        sh(repo, *pip, *(substitute(r, values) for r in recipe["pip"]), env=env)
    if recipe.get("pipfile-lock"):
        reqs = where / "pipfile-lock-requirements.txt"
        reqs.write_text(pipfile_lock_requirements(repo / "Pipfile.lock"))
        sh(repo, *pip, "--require-hashes", "--no-deps", "-r", str(reqs), env=env)
    for step in recipe.get("steps", []):
        sh(repo, "bash", "-euo", "pipefail", "-c", substitute(step, values), env=env)
    commit_all(repo, "project state before the capture")

    capture = recipe.get("capture", {})
    args = [substitute(a, values) for a in capture.get("args", [])]
    if capture.get("mode", "capture") == "record":
        cmd = [substitute(a, values) for a in capture["command"]]
        argv = [reprobox_exe(), "record", "--json", *args, "--", *cmd]
    else:
        argv = [reprobox_exe(), "capture", "--json", *args]
    done = sh(repo, *argv, env=env, check=False)
    data: dict[str, Any] = {}
    exp_id = ""
    if done.returncode == 0:
        data = json.loads(done.stdout)
        exp_id = data["id"]
        sh(repo, "git", "add", ".reprobox")
        sh(repo, "git", "commit", "-q", "-m", "reprobox capture", env=clean_env())
    origin = where / "origin.git"
    sh(where, "git", "init", "-q", "--bare", "-b", "main", str(origin))
    sh(repo, "git", "push", "-q", str(origin), "main")
    clone = where / "clone"
    sh(where, "git", "clone", "-q", str(origin), str(clone))
    return Prepared(case, where, repo, venv, clone, exp_id, done, data)


@pytest.fixture(scope="session")
def prepared_cases(tmp_path_factory: pytest.TempPathFactory):
    """Each case's environment, capture and fresh clone, made once (per worker)."""
    made: dict[str, Prepared] = {}
    daemons: list[GitDaemon] = []

    def get(case: Case) -> Prepared:
        if case.name not in made:
            made[case.name] = prepare_case(case, tmp_path_factory.mktemp(case.name), daemons)
        return made[case.name]

    yield get
    for daemon in daemons:
        daemon.stop()
    for prepared in made.values():
        if not prepared.exp_id:
            continue
        ids = sh(
            ROOT,
            DOCKER,
            "images",
            "-q",
            "--filter",
            f"label=reprobox.experiment={prepared.exp_id}",
            check=False,
        )
        for image in sorted(set(ids.stdout.split())):
            sh(ROOT, DOCKER, "rmi", "-f", image, check=False)


_BASES: dict[str, str] = {}


@pytest.fixture(scope="session")
def python_base():
    """``python:X.Y.Z-slim-bookworm`` for each Python a case asks for, built with ``reprobox
    base``'s code (debootstrap, the host's interpreter) when missing: no registry needed."""

    def get(version: str) -> str:
        if version not in _BASES:
            from reprobox.base import build_base

            _BASES[version] = build_base(version, "bookworm")
        return _BASES[version]

    return get


# --------------------------------------------------------------------------- checks


def _text(obj: Any) -> str:
    return obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True)


def check_capture(prepared: Prepared) -> None:
    expected = prepared.case.expect.get("capture", {})
    done = prepared.capture
    accepted = expected.get("exit", 0)
    accepted = accepted if isinstance(accepted, list) else [accepted]
    assert done.returncode in accepted, (
        f"capture exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    for warning in expected.get("warnings", []):
        assert warning in done.stderr, f"capture did not warn {warning!r}:\n{done.stderr}"
    if done.returncode != 0:
        for needle in expected.get("message", []):
            assert needle in done.stderr, f"capture's message lacks {needle!r}:\n{done.stderr}"
        return
    shown = json.loads(
        sh(
            prepared.clone, reprobox_exe(), "show", prepared.exp_id, "--json", env=clean_env()
        ).stdout
    )
    packages = {
        p["name"].lower().replace("_", "-"): p for p in shown["environment"].get("packages", [])
    }
    for name, source in expected.get("packages", {}).items():
        assert name in packages, f"{name} not recorded: {sorted(packages)}"
        for key, value in source.items():
            assert packages[name]["source"].get(key) == value, (name, packages[name])
    system = {p["name"] for p in shown["environment"].get("system_packages", [])}
    for name in expected.get("system-packages", []):
        assert name in system, f"system package {name} not recorded: {sorted(system)}"


def check_step(
    prepared: Prepared, step: str, backend: str, done: subprocess.CompletedProcess
) -> dict[str, Any]:
    expected = prepared.case.expected(step, backend)
    where = f"{step} --backend {backend}"
    assert done.returncode in (0, 1), (
        f"{where} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    )
    report = json.loads(done.stdout)
    accepted = expected.get("exit", 0)
    accepted = accepted if isinstance(accepted, list) else [accepted]
    assert done.returncode in accepted, (
        f"{where} exited {done.returncode}: {json.dumps(report.get('differences'), indent=1)}"
        f"\n{done.stderr[-3000:]}"
    )
    if "verdict" in expected:
        # A system package whose recorded version has left the archive is a substitution that
        # depends on the day, not on the case: "X with substitutions" is X, the list given.
        verdicts = {expected["verdict"], f"{expected['verdict']} with substitutions"}
        assert report["verdict"] in verdicts, report
    differences = [
        _text(d)
        for d in report.get("differences", [])
        if not (isinstance(d, dict) and d.get("kind") in expected.get("ignore", []))
    ]
    named = expected.get("differences")
    if named is not None:
        for needle in named:
            assert any(needle in d for d in differences), (
                f"{where}: {needle!r} not named in {differences}"
            )
        if not named:
            assert differences == [], f"{where}: unexpected differences {differences}"
    for key, value in expected.get("metrics", {}).items():
        observed = {m["key"]: m.get("observed") for m in report.get("metrics", [])}
        assert observed.get(key) == value, (key, report.get("metrics"))
    for path, status in expected.get("outputs", {}).items():
        outputs = {o["path"]: o["status"] for o in report.get("outputs", [])}
        outputs.update({o["path"]: o["status"] for o in report.get("dvc_outputs", [])})
        assert outputs.get(path) == status, (path, outputs)
    return report


def check_post_install(
    prepared: Prepared, run: dict[str, Any], verify: dict[str, Any], backend: str
) -> None:
    """A file changed after install is replayed (the rerun reproduces) or reported by verify,
    naming it: never a differing rerun next to an IDENTICAL verify."""
    changed = prepared.case.expect.get("post-install", {}).get("file")
    if not changed:
        return
    if run["verdict"] == "reproduced":
        return
    named = [_text(d) for d in verify.get("differences", [])]
    assert not verify.get("identical"), (
        f"--backend {backend}: the rerun differs ({run['differences']}) yet verify says IDENTICAL"
    )
    assert any(changed in d for d in named), f"{changed} not named in {named}"


def remove_images(exp_id: str) -> None:
    ids = sh(ROOT, DOCKER, "images", "-q", "--filter", f"label=reprobox.experiment={exp_id}")
    for image in sorted(set(ids.stdout.split())):
        sh(ROOT, DOCKER, "rmi", "-f", image, check=False)


# --------------------------------------------------------------------------- the runner


def run_scenario(
    case: Case, backend: str, prepared_cases, python_base, request: pytest.FixtureRequest
) -> None:
    """One case with one backend: capture (shared), then run and verify in the fresh clone."""
    if backend == "docker":
        python_base(case.python)
    if "dvc" in case.markers():
        request.getfixturevalue("dvc_cli")
    prepared = prepared_cases(case)
    check_capture(prepared)
    if prepared.capture.returncode != 0:
        return
    values = {"dvc_remote": str(prepared.where / "dvc-remote")}
    run_args = [substitute(a, values) for a in case.recipe.get("run-args", [])]
    env = clean_env(extra={"REPROBOX_VENV_DIR": str(prepared.where / "rerun-venvs")})
    if backend == "docker":
        remove_images(prepared.exp_id)
    run = sh(
        prepared.clone,
        reprobox_exe(),
        "run",
        prepared.exp_id,
        "--backend",
        backend,
        "--json",
        *run_args,
        env=env,
        check=False,
    )
    run_report = check_step(prepared, "run", backend, run)
    # The rerun left the clone as it was: reports and image tags are local state.
    assert sh(prepared.clone, "git", "status", "--porcelain", "--ignored=no").stdout == ""
    verify = sh(
        prepared.clone,
        reprobox_exe(),
        "verify",
        prepared.exp_id,
        "--backend",
        backend,
        "--json",
        env=env,
        check=False,
    )
    verify_report = check_step(prepared, "verify", backend, verify)
    check_post_install(prepared, run_report, verify_report, backend)


def _case_class(case: Case) -> type:
    """``Test_<case>::test_scenario[docker|venv]``: one class per case, so that ``--dist
    loadscope`` keeps a case's two backend tests on one worker (they share its capture)."""

    def test_scenario(
        self: Any, backend: str, prepared_cases, python_base, request: pytest.FixtureRequest
    ) -> None:
        run_scenario(case, backend, prepared_cases, python_base, request)

    test_scenario.__doc__ = (case.folder / "README.md").read_text()
    method = pytest.mark.parametrize("backend", _backend_params(case))(test_scenario)
    return type("Test_" + case.name.replace("-", "_"), (), {"test_scenario": method})


for _case in CASES:
    _cls = _case_class(_case)
    globals()[_cls.__name__] = _cls


def test_every_case_is_complete() -> None:
    """Each folder is readable on its own: a README line, the project, recipe and expectation."""
    assert len(CASES) >= 14
    for case in CASES:
        readme = (case.folder / "README.md").read_text().strip()
        assert readme, case.name
        assert case.project.is_dir(), case.name
        assert set(case.expect) <= {"capture", "run", "verify", "xfail", "post-install"}, (
            case.name,
            sorted(case.expect),
        )
        for reason in case.expect.get("xfail", {}).values():
            assert re.search(r"issue 10 point \d+", reason), (case.name, reason)
