"""``reprobox lock EXP`` asks the index before the command line loads (reprobox.lock.early).

The console script runs for real against a local index serving pages recorded from PyPI; the
same lock through ``python -m reprobox.cli`` (no head start) is the reference it must equal.
The unchecked record is read before the store checks it, so the hostile cases check what the
index is asked, not only what the command says.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from reprobox import layout
from reprobox.lock import early
from reprobox.lock.config import IndexConfig
from reprobox.lock.index import IndexClient
from reprobox.model import Environment, Interpreter, OSInfo, Package
from reprobox.safefs import UnsafePath
from reprobox.store import Store
from tests.fixtures.lock.fakeindex import FakeIndex, recorded

from ...factories import make_exp, reprobox_exe
from ...hostile import reseal

INTERP = Interpreter("cpython", "3.11.7", abi="cp311", platform="linux-x86_64")
LINUX = OSInfo(system="Linux", arch="x86_64")
SIX_TAGS = ("py2-none-any", "py3-none-any")
PYYAML_TAGS = ("cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-manylinux2014_x86_64")
PAGES = {
    "six": {"json": recorded("six", "json"), "html": recorded("six", "html")},
    "pyyaml": {"json": recorded("pyyaml", "json"), "html": recorded("pyyaml", "html")},
}


def _env() -> Environment:
    return Environment(
        interpreter=INTERP,
        packages=(
            Package("six", "1.16.0", wheel_tags=SIX_TAGS, installer="pip"),
            Package("pyyaml", "6.0.2", wheel_tags=PYYAML_TAGS, display_name="PyYAML"),
        ),
        os=LINUX,
    )


def _pkg(name: str, version: str = "1.0", tags: tuple = ("py3-none-any",), kind: str = "index"):
    return {"name": name, "version": version, "wheel_tags": list(tags), "source": {"kind": kind}}


# --------------------------------------------------------------------------- reading the line


@pytest.mark.parametrize(
    "args, ref",
    [
        (["1b74e0d030f4"], "1b74e0d030f4"),
        (["1b74", "--json"], "1b74"),
        (["--json", "latest"], "latest"),
        ([], None),
        (["--help"], None),
        (["a", "b"], None),
        (["a", "--platform", "linux/arm64"], None),
        (["a", "--json", "--json"], None),
        (["-x"], None),
    ],
)
def test_only_a_plain_lock_line_names_an_experiment(args: list[str], ref: Optional[str]) -> None:
    assert early.experiment_ref(args) == ref


def test_lookup_keys_are_the_locks_order_compiled_first() -> None:
    doc = {
        "packages": [
            _pkg("six", "1.16.0", SIX_TAGS),
            _pkg("pyyaml", "6.0.2", PYYAML_TAGS),
            _pkg("numpy", "2.1.0", ("cp311-cp311-manylinux_2_17_x86_64",)),
            _pkg("mypkg", "0.1", kind="editable"),  # not looked up: not on an index
            _pkg("tiny", "1.0+cpu", kind="archive"),
        ]
    }
    assert early.lookup_keys(doc) == [
        ("numpy", "2.1.0"),
        ("pyyaml", "6.0.2"),
        ("six", "1.16.0"),
        ("tiny", "1.0+cpu"),
    ]


@pytest.mark.parametrize(
    "bad",
    [
        _pkg("../admin"),
        _pkg("six/../../x"),
        _pkg("Six"),  # not normalized: the URL would not be the one the lock sends
        _pkg("six_"),
        _pkg("-six"),
        _pkg("six?x=1"),
        _pkg("six", "1.0/../../x"),
        _pkg("six", ""),
        _pkg("six", "1.0", ("py3-none-any/../x",)),
        {"name": "six", "version": 1.0, "source": {"kind": "index"}},
        {"name": ["six"], "version": "1.0", "source": {"kind": "index"}},
        "six==1.0",
    ],
)
def test_any_doubtful_package_means_no_lookups_ahead(bad: object) -> None:
    assert early.lookup_keys({"packages": [_pkg("pyyaml", "6.0.2"), bad]}) is None


@pytest.mark.parametrize("doc", [None, [], {"packages": {}}, {"packages": "six"}, {}])
def test_a_malformed_environment_means_no_lookups_ahead(doc: object) -> None:
    assert early.lookup_keys(doc) is None


def _exps(root: Path, *ids: str) -> None:
    for i in ids:
        (root / layout.STORE_DIR / layout.EXPERIMENTS / i).mkdir(parents=True)


def test_experiment_id_from_an_id_or_a_unique_prefix(tmp_path: Path) -> None:
    _exps(tmp_path, "1b74e0d030f4", "1b75aaaaaaaa", "9f00bbbbbbbb")
    assert early.experiment_id(tmp_path, "1b74e0d030f4") == "1b74e0d030f4"
    assert early.experiment_id(tmp_path, "9f00") == "9f00bbbbbbbb"
    assert early.experiment_id(tmp_path, "1b7") is None  # shorter than the store accepts
    assert early.experiment_id(tmp_path, "1b7a") is None  # unknown
    _exps(tmp_path, "1b74e0d030f5")
    assert early.experiment_id(tmp_path, "1b74e0d030") is None  # ambiguous
    assert early.experiment_id(tmp_path, "latest") is None  # the store loads records for names
    assert early.experiment_id(tmp_path, "../../etc") is None


def test_experiment_folder_through_a_link_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    _exps(elsewhere, "1b74e0d030f4")
    repo = tmp_path / "repo"
    (repo / layout.STORE_DIR).mkdir(parents=True)
    os.symlink(
        elsewhere / layout.STORE_DIR / layout.EXPERIMENTS,
        repo / layout.STORE_DIR / layout.EXPERIMENTS,
    )
    with pytest.raises(UnsafePath):
        early.experiment_id(repo, "1b74e0d030f4")


# --------------------------------------------------------------------------- the real command


@pytest.fixture()
def world(tmp_path: Path):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    env = _env()
    stored = Store(repo).save(make_exp(env), env, {})
    with FakeIndex(PAGES) as idx:
        yield {"repo": repo, "id": stored.id, "index": idx, "tmp": tmp_path}


def _environ(w: dict, cache: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_INDEX_URL=w["index"].url,
        PIP_RETRIES="0",
        XDG_CACHE_HOME=str(w["tmp"] / cache),
        **extra,
    )
    return env


def _lock(
    w: dict, *args: str, cache: str, plain: bool = False, repo: Optional[Path] = None, **extra: str
):
    """``reprobox lock ARGS`` as a user types it, or (``plain``) the command line run without
    the entry point's head start."""
    cmd = [sys.executable, "-m", "reprobox.cli"] if plain else [reprobox_exe()]
    return subprocess.run(
        [*cmd, "lock", *args],
        cwd=repo or w["repo"],
        env=_environ(w, cache, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _lock_files(repo: Path, exp_id: str) -> dict[str, bytes]:
    folder = repo / layout.STORE_DIR / layout.EXPERIMENTS / exp_id
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_lock_asks_each_project_once_and_equals_the_lock_without_a_head_start(world) -> None:
    idx = world["index"]
    twin = world["tmp"] / "twin"  # the same record: a lock replaces the one it locks
    shutil.copytree(world["repo"], twin, symlinks=True)
    out = _lock(world, world["id"], "--json", cache="plain", plain=True)
    assert out.returncode == 0, out.stderr
    plain = json.loads(out.stdout)
    plain_requests = sorted(idx.project_requests())
    assert plain_requests == ["/simple/pyyaml/", "/simple/six/"]
    plain_files = _lock_files(world["repo"], plain["id"])

    idx.requests.clear()
    # a fresh cache: the lock from the original record again, through the console script
    out = _lock(world, world["id"], "--json", cache="early", repo=twin)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert sorted(idx.project_requests()) == plain_requests  # asked once each, by the child
    assert "(2 requests)" in out.stderr
    assert result["id"] == plain["id"]
    assert _lock_files(twin, result["id"]) == plain_files
    assert "requirements.lock" in plain_files and "pylock.toml" in plain_files


_ENTRY = """
import sys
from reprobox.lock import early
taken = early.take
def take(exp_id, platform):
    pending = taken(exp_id, platform)
    print("head start: " + ("yes" if pending is not None else "no"), file=sys.stderr)
    return pending
early.take = take
sys.argv = ["reprobox", "lock", *sys.argv[1:]]
from reprobox.entry import main
main()
"""


@pytest.mark.parametrize(
    "args, used", [((), "yes"), (("--json",), "yes"), (("--platform", "linux/amd64"), "no")]
)
def test_the_entry_point_hands_its_head_start_to_the_lock(world, args, used) -> None:
    """The console script's own entry point, with the hand-over observed: the lock gets the
    child for a plain line and none for a platform lock."""
    out = subprocess.run(
        [sys.executable, "-c", _ENTRY, world["id"], *args],
        cwd=world["repo"],
        env=_environ(world, "entry"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert f"head start: {used}" in out.stderr


def test_a_prefix_and_a_warm_cache_ask_nothing_more(world) -> None:
    idx = world["index"]
    first = _lock(world, world["id"][:6], "--json", cache="c")
    assert first.returncode == 0, first.stderr
    asked = len(idx.project_requests())
    assert asked == 2
    again = _lock(world, json.loads(first.stdout)["id"][:6], cache="c")
    assert again.returncode == 0, again.stderr
    assert len(idx.project_requests()) == asked
    assert "(0 requests)" in again.stderr


def test_platform_lock_gets_no_head_start(world) -> None:
    idx = world["index"]
    out = _lock(world, world["id"], "--platform", "linux/amd64", cache="p")
    assert out.returncode == 0, out.stderr
    # the lock's own lookups only: each project once, none before the line was parsed
    assert sorted(idx.project_requests()) == ["/simple/pyyaml/", "/simple/six/"]


def test_a_hostile_package_name_never_reaches_the_index(world) -> None:
    repo, idx = world["repo"], world["index"]
    folder = repo / layout.STORE_DIR / layout.EXPERIMENTS / world["id"]

    def evil(doc: dict) -> None:
        doc["packages"].append(_pkg("../../admin?token=x", "1.0"))

    new_id = reseal(folder, environment=evil)
    out = _lock(world, new_id, cache="h")
    assert out.returncode == 2, out.stderr
    assert "'../../admin?token=x': is not a valid Python package name" in out.stderr
    assert "Traceback" not in out.stderr
    assert idx.requests == []  # neither the head start nor the lock asked anything
    assert not (world["tmp"] / "h" / "reprobox" / "index").exists()


def test_a_refused_record_stops_the_head_start_and_writes_nothing(world) -> None:
    repo, idx = world["repo"], world["index"]
    folder = repo / layout.STORE_DIR / layout.EXPERIMENTS / world["id"]
    doc = json.loads((folder / "environment.json").read_text())
    doc["os"]["codename"] = "trixie"  # tampered, not re-sealed: the store refuses it
    (folder / "environment.json").write_text(json.dumps(doc))
    before = _lock_files(repo, world["id"])
    out = _lock(world, world["id"], cache="r")
    assert out.returncode == 2, out.stderr
    assert "environment.json was changed after capture" in out.stderr
    assert "Traceback" not in out.stderr
    assert _lock_files(repo, world["id"]) == before
    # well-formed names may have been asked about (the child starts before the check), and
    # nothing else: only the host's own index, only normalized project pages
    assert set(idx.project_requests()) <= {"/simple/pyyaml/", "/simple/six/"}
    assert all(p.startswith("/simple/") for p, _ in idx.requests)


def test_a_failing_index_is_reported_once_naming_the_fix(world) -> None:
    idx = world["index"]
    idx.fail = 10_000
    plain = _lock(world, world["id"], cache="f1", plain=True)
    assert plain.returncode == 3, plain.stderr
    plain_count = len(idx.requests)
    idx.requests.clear()
    out = _lock(world, world["id"], cache="f2")
    assert out.returncode == 3, out.stderr
    assert "HTTP 503" in out.stderr and "reprobox lock EXP" in out.stderr
    assert "Traceback" not in out.stderr
    # the child's failure is the lock's: the lock does not ask all over again. With a cold
    # cache the child's curl asks each page once first (any Accept-Encoding but the Python
    # client's "gzip"), and the Python client asks again what curl did not get.
    by_python = [p for p, h in idx.requests if h.get("Accept-Encoding") == "gzip"]
    by_curl = [p for p, h in idx.requests if h.get("Accept-Encoding") != "gzip"]
    assert 0 < len(by_python) <= plain_count
    assert sorted(by_curl) in ([], ["/simple/pyyaml/", "/simple/six/"])
    assert out.stderr.count("HTTP 503") == plain.stderr.count("HTTP 503")


# --------------------------------------------------------------------------- handing over


def test_prefetched_answers_leave_nothing_to_ask(tmp_path: Path) -> None:
    with FakeIndex(PAGES) as idx:
        config = IndexConfig(index_url=idx.url, timeout=5.0, retries=0)
        wanted = [("pyyaml", "6.0.2"), ("six", "1.16.0")]
        ahead = IndexClient(config, tmp_path / "cache")
        ahead.prefetch(wanted)
        ahead.close()
        assert ahead.requests == 2
        lock = IndexClient(config, tmp_path / "cache")
        found = lock.lookup_many(wanted)
        lock.close()
        assert lock.requests == 0 and len(idx.requests) == 2
        assert all(found[k][0].files for k in wanted)


_HANDOVER = """
import json, sys
from pathlib import Path
from reprobox.lock import early
from reprobox.lock.cache import default_cache_dir
from reprobox.lock.config import IndexConfig, read_index_config
exp_id, mode = sys.argv[1:]
early.begin([exp_id])
pending = early.take(exp_id, None)
if pending is None:
    print(json.dumps("no child"))
    sys.exit()
config, cache = read_index_config(), default_cache_dir()
if mode == "other-config":
    config = IndexConfig(index_url=config.index_url + "/other")
elif mode == "other-cache":
    cache = Path(cache.parent / "elsewhere")
done = pending.wait(config, cache)
pending.close()
print(json.dumps(None if done is None else done.requests))
"""


@pytest.mark.parametrize(
    "mode, expected", [("same", 2), ("other-config", None), ("other-cache", None)]
)
def test_the_lock_uses_the_child_only_for_its_own_configuration_and_cache(
    world, mode: str, expected: Optional[int]
) -> None:
    """A real child, started by begin() in a process of its own (as the entry point does: one
    thread, before anything else), handed to a lock with this or another configuration."""
    out = subprocess.run(
        [sys.executable, "-c", _HANDOVER, world["id"], mode],
        cwd=world["repo"],
        env=_environ(world, mode),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.stdout) == expected
    # the child asked (into a cache only a lock with its own configuration reads)
    assert sorted(world["index"].project_requests()) == ["/simple/pyyaml/", "/simple/six/"]


def test_take_refuses_a_child_for_another_experiment_or_a_platform(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stopped: list = []
    monkeypatch.setattr(early, "_stop", stopped.append)
    child = early._Child("aaaaaaaaaaaa", os.getpid(), -1, 0.0)
    monkeypatch.setattr(early, "_child", child)
    assert early.take("bbbbbbbbbbbb", None) is None
    assert early._child is None and stopped == [child]
    monkeypatch.setattr(early, "_child", child)
    assert early.take("aaaaaaaaaaaa", "linux/arm64") is None
    assert stopped == [child, child]
    monkeypatch.setattr(early, "_child", child)
    pending = early.take("aaaaaaaaaaaa", None)
    assert pending is not None and early._child is None and len(stopped) == 2
    pending.close()
    assert stopped == [child, child, child]


# --------------------------------------------------------------------------- stopped


def test_a_terminated_lock_stops_its_lookups_and_leaves_nothing(tmp_path: Path) -> None:
    """SIGTERM (a CI job cancelled) to `reprobox lock` while its child's curl waits on the
    index: the command ends like Ctrl-C (exit 130, its message, no traceback), its child and
    curl end with it, and curl's folder is gone."""
    import signal
    import time

    from tests.fixtures.lock.silent import SilentIndex, children, gone

    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    env = _env()
    stored = Store(repo).save(make_exp(env), env, {})
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with SilentIndex() as idx:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
        environ.update(
            PIP_CONFIG_FILE=os.devnull,
            PIP_INDEX_URL=idx.url,
            PIP_RETRIES="0",
            XDG_CACHE_HOME=str(tmp_path / "cache"),
            TMPDIR=str(tmp),
            NETRC=str(tmp_path / "no-netrc"),
        )
        proc = subprocess.Popen(
            [reprobox_exe(), "lock", stored.id],
            cwd=repo,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while not idx.held and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert idx.held, "nothing connected to the index"
        lookups = children(proc.pid)
        curls = [c for pid in lookups for c in children(pid)]
        assert lookups and curls, "the lock started no lookup child, or it no curl"
        assert list(tmp.iterdir()), "curl's folder is not where TMPDIR says"
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert all(gone(pid) for pid in lookups + curls)
    assert list(tmp.iterdir()) == []
    folder = repo / layout.STORE_DIR / layout.EXPERIMENTS / stored.id
    assert not (folder / "requirements.lock").exists()  # nothing written


def test_the_lock_reads_the_childs_notices_then_its_answer() -> None:
    """Notices of stored answers come before the child's answer: each read that holds some
    calls ``stored`` once; the answer is the JSON after them. A failing read ahead is no
    matter."""
    r, w = os.pipe()
    answer = b'{"cache": "/c", "requests": 3}'
    calls: list[int] = []
    try:
        os.write(w, early.STORED * 2)
        child = early._Child("e" * 12, 0, r, 0.0)
        # the first read: two notices; the next, one more; then the answer
        got: list[Optional[bytes]] = []

        def stored() -> None:
            calls.append(1)
            if len(calls) == 1:
                os.write(w, early.STORED)
            elif len(calls) == 2:
                os.write(w, answer)
                os.close(w)
            raise RuntimeError("a read ahead that fails")

        got.append(early._read(child, 10.0, stored))
    finally:
        os.close(r)
    assert got == [answer]
    assert len(calls) == 2
