"""``reprobox record -- python job.py`` for real: the job loads libmagic (Debian's libmagic1)
through ctypes, as python-magic does. The record names the library and its OS package, the
package joins the environment's system packages, and a fresh clone reruns the job in a rebuilt
image (whose base lacks libmagic1) and verifies it. The repository's own, inactive virtualenv is
used when nothing else names an interpreter.

Markers: ``docker``, ``network``, ``slow``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ..factories import (
    commit,
    make_venv,
    new_repo,
    publish_and_clone,
    reprobox,
    reprobox_exe,
    run_json,
    sh,
)
from .test_run_e2e import (  # noqa: F401 - base_image and the image clean-up are fixtures
    _remove_built_images,
    base_image,
    remove_images,
)

pytestmark = [pytest.mark.slow]

JOB = """\
import ctypes
import ctypes.util
import json
import sys

path = ctypes.util.find_library("magic")
lib = ctypes.CDLL(path)
lib.magic_version.restype = ctypes.c_int
lib.magic_open.restype = ctypes.c_void_p
lib.magic_open.argtypes = [ctypes.c_int]
lib.magic_load.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
lib.magic_buffer.restype = ctypes.c_char_p
lib.magic_buffer.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
cookie = lib.magic_open(0x10)  # MAGIC_MIME_TYPE
if lib.magic_load(cookie, None) != 0:
    sys.exit("no magic database")
data = b"%PDF-1.4 hello"
kind = lib.magic_buffer(cookie, data, len(data)).decode()
with open("metrics.json", "w") as f:
    json.dump({"magic_version": lib.magic_version(), "pdf_is_pdf": kind == "application/pdf"}, f)
