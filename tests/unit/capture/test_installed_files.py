"""Installed-file integrity: the probe's RECORD check, the model record, verify's comparison."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reprobox.payload import probe
from reprobox.capture.python import installed_changes
from reprobox.model import Environment, InstalledChange, Interpreter, Package
from reprobox.verify import Observed, compare_environments, compare_installed_files

from ...asserts import refuses
from ...factories import in_probe

INTERP = Interpreter("cpython", "3.11.7", abi="cp311")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_dist(site: Path, name: str, files: dict[str, bytes]) -> dict:
    """A dist-info with a RECORD listing ``files`` (written), as pip installs it."""
    rows = []
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
        rows.append(f"{rel},sha256={_b64(data)},{len(data)}")
    meta = site / f"{name}-1.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n\n")
    rows += [
        f"{meta.name}/METADATA,,",
        f"{meta.name}/RECORD,,",
        f"../../../bin/{name},sha256={_b64(b'x')},1",
    ]
    (meta / "RECORD").write_text("\n".join(rows) + "\n")
    # installed a while ago: every later change is newer than the RECORD
    for folder, subdirs, names in os.walk(site):
        for n in names + subdirs:
            os.utime(Path(folder) / n, ns=(10**18, 10**18))
    os.utime(meta / "RECORD", ns=(10**18 + 10**9, 10**18 + 10**9))
    return {
        "name": name,
        "metadata_dir": str(meta),
        "site": str(site),
        "format": "dist-info",
        "has_record": True,
    }


@pytest.fixture(autouse=True, params=["dir_fd", "full path"])
def _lookup(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every check runs both ways the probe looks files up: from a descriptor of the site
    (``os.stat(rel, dir_fd=...)``) and, where that is not to be had, by the full path."""
    if request.param == "full path":
        monkeypatch.setattr(probe, "_site_fd", lambda site: None)
    return request.param


def _changes(site: Path, dists: list[dict], **kw) -> dict:
    return probe.installed_file_changes(dists, [str(site)], probe.ProbeCache(None), **kw)


def _touch_later(path: Path, record: Path) -> None:
    st = record.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10 * 10**9))


def test_an_untouched_install_has_no_change(tmp_path: Path):
    site = tmp_path / "site"
    d = make_dist(site, "demo", {"demo/__init__.py": b"x = 1\n", "demo/data.json": b"{}"})
    (site / "demo" / "__pycache__").mkdir()
    (site / "demo" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"\0" * 10)
    assert _changes(site, [d]) == {}


def test_a_changed_size_is_a_modified_file_with_its_hash_and_text(tmp_path: Path):
    site = tmp_path / "site"
    d = make_dist(site, "demo", {"demo/__init__.py": b"x = 1\n", "demo/util.py": b"y = 2\n"})
    (site / "demo" / "util.py").write_bytes(b"y = 2  # patched\n")
    out = _changes(site, [d])[d["metadata_dir"]]["changes"]
    assert [(c["path"], c["change"]) for c in out] == [("demo/util.py", "modified")]
    assert out[0]["sha256"] == hashlib.sha256(b"y = 2  # patched\n").hexdigest()
    assert out[0]["text"] == "y = 2  # patched\n"


def test_same_size_is_hashed_only_when_touched_after_the_record(tmp_path: Path):
    site = tmp_path / "site"
    d = make_dist(site, "demo", {"demo/__init__.py": b"x = 1\n"})
    target = site / "demo" / "__init__.py"
    record = Path(d["metadata_dir"]) / "RECORD"
    st = target.stat()
    target.write_bytes(b"x = 2\n")  # same size
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime kept: not hashed by default
    assert _changes(site, [d]) == {}
    # --hash-all hashes every file of the recorded size
    assert (
        _changes(site, [d], hash_all=True)[d["metadata_dir"]]["changes"][0]["change"] == "modified"
    )
    _touch_later(target, record)
    out = _changes(site, [d])[d["metadata_dir"]]["changes"]
    assert [(c["path"], c["change"]) for c in out] == [("demo/__init__.py", "modified")]


