"""The pure half of ``reprobox verify``: captured environment against the observed fingerprint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


from reprobox import payload
from reprobox.diff import describe_source
from reprobox.model import Environment, Interpreter, Package, PackageSource, SystemPackage
from reprobox.verify import (
    Observed,
    VerifyReport,
    compare_environments,
    parse_dpkg_list,
)
from reprobox.render import verify_text

from ..conftest import require_tool

INTERP = Interpreter(
    "cpython", "3.11.7", abi="cp311", soabi="cpython-311-x86_64-linux-gnu", platform="linux-x86_64"
)


def _pkgs() -> tuple[Package, ...]:
    return (
        Package("numpy", "1.26.4"),
        Package("scikit-learn", "1.4.2", display_name="scikit_learn"),
        Package(
            "mylib",
            "0.1.0",
            PackageSource("directory", path="src/mylib", editable=True, in_repo=True),
        ),
        Package(
            "tool",
            "2.0",
            PackageSource("vcs", url="https://example.org/tool.git", vcs="git", commit="a" * 40),
        ),
    )


def _env(**kw) -> Environment:
    base = dict(
        interpreter=INTERP,
        packages=_pkgs(),
        system_packages=(
            SystemPackage("libgomp1", "12.2.0-14", libraries=("libgomp.so.1",)),
            SystemPackage("libc6", "2.36-9+deb12u4"),
        ),
    )
    base.update(kw)
    return Environment(**base)


def _observed(**kw) -> Observed:
    base = dict(
        interpreter=INTERP,
        packages=_pkgs(),
        system_packages={"libgomp1": "12.2.0-14", "libc6": "2.36-9+deb12u4", "bash": "5.2"},
    )
    base.update(kw)
    return Observed(**base)


def test_identical_environment_has_no_difference():
    assert compare_environments(_env(), _observed()) == ()


def test_interpreter_version_difference_is_named():
    obs = _observed(
        interpreter=Interpreter(
            "cpython", "3.11.9", abi="cp311", soabi="cpython-311-x86_64-linux-gnu"
        )
    )
    diffs = compare_environments(_env(), obs)
    assert [d.message for d in diffs] == ["interpreter version: captured 3.11.7, rebuilt 3.11.9"]


def test_unknown_interpreter_fields_are_not_differences():
    obs = _observed(interpreter=Interpreter("cpython", "3.11.7"))
    assert compare_environments(_env(), obs) == ()


def test_every_package_difference_is_reported():
    observed_pkgs = (
        Package("numpy", "2.0.0"),  # version
        # scikit-learn missing
        Package(
            "mylib",
            "0.1.0",
            PackageSource("directory", path="src/mylib", editable=False, in_repo=True),
        ),  # not editable any more
        Package(
            "tool",
            "2.0",
            PackageSource("vcs", url="https://example.org/tool.git", vcs="git", commit="b" * 40),
        ),  # other commit
        Package("setuptools", "65.5.0"),  # extra
    )
    diffs = compare_environments(_env(), _observed(packages=observed_pkgs))
    text = [d.message for d in diffs]
    assert "package numpy: captured 1.26.4, rebuilt 2.0.0" in text
    assert "package scikit_learn 1.4.2 is missing from the rebuilt environment" in text
    assert any(
        "mylib comes from elsewhere" in t
        and "editable directory src/mylib of the repository" in t
        and "rebuilt from directory src/mylib of the repository" in t
        for t in text
    )
    assert any("tool comes from elsewhere" in t and "@" + "b" * 40 in t for t in text)
    assert (
        "package setuptools 65.5.0 is in the rebuilt environment but was not in the captured one"
    ) in text
    assert len(diffs) == 5


def test_system_packages_missing_or_other_version():
    obs = _observed(system_packages={"libc6": "2.36-9+deb12u7"})
    msgs = [d.message for d in compare_environments(_env(), obs)]
    assert msgs == [  # in the environment's order: by name
        "system package libc6: captured 2.36-9+deb12u4, rebuilt 2.36-9+deb12u7",
        (
            "system package libgomp1 12.2.0-14 is not installed in the rebuilt environment "
            "(it provides libgomp.so.1)"
        ),
    ]


def test_no_package_manager_in_the_rebuilt_environment_is_a_difference():
    diffs = compare_environments(_env(), _observed(system_packages=None))
    assert len(diffs) == 1 and "cannot be confirmed" in diffs[0].message
    # ...but not when the capture depended on no system package.
    assert compare_environments(_env(system_packages=()), _observed(system_packages=None)) == ()


def test_describe_source_forms():
    assert describe_source(PackageSource("index")) == "index"
    assert describe_source(PackageSource("archive", url="https://x/y.whl", hash="sha256=ab")) == (
        "archive https://x/y.whl (sha256=ab)"
    )
    vcs = PackageSource("vcs", vcs="git", url="https://x/r", commit="c" * 40, subdirectory="py")
    assert describe_source(vcs) == f"git+https://x/r@{'c' * 40}#subdirectory=py"


DPKG_OUTPUT = "bash\t5.2.15-2+b2\tii \nlibc6:amd64\t2.36-9+deb12u4\tii \noldpkg\t1.0\trc \n\n"


def test_parse_dpkg_list_keeps_installed_packages_only():
    assert parse_dpkg_list(DPKG_OUTPUT) == {"bash": "5.2.15-2+b2", "libc6": "2.36-9+deb12u4"}


def test_parse_dpkg_list_on_this_machine():
    """The same format string the driver runs, on this machine's real dpkg database."""
    require_tool("dpkg-query", "dpkg (a Debian-family system)")
    from reprobox.verify import _DPKG_FORMAT

    fmt = _DPKG_FORMAT.encode().decode("unicode_escape")
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", fmt], capture_output=True, text=True, check=True
    ).stdout
    parsed = parse_dpkg_list(out)
    assert "dpkg" in parsed and parsed["dpkg"][0].isdigit()


def test_report_json_and_text():
    diffs = compare_environments(_env(), _observed(packages=_pkgs()[:3]))
    report = VerifyReport(
        experiment_id="0123456789ab",
        experiment_name="train",
        backend="venv",
        backend_reason="--backend venv",
        environment="virtualenv /x",
        expected_digest="sha256:00",
        differences=diffs,
        packages_checked=4,
        system_packages_checked=2,
        interpreter="cpython 3.11.7",
    )
    assert not report.identical
    data = json.loads(json.dumps(report.to_dict()))
    assert data["schema"] == "reprobox.verify/1"
    assert data["verdict"] == "differs"
    assert data["differences"][0]["subject"] == "tool"
    text = verify_text(report)
    assert text.startswith("DIFFERS")
    assert "package tool 2.0 is missing" in text


def test_probe_output_of_a_real_interpreter_compares_equal_to_itself(tmp_path: Path):
    """Parse the real probe run against this interpreter twice: no difference with itself."""
    from reprobox.capture.python import parse_probe

    probe = payload.script("probe")
    raw = json.loads(
        subprocess.run(
            [sys.executable, "-I", str(probe), "--no-native"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    result = parse_probe(raw, tmp_path)
    env = Environment(interpreter=result.interpreter, packages=tuple(result.packages))
    obs = Observed(interpreter=result.interpreter, packages=tuple(result.packages))
    assert compare_environments(env, obs) == ()
    # Remove one real package from the observation: exactly that one is reported.
    gone = result.packages[0]
    obs2 = Observed(interpreter=result.interpreter, packages=tuple(result.packages[1:]))
    diffs = compare_environments(env, obs2)
    assert [d.subject for d in diffs] == [gone.name]