print(kind)
"""


@pytest.fixture(scope="module")
def plain_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_venv(tmp_path_factory.mktemp("venvs") / "plain")


def _libmagic_installed() -> bool:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status}", "libmagic1"],
        capture_output=True,
        text=True,
        check=False,
    )
    return "ok installed" in done.stdout


@pytest.mark.docker
@pytest.mark.network
def test_a_ctypes_library_is_recorded_installed_and_the_rerun_works(
    tmp_path: Path, plain_venv: Path, base_image: str
):  # noqa: F811
    from ..conftest import require

    require(_libmagic_installed(), "Debian's libmagic1 (scripts/setup.sh installs it)")
    repo = new_repo(tmp_path / "project", {"job.py": JOB, ".gitignore": "metrics.json\n"})
    done = reprobox(
        repo,
        "record",
        "--json",
        "--metrics",
        "metrics.json",
        "--",
        "python",
        "job.py",
        venv=plain_venv,
    )
    data = json.loads(done.stdout)
    assert data["exit_status"] == 0
    folder = repo / ".reprobox" / "experiments" / data["id"]
    exp = json.loads((folder / "experiment.json").read_text())
    env = json.loads((folder / "environment.json").read_text())
    assert exp["command"] == "python job.py"
    run = exp["run"]
    assert run["exit_status"] == 0 and run["source"] == "recorded" and run["processes"] == 1
    assert run["wall_seconds"] > 0 and run["peak_memory_kib"] > 0
    assert any(
        lib["name"].startswith("libmagic.so") and lib["owner"] == "system:libmagic1"
        for lib in run["libraries"]
    ), run["libraries"]
    assert "<repo>" in run["modules"]
    assert "libmagic1" in {s["name"] for s in env["system_packages"]}
    assert json.loads((repo / "metrics.json").read_text())["pdf_is_pdf"] is True
    commit(repo, "reprobox record", ".reprobox")

    clone = publish_and_clone(repo, tmp_path)
    remove_images(data["id"])
    status, report, stderr = run_json(clone, data["id"], "--backend", "docker")
    assert status == 0, (report["differences"], stderr[-3000:])
    assert report["verdict"] == "reproduced"
    assert {m["key"]: m["status"] for m in report["metrics"]} == {
        "magic_version": "same",
        "pdf_is_pdf": "same",
    }
    done = reprobox(clone, "verify", data["id"], "--backend", "docker", "--json", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["identical"] is True


@pytest.mark.docker
@pytest.mark.network
def test_a_rerun_whose_status_differs_from_the_recorded_one_is_named(
    tmp_path: Path, plain_venv: Path, base_image: str
):  # noqa: F811  # noqa: F811
    job = "import os, sys\nsys.exit(0 if os.path.exists('flag') else 4)\n"
    repo = new_repo(tmp_path / "project", {"job.py": job, ".gitignore": "flag\n"})
    (repo / "flag").write_text("")
    data = json.loads(
        reprobox(repo, "record", "--json", "--", "python", "job.py", venv=plain_venv).stdout
    )
    assert data["exit_status"] == 0
    commit(repo, "reprobox record", ".reprobox")
    clone = publish_and_clone(repo, tmp_path)  # no flag there: the rerun exits 4
    remove_images(data["id"])
    status, report, _ = run_json(clone, data["id"], "--backend", "docker")
    assert status == 1 and report["verdict"] != "reproduced"
    assert report["differences"][0].startswith("the command exited with status 4")
    assert "recorded run exited with status 0" in report["differences"][0]


@pytest.mark.network
def test_the_repositorys_inactive_venv_is_recorded(tmp_path: Path):
    repo = new_repo(
        tmp_path / "project",
        {"job.py": "import six\nprint(six.__version__)\n", ".gitignore": ".venv/\n"},
    )
    venv = make_venv(repo / ".venv", "six==1.16.0")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    # reprobox runs from its own interpreter; `python` on PATH is not the project's venv
    done = sh(
        repo, reprobox_exe(), "record", "--no-lock", "--json", "--", "python", "job.py", env=env
    )
    data = json.loads(done.stdout)
    assert data["exit_status"] == 0  # the command ran in the venv: six imported
    assert data["interpreter"].startswith(str(venv))
    assert "using the repository's virtualenv .venv" in done.stderr
    exp = json.loads(
        (repo / ".reprobox" / "experiments" / data["id"] / "experiment.json").read_text()
    )
    assert exp["run"]["modules"]["six"] == ["six"]
    stored = json.loads(
        (repo / ".reprobox" / "experiments" / data["id"] / "environment.json").read_text()
    )
    assert "six" in {p["name"] for p in stored["packages"]}
    shown = sh(repo, reprobox_exe(), "show", data["id"], env=env).stdout
    assert "exit status 0 (recorded)" in shown and "peak" in shown
    # `diff EXP` compares against the interpreter a capture would record: the same venv
    # (it compared against reprobox's own interpreter: a hundred packages "added")
    diffed = json.loads(
        sh(repo, reprobox_exe(), "diff", data["id"], "--format", "json", env=env).stdout
    )
    assert diffed["empty"] is True, diffed["packages"]
    # A second venv makes the choice ambiguous: exit 2, naming both, asking for --python.
    make_venv(repo / "venv")
    done = sh(repo, reprobox_exe(), "capture", "--no-lock", env=env, check=False)
    assert done.returncode == 2
    assert ".venv" in done.stderr and "venv" in done.stderr and "--python" in done.stderr


def test_capture_states_an_exit_status_and_record_runs_nothing_without_a_command(git_repo):
    done = subprocess.run(
        [reprobox_exe(), "record", "--no-lock"],
        cwd=git_repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "ARGV" in done.stderr.upper()
    done = subprocess.run(
        [reprobox_exe(), "capture", "--no-lock", "--exit-status", "300"],
        cwd=git_repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "--exit-status 300" in done.stderr
    assert not (git_repo / ".reprobox" / "experiments").exists() or not any(
        (git_repo / ".reprobox" / "experiments").iterdir()
    )
    done = subprocess.run(
        [reprobox_exe(), "capture", "--no-lock", "--json", "--cmd", "true", "--exit-status", "2"],
        cwd=git_repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["exit_status"] == 2
    exp = json.loads((Path(data["path"]) / "experiment.json").read_text())
    assert exp["run"]["exit_status"] == 2 and exp["run"]["source"] == "declared"
    assert exp["run"]["libraries"] == [] and exp["run"]["wall_seconds"] is None


HOSTILE_JOB = """\
import ctypes, json, os, pathlib, sys
mode = sys.argv[1]
out = pathlib.Path(os.environ.get("REPROBOX_RECORD_DIR", "."))
if mode == "reports":  # the command can write where the payload reports
    (out / "zz-deep.json").write_text('{"version": 1, "x": ' + "[" * 200000 + "]" * 200000 + "}")
    (out / "zz-shape.json").write_text(
        json.dumps({"version": 1, "maps": "notalist", "modules": ["a"], "dlopen": {"a": 1}})
    )