def test_touched_but_same_content_is_not_a_change(tmp_path: Path):
    site = tmp_path / "site"
    d = make_dist(site, "demo", {"demo/__init__.py": b"x = 1\n"})
    _touch_later(site / "demo" / "__init__.py", Path(d["metadata_dir"]) / "RECORD")
    assert _changes(site, [d]) == {}


def test_missing_and_added_files_outside_pycache(tmp_path: Path):
    site = tmp_path / "site"
    d = make_dist(site, "demo", {"demo/__init__.py": b"x = 1\n", "demo/sub/a.py": b"a\n"})
    (site / "demo" / "sub" / "a.py").unlink()
    (site / "demo" / "sub" / "plugin.py").write_bytes(b"print('hi')\n")
    (site / "demo" / "sub" / "__pycache__").mkdir()
    (site / "demo" / "sub" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (site / "unrelated.py").write_text("z = 1\n")  # not in a package folder of a RECORD
    out = _changes(site, [d])[d["metadata_dir"]]["changes"]
    assert [(c["path"], c["change"]) for c in out] == [
        ("demo/sub/a.py", "missing"),
        ("demo/sub/plugin.py", "added"),
    ]


def test_a_site_reached_through_a_link_is_checked_as_its_target(tmp_path: Path):
    site = tmp_path / "site"
    d = make_dist(site, "demo", {"demo/__init__.py": b"x = 1\n", "demo/util.py": b"y = 2\n"})
    (site / "demo" / "util.py").write_bytes(b"y = 2  # patched\n")
    (site / "demo" / "__init__.py").unlink()
    link = tmp_path / "link-to-site"
    link.symlink_to(site, target_is_directory=True)
    linked = dict(d, site=str(link), metadata_dir=str(link / Path(d["metadata_dir"]).name))
    out = _changes(link, [linked])[linked["metadata_dir"]]["changes"]
    assert [(c["path"], c["change"]) for c in out] == [
        ("demo/__init__.py", "missing"),
        ("demo/util.py", "modified"),
    ]


def test_the_site_descriptors_are_closed(
    tmp_path: Path, _lookup: str, monkeypatch: pytest.MonkeyPatch
):
    site = tmp_path / "site"
    d = make_dist(site, "demo", {"demo/__init__.py": b"x = 1\n"})
    opened: list[int] = []
    real = probe._site_fd

    def counting(path: str):
        fd = real(path)
        if fd is not None:
            opened.append(fd)
        return fd

    monkeypatch.setattr(probe, "_site_fd", counting)
    assert _changes(site, [d]) == {}
    assert len(opened) == (1 if _lookup == "dir_fd" else 0)
    for fd in opened:  # closed: its number is free, or names something else by now
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        assert target != str(site)


def test_a_namespace_folder_shared_by_two_distributions_is_not_added(tmp_path: Path):
    site = tmp_path / "site"
    a = make_dist(site, "ns-a", {"ns/a/__init__.py": b"a\n"})
    b = make_dist(site, "ns-b", {"ns/b/__init__.py": b"b\n"})
    assert _changes(site, [a, b]) == {}


def test_binary_or_large_files_carry_no_text(tmp_path: Path):
    site = tmp_path / "site"
    d = make_dist(site, "demo", {"demo/lib.bin": b"\0\1", "demo/big.txt": b"a"})
    (site / "demo" / "lib.bin").write_bytes(b"\0\1\2")
    (site / "demo" / "big.txt").write_bytes(b"a" * (probe.CARRY_CAP + 1))
    out = {c["path"]: c for c in _changes(site, [d])[d["metadata_dir"]]["changes"]}
    assert "text" not in out["demo/lib.bin"] and "text" not in out["demo/big.txt"]
    assert out["demo/big.txt"]["sha256"] == hashlib.sha256(b"a" * (probe.CARRY_CAP + 1)).hexdigest()


def test_the_probe_reports_changes_of_a_real_pip_install(tmp_path: Path):
    """The probe run as a script in a real venv: pip's RECORD, a file patched after install."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    make_dist(site, "demo", {"demo/__init__.py": b"VALUE = 1\n"})
    (site / "demo" / "__init__.py").write_bytes(b"VALUE = 12\n")
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-I", probe.__file__, "--no-native"],
        capture_output=True,
        text=True,
        check=True,
    )
    import json

    raw = json.loads(done.stdout.splitlines()[-1])
    warnings: list[str] = []
    changes, texts = installed_changes(raw["distributions"], warnings)
    assert [(c.package, c.path, c.change) for c in changes] == [
        ("demo", "demo/__init__.py", "modified")
    ]
    assert texts[("demo", "demo/__init__.py")] == "VALUE = 12\n"
    assert "demo/__init__.py (modified)" in warnings[0]


# --------------------------------------------------------------------------- model and verify


CHANGE = InstalledChange("demo", "demo/__init__.py", "modified", 11, "a" * 64)


def test_the_model_keeps_the_digest_of_environments_without_changes():
    plain = Environment(INTERP, (Package("demo", "1.0"),))
    changed = Environment(INTERP, (Package("demo", "1.0"),), installed_changes=(CHANGE,))
    assert "installed_changes" not in plain.to_dict()
    assert plain.digest != changed.digest
    again = Environment.from_dict(changed.to_dict())
    assert again.installed_changes == (CHANGE,) and again.digest == changed.digest


def test_verify_names_a_post_install_change_the_rebuild_lacks():
    env = Environment(INTERP, (Package("demo", "1.0"),), installed_changes=(CHANGE,))
    diffs = compare_environments(
        env, Observed(INTERP, (Package("demo", "1.0"),), installed_changes=())
    )
    assert [d.kind for d in diffs] == ["installed-file"]
    assert diffs[0].subject == "demo:demo/__init__.py"
    assert "modified after install" in diffs[0].message and "as installed" in diffs[0].message


def test_verify_names_a_change_only_the_rebuild_has_and_accepts_the_same_change():
    env = Environment(INTERP, (Package("demo", "1.0"),))
    diffs = compare_installed_files((), (CHANGE,))
    assert diffs[0].subject == "demo:demo/__init__.py" and diffs[0].expected == "as installed"
    assert compare_installed_files((CHANGE,), (CHANGE,)) == []
    other = InstalledChange("demo", "demo/__init__.py", "modified", 11, "b" * 64)
    assert compare_installed_files((CHANGE,), (other,))[0].observed.startswith("modified")
    assert (
        compare_environments(env, Observed(INTERP, (Package("demo", "1.0"),), installed_changes=()))
        == ()
    )


def test_unchecked_rebuild_files_are_a_difference_when_the_capture_has_changes():
    diffs = compare_installed_files((CHANGE,), None)
    assert diffs and diffs[0].subject == "*" and "could not be checked" in diffs[0].message


# --------------------------------------------------------------------------- requirement forms


def test_vcs_requirement_forms_follow_the_recorded_pip():
    from reprobox.lock.requirements import pip_accepts_at_form, url_requirement, vcs_requirement

    sha = "ab" * 20
    # remote URLs: `name @` from pip 10 on
    assert (
        vcs_requirement("tool", "https://h/tool.git", "git", sha, None, "23.2.1")
        == f"tool @ git+https://h/tool.git@{sha}"
    )
    assert (
        vcs_requirement("tool", "git+https://h/tool.git", "git", sha, "py", "9.0.3")
        == f"git+https://h/tool.git@{sha}#egg=tool&subdirectory=py"
    )
    # a repository path: pip 24.0 and older refuse `name @ git+file:///...`
    assert (
        vcs_requirement("dep", "file:///srv/dep.git", "git", sha, None, "24.0")
        == f"git+file:///srv/dep.git@{sha}#egg=dep"
    )
    assert (
        vcs_requirement("dep", "file:///srv/dep.git", "git", sha, None, "24.1")
        == f"dep @ git+file:///srv/dep.git@{sha}"
    )
    # a plain file: URL (the wheelhouse file the image installs) is taken by every pip >= 10
    assert (
        url_requirement("dep", "file:///tmp/reprobox/wheels/dep-1.tar.gz", "22.3.1")
        == "dep @ file:///tmp/reprobox/wheels/dep-1.tar.gz"
    )
    assert pip_accepts_at_form(None, "git+file:///x") and not pip_accepts_at_form("9.0", "")


def test_the_image_uses_the_egg_form_when_the_lock_installs_an_old_pip():
    from reprobox.build.render import RenderOptions, plan_image
    from reprobox.model import Experiment, GitInfo, PackageSource

    env = Environment(
        INTERP,
        (
            Package("pip", "9.0.3"),
            Package(
                "tool",
                "1.0",
                PackageSource("vcs", url="https://h/tool.git", vcs="git", commit="ab" * 20),
            ),
        ),
    )
    exp = Experiment(
        name="x",
        command="python t.py",
        cwd=".",
        git=GitInfo(commit="cd" * 20),
        environment_digest=env.digest,
        created="2026-01-01T00:00:00Z",
        tool_version="0.1.0",
    ).with_id()
    pip_plan = plan_image(
        exp, env, base_image="python:3.11.7-slim-bookworm", options=RenderOptions(installer="pip")
    )
    name = f"tool-1.0-{'ab' * 6}.tar.gz"
    assert pip_plan.direct == (f"file:///tmp/reprobox/wheels/direct/{name}#egg=tool",)
    uv_plan = plan_image(exp, env, base_image="python:3.11.7-slim-bookworm")
    assert uv_plan.direct == (f"tool @ file:///tmp/reprobox/wheels/direct/{name}",)


def test_a_local_vcs_source_without_a_sealed_file_is_refused_naming_the_package():
    from reprobox.build.render import direct_source
    from reprobox.errors import UsageError, ValidationError
    from reprobox.model import PackageSource

    pkg = Package(
        "dep", "1.0", PackageSource("vcs", url="file:///srv/dep.git", vcs="git", commit="ab" * 20)
    )
    with refuses(UsageError, names=["package dep", "file:///srv/dep.git"]):
        direct_source(pkg, "packages[dep].source")
    sealed = Package(
        "dep",
        "1.0",
        PackageSource(
            "vcs",
            url="file:///srv/dep.git",
            vcs="git",
            commit="ab" * 20,
            path=f"dep-1.0-{'ab' * 6}.tar.gz",
            hash="sha256=" + "c" * 64,
        ),
    )
    line, source = direct_source(sealed, "packages[dep].source")
    assert source.sealed == f"dep-1.0-{'ab' * 6}.tar.gz" and source.hash == "sha256=" + "c" * 64
    assert line == f"dep @ file:///tmp/reprobox/wheels/direct/dep-1.0-{'ab' * 6}.tar.gz"
    hostile = Package(
        "dep",
        "1.0",
        PackageSource(
            "vcs",
            url="file:///srv/dep.git",
            vcs="git",
            commit="ab" * 20,
            path="../../etc/passwd",
            hash="sha256=" + "c" * 64,
        ),
    )
    with refuses(ValidationError, field="packages[dep].source.path"):
        direct_source(hostile, "packages[dep].source")


# --------------------------------------------------------------------------- carried changes


def test_only_small_text_without_secrets_is_carried():
    from reprobox.capture.python import carry_changes
    from reprobox.redact import Redactor

    def change(path: str, text: str, kind: str = "modified") -> InstalledChange:
        return InstalledChange(
            "demo", path, kind, len(text), hashlib.sha256(text.encode()).hexdigest()
        )

    ok = change("demo/a.py", "x = 2\n")
    pth = change("demo.pth", "import os\n")
    secret = change("demo/keys.py", "AWS = 'AKIAIOSFODNN7EXAMPLE'\n")
    added = change("demo/new.py", "y = 1\n", "added")
    binary = InstalledChange("demo", "demo/lib.so", "modified", 3, "d" * 64)
    texts = {
        ("demo", "demo/a.py"): "x = 2\n",
        ("demo", "demo.pth"): "import os\n",
        ("demo", "demo/keys.py"): "AWS = 'AKIAIOSFODNN7EXAMPLE'\n",
        ("demo", "demo/new.py"): "y = 1\n",
    }
    out, files, warnings = carry_changes((ok, pth, secret, added, binary), texts, Redactor({}))
    carried = {c.path: c.replay for c in out}
    assert carried["demo/a.py"] == f"installed-{ok.sha256[:20]}.txt"
    assert files == {carried["demo/a.py"]: b"x = 2\n"}
    assert carried["demo.pth"] is None and carried["demo/keys.py"] is None
    assert carried["demo/new.py"] is None and carried["demo/lib.so"] is None
    said = "\n".join(warnings)
    assert "demo.pth of demo is recorded but not carried (it is a .pth file)" in said
    assert (
        "demo/keys.py of demo is recorded but not carried (it holds what looks like a secret)"
        in said
    )
    assert "demo/lib.so of demo is recorded but not carried (it is not small text)" in said


def test_the_image_re_applies_only_checked_changes():
    from reprobox.build.render import RenderOptions, plan_image, render_plan
    from reprobox.errors import ValidationError
    from reprobox.model import Experiment, GitInfo

    good = InstalledChange("six", "six.py", "modified", 10, "a" * 64, "installed-aaaa.txt")

    def plan(*changes: InstalledChange):
        env = Environment(
            INTERP,
            (Package("six", "1.16.0", wheel_tags=("py3-none-any",)),),
            installed_changes=changes,
        )
        exp = Experiment(
            name="x",
            command="python t.py",
            cwd=".",
            git=GitInfo(commit="cd" * 20),
            environment_digest=env.digest,
            created="2026-01-01T00:00:00Z",
            tool_version="0.1.0",
        ).with_id()
        return plan_image(
            exp, env, base_image="python:3.11.7-slim-bookworm", options=RenderOptions()
        )

    p = plan(good)
    assert p.replay == (("six", "six.py", "installed-aaaa.txt", "a" * 64),)
    text = render_plan(p)
    assert "tools/reinstate.py /tmp/reprobox/replay/manifest.json" in text
    assert "source=replay,target=/tmp/reprobox/replay" in text
    for bad, field in (
        (
            InstalledChange("six", "../../etc/x", "modified", 1, "a" * 64, "f.txt"),
            "installed_changes[0].path",
        ),
        (
            InstalledChange("six", "x.pth", "modified", 1, "a" * 64, "f.txt"),
            "installed_changes[0].replay",
        ),
        (
            InstalledChange("six", "six.py", "modified", 1, "a" * 64, "../f"),
            "installed_changes[0].replay",
        ),
    ):
        with refuses(ValidationError, field=field):
            plan(bad)


def test_reinstate_writes_only_a_file_the_package_installed(tmp_path: Path):
    """The script run inside the rebuilt environment, in a real venv."""
    import json

    from reprobox.build import reinstate

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    make_dist(site, "demo", {"demo/__init__.py": b"VALUE = 1\n"})
    (site / "elsewhere.py").write_text("untouched\n")
    folder = tmp_path / "replay"
    folder.mkdir()
    new = b"VALUE = 12\n"
    (folder / "f.txt").write_bytes(new)

    def run(entries: list) -> subprocess.CompletedProcess:
        (folder / "manifest.json").write_text(json.dumps(entries))
        return subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-I",
                reinstate.__file__,
                str(folder / "manifest.json"),
                str(folder),
            ],
            capture_output=True,
            text=True,
        )

    digest = hashlib.sha256(new).hexdigest()
    for path, why in (
        ("elsewhere.py", "not a file demo installed"),
        ("../../../../etc/passwd", "not a path a package installs"),
    ):
        done = run([{"package": "demo", "path": path, "file": "f.txt", "sha256": digest}])
        assert done.returncode == 2 and why in done.stderr and path in done.stderr
    done = run(
        [{"package": "demo", "path": "demo/__init__.py", "file": "f.txt", "sha256": "0" * 64}]
    )
    assert done.returncode == 2 and "sha256" in done.stderr
    assert (site / "demo" / "__init__.py").read_bytes() == b"VALUE = 1\n"
    done = run([{"package": "demo", "path": "demo/__init__.py", "file": "f.txt", "sha256": digest}])
    assert done.returncode == 0, done.stderr
    assert (site / "demo" / "__init__.py").read_bytes() == new
    assert (site / "elsewhere.py").read_text() == "untouched\n"


def test_every_file_is_hashed_on_request():
    from reprobox.capture.python import probe_command

    assert "--hash-all" not in probe_command(Path("/x/python"), None, {})
    assert "--hash-all" in probe_command(Path("/x/python"), None, {"REPROBOX_HASH_INSTALLED": "1"})


def test_conda_installed_distributions_are_left_to_conda_meta(tmp_path: Path):
    site = tmp_path / "site"
    d = make_dist(site, "demo", {"demo/__init__.py": b"PREFIX = '/opt/conda'\n"})
    (site / "demo" / "__init__.py").write_bytes(b"PREFIX = '/home/me/miniforge3/envs/x'\n")
    assert _changes(site, [dict(d, installer="conda")]) == {}
    assert _changes(site, [d]) != {}


def test_only_folders_changed_after_install_are_listed_unless_hash_all(tmp_path: Path):
    site = tmp_path / "site"
    d = make_dist(site, "demo", {"demo/__init__.py": b"x\n", "demo/sub/a.py": b"a\n"})
    (site / "demo" / "sub" / "new" / "deep").mkdir(parents=True)
    (site / "demo" / "sub" / "new" / "deep" / "b.py").write_text("b\n")
    out = _changes(site, [d])[d["metadata_dir"]]["changes"]
    assert [(c["path"], c["change"]) for c in out] == [("demo/sub/new/deep/b.py", "added")]
    # a folder whose mtime says nothing changed since install is not listed...
    os.utime(site / "demo" / "sub", ns=(10**18, 10**18))
    assert _changes(site, [d]) == {}
    # ...except when every file is checked
    assert (
        _changes(site, [d], hash_all=True)[d["metadata_dir"]]["changes"][0]["path"]
        == "demo/sub/new/deep/b.py"
    )


# --------------------------------------------------------------------------- sealing at capture


def _git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


def test_a_local_vcs_commit_is_sealed_and_an_unreachable_one_refused(tmp_path: Path):
    import io
    import tarfile

    from reprobox.capture.python import seal_local_vcs
    from reprobox.errors import UsageError
    from reprobox.model import PackageSource

    repo = tmp_path / "dep"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "pyproject.toml").write_text("[project]\nname = 'dep'\nversion = '1.0'\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "one")
    head = _git(repo, "rev-parse", "HEAD")
    pkg = Package("dep", "1.0", PackageSource("vcs", url=f"file://{repo}", vcs="git", commit=head))
    index = Package("six", "1.16.0")
    out, files, warnings = seal_local_vcs((pkg, index))
    name = f"dep-1.0-{head[:12]}.tar.gz"
    assert list(files) == [name] and out[1] == index
    assert out[0].source.path == name
    assert out[0].source.hash == "sha256=" + hashlib.sha256(files[name]).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(files[name])) as tar:
        assert "dep-1.0/pyproject.toml" in tar.getnames()
    assert "sealed into the experiment as " + name in warnings[0]

    gone = Package(
        "dep", "1.0", PackageSource("vcs", url=f"file://{repo}", vcs="git", commit="ab" * 20)
    )
    with refuses(UsageError, names=["package dep 1.0", str(repo)]) as err:
        seal_local_vcs((gone,))
    assert err.value.exit_code == 2


def test_record_sizes_marks_as_hashed_exactly_the_rows_with_a_sha256_digest(tmp_path: Path):
    """record_sizes skips decoding the usual 43-character field; every row still gets the flag
    that decoding gives (parse_record_rows), odd fields included."""
    good = base64.urlsafe_b64encode(hashlib.sha256(b"x").digest()).rstrip(b"=").decode()
    rows = [
        f"a.py,sha256={good},1",
        f"b.py,sha256={good}=,1",  # padded: decodes
        "c.py,sha256=,1",  # empty: no digest
        "d.py,sha256=a,1",  # cannot be base64
        "e.py,sha256=!!!!,1",  # not the alphabet: decoding says
        f"f.py,md5={good},1",  # another algorithm
        "g.py,,",
        f'"h,1.py",sha256={good},2',
    ]
    record = tmp_path / "RECORD"
    record.write_text("\n".join(rows) + "\n")
    sizes = probe.record_sizes(str(record))
    full = probe.parse_record_rows(str(record))
    assert [r[0] for r in sizes] == [r[0] for r in full]
    assert [r[1] for r in sizes] == [r[1] for r in full]
    assert [r[2] for r in sizes] == [1 if r[2] else 0 for r in full]
    assert [r[2] for r in sizes] == [1, 1, 0, 0, 0, 0, 0, 1]
    assert full[0][2] == hashlib.sha256(b"x").hexdigest()


def test_the_probe_cache_keeps_a_record_s_rows_as_columns_and_reads_them_back(tmp_path: Path):
    site = tmp_path / "site"
    d = make_dist(site, "demo", {"demo/__init__.py": b"x = 1\n", "demo/util.py": b"y = 2\n"})
    record = str(Path(d["metadata_dir"]) / "RECORD")
    cache_file = str(tmp_path / "cache" / "probe.json")
    first = probe.ProbeCache(cache_file)
    assert _changes_with(site, [d], first) == {}
    first.save()
    saved = json.loads(Path(cache_file).read_text())
    assert "rows" not in saved
    (key, cols) = saved["columns"][record]
    assert cols == [list(c) for c in zip(*probe.record_sizes(record))]
    # read back: a hit, and the same answer for a changed file
    (site / "demo" / "util.py").write_bytes(b"y = 2  # patched\n")
    second = probe.ProbeCache(cache_file)
    out = _changes_with(site, [d], second)[d["metadata_dir"]]["changes"]
    assert [(c["path"], c["change"]) for c in out] == [("demo/util.py", "modified")]
    assert second.hits >= 1 and second.misses == 0


@pytest.mark.parametrize(
    "damaged",
    [[["demo/util.py"], [6]], [["demo/__init__.py"], [6, 6], [1, 1]], "rows", [[], [], {}]],
)
def test_a_damaged_cached_record_entry_is_read_again(tmp_path: Path, damaged):
    site = tmp_path / "site"
    d = make_dist(site, "demo", {"demo/__init__.py": b"x = 1\n", "demo/util.py": b"y = 2\n"})
    (site / "demo" / "util.py").unlink()
    record = str(Path(d["metadata_dir"]) / "RECORD")
    st = os.stat(record)
    cache = probe.ProbeCache(None)
    cache.old = {"columns": {record: [[st.st_size, st.st_mtime_ns], damaged]}}
    out = _changes_with(site, [d], cache)[d["metadata_dir"]]["changes"]
    assert [(c["path"], c["change"]) for c in out] == [("demo/util.py", "missing")]


def _changes_with(site: Path, dists: list[dict], cache: "probe.ProbeCache") -> dict:
    return probe.installed_file_changes(dists, [str(site)], cache)


def test_a_fifo_in_place_of_an_installed_file_is_a_change_and_never_blocks(tmp_path: Path):
    """The probe opens files without waiting: a FIFO where a package file was is reported
    (modified: another size, no content) instead of stalling the capture on its open."""
    site = tmp_path / "site"
    d = make_dist(site, "demo", {"demo/__init__.py": b"x = 1\n", "demo/data.txt": b"abc\n"})
    (site / "demo" / "data.txt").unlink()
    os.mkfifo(site / "demo" / "data.txt")
    out = in_probe(
        f"dists = json.loads(sys.argv[1])\n"
        f"print(json.dumps(probe.installed_file_changes(dists, [{str(site)!r}], "
        f"probe.ProbeCache(None))))",
        json.dumps([d]),
    )
    changes = out[d["metadata_dir"]]["changes"]
    assert changes == [{"path": "demo/data.txt", "change": "modified", "size": 0, "sha256": None}]