elif mode == "names":  # library names no record holds: too long, a newline
    for name in ("/opt/" + "deep/" * 60 + "libfoo.so", "lib\\nbar.so"):
        try:
            ctypes.CDLL(name)
        except OSError:
            pass
elif mode == "selfmod":  # the code changes while it runs
    json.dump({"acc": 0.5}, open("metrics.json", "w"))
    src = pathlib.Path(__file__)
    src.write_text(src.read_text().replace("0.5}", "0.7}"))
elif mode == "marker":
    pathlib.Path("ran.txt").write_text("ran")
"""


def test_record_keeps_its_record_whatever_the_command_writes_or_loads(tmp_path: Path):
    """The command ran; then its own files in the report folder (a deep JSON, reports of the
    wrong shape), library names a record cannot hold, or a non-UTF-8 TZ made the record an
    internal error or a refusal, and the run was lost."""
    repo = new_repo(tmp_path / "project", {"job.py": HOSTILE_JOB, ".gitignore": ".venv/\n"})
    make_venv(repo / ".venv")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    for mode, extra in (("reports", {}), ("names", {}), ("marker", {"TZ": "\udcff\udcfe"})):
        argv = [reprobox_exe(), "record", "--no-lock", "--json", "--", "python", "job.py", mode]
        done = subprocess.run(
            [os.fsencode(a) for a in argv],
            cwd=repo,
            env={os.fsencode(k): os.fsencode(v) for k, v in {**env, **extra}.items()},
            capture_output=True,
            check=False,
        )
        err = done.stderr.decode(errors="replace")
        assert done.returncode == 0, (mode, err)
        assert "internal error" not in err and "Traceback" not in err
        if mode == "names":
            assert "left out of the record" in err
        data = json.loads(done.stdout)
        exp = json.loads(
            (repo / ".reprobox" / "experiments" / data["id"] / "experiment.json").read_text()
        )
        assert "TZ" not in exp.get("env", {})


def test_record_reads_the_code_as_it_ran_and_refuses_before_running(tmp_path: Path):
    repo = new_repo(tmp_path / "project", {"job.py": HOSTILE_JOB, ".gitignore": ".venv/\n"})
    make_venv(repo / ".venv")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    # what the record would refuse after the run is refused before it: the command never runs
    for bad, named in (
        (["--metrics", "/etc/passwd"], "outside the repository"),
        (["--name", "bad\nname"], "--name"),
        (["--output", "."], "the repository itself"),
    ):
        done = sh(
            repo,
            reprobox_exe(),
            "record",
            "--no-lock",
            *bad,
            "--",
            "python",
            "job.py",
            "marker",
            env=env,
            check=False,
        )
        assert done.returncode == 2 and "internal error" not in done.stderr, (bad, done.stderr)
        assert named in done.stderr, (bad, done.stderr)  # what was refused, named
        assert not (repo / "ran.txt").exists(), bad
    # a script that rewrites itself: the record holds the code that ran (no patch: clean tree)
    done = sh(
        repo,
        reprobox_exe(),
        "record",
        "--no-lock",
        "--json",
        "--metrics",
        "metrics.json",
        "--",
        "python",
        "job.py",
        "selfmod",
        env=env,
    )
    data = json.loads(done.stdout)
    folder = repo / ".reprobox" / "experiments" / data["id"]
    exp = json.loads((folder / "experiment.json").read_text())
    assert exp["metrics"]["metrics.json"] == {"acc": 0.5}
    assert not exp["git"]["dirty"] and not (folder / "patch.diff").exists()


MUTATING_JOB = """\
import json, os, sys
import six
json.dump({"six": six.__version__}, open("metrics.json", "w"))
if not sys.prefix.startswith(os.path.abspath(".venv")):  # a rebuilt venv: break it
    os.remove(six.__file__)
"""


@pytest.mark.network
def test_a_venv_a_run_changed_is_rebuilt_not_reused(tmp_path: Path):
    """The second run reused the venv the first had broken (six.py deleted): ModuleNotFoundError,
    DIFFERS, for every experiment of the same environment."""
    repo = new_repo(tmp_path / "project", {"job.py": MUTATING_JOB, ".gitignore": ".venv/\n"})
    make_venv(repo / ".venv", "six==1.16.0")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env.pop("REPROBOX_VENV_DIR", None)
    done = sh(
        repo,
        reprobox_exe(),
        "record",
        "--json",
        "--metrics",
        "metrics.json",
        "--",
        "python",
        "job.py",
        env=env,
    )
    exp_id = json.loads(done.stdout)["id"]
    commit(repo, "record")
    for attempt in range(2):
        done = sh(
            repo,
            reprobox_exe(),
            "run",
            exp_id,
            "--backend",
            "venv",
            "--json",
            env=env,
            check=False,
        )
        assert done.returncode == 0, (attempt, done.stdout, done.stderr)
        assert json.loads(done.stdout)["reproduced"] is True
    assert "was changed since it was last prepared: rebuilding" in done.stderr


def test_sigterm_to_record_ends_the_command_and_leaves_nothing(tmp_path: Path):
    """`timeout -s TERM` on record killed reprobox alone: the command went on, and the
    payload's temporary folder stayed behind."""
    import signal
    import time

    repo = new_repo(tmp_path / "project", {"job.py": "import time\ntime.sleep(60)\n"})
    make_venv(repo / ".venv")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    env["TMPDIR"] = str(scratch)
    proc = subprocess.Popen(
        [reprobox_exe(), "record", "--no-lock", "--", "python", "job.py"],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)  # reprobox has started the command, which sleeps for a minute
    proc.send_signal(signal.SIGTERM)
    try:
        _out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("record did not end on SIGTERM") from None
    assert proc.returncode == 130 and "interrupted" in err, err
    assert list(scratch.iterdir()) == []  # the payload's folder is gone
    experiments = repo / ".reprobox" / "experiments"
    assert not experiments.exists() or not any(experiments.iterdir())


@pytest.mark.network
def test_record_describes_the_interpreter_the_command_ran(tmp_path: Path):
    """`record -- /elsewhere/venv/bin/python job.py` with no venv active: the capture probed
    `python` on PATH and recorded its packages, not those of the venv the command ran. Now the
    environment the command ran is recorded, and so is a command a rerun can run: the program
    is that environment's interpreter, which a rerun finds as `python` (the rebuilt environment
    comes first on its PATH), so the record says `python job.py` and the rerun reproduces."""
    job = "import six\nprint(six.__version__)\n"
    repo = new_repo(tmp_path / "project", {"job.py": job})
    (tmp_path / "elsewhere").mkdir()
    outside = make_venv(tmp_path / "elsewhere" / "venv", "six==1.16.0")
    python = str(outside / "bin" / "python")

    done = reprobox(repo, "record", "--json", "--", python, "job.py")
    data = json.loads(done.stdout)
    assert f"the command ran {python}, not" in done.stderr
    assert "recording the command as `python job.py`" in done.stderr
    exp_dir = repo / ".reprobox" / "experiments" / data["id"]
    env = json.loads((exp_dir / "environment.json").read_text())
    assert env["interpreter"]["executable"] == python
    assert "six" in {p["name"] for p in env["packages"]}
    assert json.loads((exp_dir / "experiment.json").read_text())["command"] == "python job.py"
    assert not [w for w in data["warnings"] if "the command's program" in w]

    commit(repo, "the record")
    done = reprobox(repo, "run", data["id"], "--backend", "venv", check=False)
    assert done.returncode == 0 and "REPRODUCED" in done.stdout, done.stdout + done.stderr

    # The same environment named with --python, the command by its name: the same record.
    done = reprobox(
        repo, "record", "--no-lock", "--json", "--python", python, "--", "python", "job.py"
    )
    data = json.loads(done.stdout)
    assert not [
        w for w in data["warnings"] if "the command's program" in w or "Python processes" in w
    ]
    assert "probing it instead" not in done.stderr
    env = json.loads(
        (repo / ".reprobox" / "experiments" / data["id"] / "environment.json").read_text()
    )
    assert env["interpreter"]["executable"] == python
    assert "six" in {p["name"] for p in env["packages"]}


def test_an_ignored_venv_named_as_the_program(tmp_path: Path):
    """The repository's own venv, ignored by git, named as the command's program: the rerun's
    clone has no such file. When it is the recorded environment's interpreter the record names
    it as a rerun finds it; when `--python` records another environment, the warning names
    the fix. A program's path is looked up in git literally: `tools/[ab].sh`, not committed, is
    not taken for the committed `tools/a.sh` it matches as a pattern."""
    repo = new_repo(
        tmp_path / "project",
        {
            "job.py": "print('ok')\n",
            # ignored: an untracked path with "[" would be refused by the record itself
            ".gitignore": ".venv/\nother/\ntools/\\[ab\\].sh\n",
            "tools/a.sh": "echo a\n",
        },
    )
    make_venv(repo / ".venv")
    done = reprobox(repo, "record", "--no-lock", "--json", "--", ".venv/bin/python3", "job.py")
    data = json.loads(done.stdout)
    assert not [w for w in data["warnings"] if "the command's program" in w]
    exp = json.loads(
        (repo / ".reprobox" / "experiments" / data["id"] / "experiment.json").read_text()
    )
    assert exp["command"] == "python3 job.py"

    other = make_venv(repo / "other")
    done = reprobox(
        repo,
        "record",
        "--no-lock",
        "--json",
        "--python",
        str(other / "bin" / "python"),
        "--",
        ".venv/bin/python",
        "job.py",
    )
    data = json.loads(done.stdout)
    (warning,) = [w for w in data["warnings"] if "the command's program" in w]
    assert ".venv/bin/python is not committed" in warning
    assert "--python .venv/bin/python -- python job.py" in warning
    exp = json.loads(
        (repo / ".reprobox" / "experiments" / data["id"] / "experiment.json").read_text()
    )
    assert exp["command"] == ".venv/bin/python job.py"

    script = repo / "tools" / "[ab].sh"
    script.write_text("#!/bin/sh\necho ab\n")
    script.chmod(0o755)
    done = reprobox(repo, "record", "--no-lock", "--json", "--", "tools/[ab].sh")
    (warning,) = [w for w in json.loads(done.stdout)["warnings"] if "the command's program" in w]
    assert "tools/[ab].sh is not committed" in warning and "commit it" in warning
    sh(repo, "git", "add", "-f", "--", ":(literal)tools/[ab].sh")
    commit(repo, "the script")
    done = reprobox(repo, "record", "--no-lock", "--json", "--", "tools/[ab].sh")
    assert not [w for w in json.loads(done.stdout)["warnings"] if "the command's program" in w]


def test_an_interpreter_that_ran_but_cannot_be_probed_leaves_the_record_whole(tmp_path: Path):
    """The command's only report names an "interpreter" that is no Python (here a report the
    command wrote itself, naming /bin/false): the probe of it fails after the command ran, and
    the record is kept, describing the interpreter reprobox chose, with a warning saying why."""
    report = {
        "version": 1,
        "executable": "/bin/false",
        "prefix": str(tmp_path / "no-such-env"),
        "modules": {},
        "maps": [],
        "dlopen": [],
    }
    script = f"printf '%s' '{json.dumps(report)}' > \"$REPROBOX_RECORD_DIR/run-1.json\"\n"
    repo = new_repo(tmp_path / "project", {"job.sh": script})
    done = reprobox(repo, "record", "--no-lock", "--json", "--", "sh", "job.sh")
    data = json.loads(done.stdout)
    assert data["exit_status"] == 0
    assert "the command ran /bin/false, not" in done.stderr
    (warning,) = [w for w in data["warnings"] if "could not be probed" in w]
    assert warning.startswith("the command ran /bin/false, which could not be probed (")
    env = json.loads(
        (repo / ".reprobox" / "experiments" / data["id"] / "environment.json").read_text()
    )
    assert env["interpreter"]["executable"] != "/bin/false"
    assert env["packages"] is not None


@pytest.mark.network
def test_a_launcher_from_another_environment_is_named_the_script_s_environment_recorded(
    tmp_path: Path,
):
    """As `poetry run python job.py` does: a launcher running from an environment of its own
    starts the project's interpreter on the project's script. The project's environment is
    recorded (the one that ran a script of the repository), the launcher's named."""
    repo = new_repo(tmp_path / "project", {"job.py": "import six\nprint(six.__version__)\n"})
    (tmp_path / "tools").mkdir()
    launcher_env = make_venv(tmp_path / "tools" / "launcher")
    launcher = tmp_path / "tools" / "launch.py"
    launcher.write_text("import subprocess, sys\nsys.exit(subprocess.call(sys.argv[1:]))\n")
    project_env = make_venv(tmp_path / "tools" / "project-env", "six==1.16.0")
    done = reprobox(
        repo,
        "record",
        "--no-lock",
        "--json",
        "--",
        str(launcher_env / "bin" / "python"),
        str(launcher),
        str(project_env / "bin" / "python"),
        "job.py",
    )
    data = json.loads(done.stdout)
    assert data["exit_status"] == 0
    env = json.loads(
        (repo / ".reprobox" / "experiments" / data["id"] / "environment.json").read_text()
    )
    assert env["interpreter"]["executable"] == str(project_env / "bin" / "python")
    assert "six" in {p["name"] for p in env["packages"]}
    assert (
        f"the command also ran {launcher_env / 'bin' / 'python'}: the record holds the packages "
        f"of {project_env / 'bin' / 'python'} only"
    ) in data["warnings"]


@pytest.mark.docker
@pytest.mark.network
def test_a_console_script_of_the_recorded_venv_reruns_in_a_container(
    tmp_path: Path, base_image: str
):  # noqa: F811
    """`record -- .venv/bin/job-cli`: the project's own console script, in a virtualenv the
    checkout ignores. The clone has no `.venv`; the rebuilt image installs the project and its
    script. The record names the script as the image finds it, and the rerun reproduces."""
    repo = new_repo(
        tmp_path / "project",
        {
            "pyproject.toml": (
                '[project]\nname = "jobpkg"\nversion = "0.1.0"\ndependencies = ["six==1.16.0"]\n'
                '[project.scripts]\njob-cli = "job:main"\n'
                '[tool.setuptools]\npy-modules = ["job"]\n'
                '[build-system]\nrequires = ["setuptools>=61"]\n'
                'build-backend = "setuptools.build_meta"\n'
            ),
            "job.py": (
                "import json, six\n\ndef main():\n"
                "    json.dump({'six': six.__version__}, open('metrics.json', 'w'))\n"
            ),
            ".gitignore": ".venv/\n*.egg-info/\nbuild/\nmetrics.json\n",
        },
    )
    make_venv(repo / ".venv", editable=repo)
    done = reprobox(
        repo, "record", "--json", "--metrics", "metrics.json", "--", ".venv/bin/job-cli"
    )
    data = json.loads(done.stdout)
    assert "`job-cli`: .venv/bin/job-cli is a script of jobpkg" in done.stderr, done.stderr
    assert not [w for w in data["warnings"] if "the command's program" in w]
    folder = repo / ".reprobox" / "experiments" / data["id"]
    assert json.loads((folder / "experiment.json").read_text())["command"] == "job-cli"
    commit(repo, "reprobox record", ".reprobox")

    clone = publish_and_clone(repo, tmp_path)
    assert not (clone / ".venv").exists()
    remove_images(data["id"])
    status, report, stderr = run_json(clone, data["id"], "--backend", "docker")
    assert status == 0, (report["differences"], stderr[-3000:])
    assert {m["key"]: m["status"] for m in report["metrics"]} == {"six": "same"}
