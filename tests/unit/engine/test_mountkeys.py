"""Keys for the RUN steps podman's cache would reuse whatever they mount (engine.mountkeys)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reprobox.engine import mountkeys
from reprobox.engine.interface import BuildRequest
from reprobox.engine.podman import keyed_request

GOLDEN = Path(__file__).resolve().parents[2] / "golden"

STEP = (
    "RUN --network=none --mount=type=bind,source=lock/all.txt,target=/s/lock/all.txt \\\n"
    "    --mount=type=bind,source=tools,target=/s/tools \\\n"
    "    --mount=type=cache,target=/root/.cache/uv,id=x-uv \\\n"
    "    set -eu; \\\n"
    "    cat /s/lock/all.txt\n"
)


def _context(where: Path, lock: str = "six==1.16.0\n") -> Path:
    (where / "lock").mkdir(parents=True)
    (where / "lock" / "all.txt").write_text(lock)
    (where / "tools").mkdir()
    (where / "tools" / "prune.py").write_text("print()\n")
    return where


def test_instructions_join_continued_lines_and_leave_comments_out():
    text = "# a comment\nFROM base\n\n# the step\nARG REPROBOX_INPUTS_LOCK_1\n" + STEP
    ins = mountkeys.instructions(text)
    assert ins[:2] == ["FROM base", "ARG REPROBOX_INPUTS_LOCK_1"]
    assert len(ins) == 3 and ins[2].startswith("RUN --network=none") and "cat /s/lock" in ins[2]


def test_context_sources_are_the_bind_mounts_from_the_context():
    run = (
        "--mount=type=bind,source=lock/a.txt,target=/a --mount=type=cache,target=/c "
        "--mount=type=secret,id=s --mount=type=bind,from=other,source=/x,target=/x "
        "--mount=target=/d,src=meta --mount=type=bind,target=/root set -eu"
    )
    # a bind mount is the default type; no source is the context's root
    assert mountkeys.context_sources(run) == ["lock/a.txt", "meta", "."]


def test_a_step_s_digest_follows_what_it_mounts(tmp_path: Path):
    ctx = _context(tmp_path / "a")
    key = mountkeys.digest(ctx, ["lock/all.txt", "tools"])
    assert key == mountkeys.digest(ctx, ["lock/all.txt", "tools"])
    # the same files in another context: the same key (small files are keyed by their bytes)
    assert key == mountkeys.digest(_context(tmp_path / "b"), ["lock/all.txt", "tools"])
    changes = []
    (ctx / "lock" / "all.txt").write_text("six==1.15.0\n")
    changes.append(mountkeys.digest(ctx, ["lock/all.txt", "tools"]))
    (ctx / "tools" / "packages.txt").write_text("six\n")  # a file added to a mounted folder
    changes.append(mountkeys.digest(ctx, ["lock/all.txt", "tools"]))
    os.chmod(ctx / "tools" / "prune.py", 0o755)  # a mode
    changes.append(mountkeys.digest(ctx, ["lock/all.txt", "tools"]))
    (ctx / "tools" / "uv").symlink_to("prune.py")  # a link, by its text
    changes.append(mountkeys.digest(ctx, ["lock/all.txt", "tools"]))
    changes.append(mountkeys.digest(ctx, ["tools", "lock/all.txt"]))  # the mounts' order
    assert len({key, *changes}) == len(changes) + 1


def test_a_large_file_is_keyed_by_its_identity_not_read(tmp_path: Path, monkeypatch):
    ctx = _context(tmp_path / "a")
    monkeypatch.setattr(mountkeys, "_HASHED_MAX", 20)
    big = ctx / "tools" / "uv"
    big.write_bytes(b"x" * 100)
    key = mountkeys.digest(ctx, ["tools"])
    linked = _context(tmp_path / "b")
    os.link(big, linked / "tools" / "uv")  # the context links the same file in: same key
    assert mountkeys.digest(linked, ["tools"]) == key
    big.write_bytes(b"y" * 101)
    assert mountkeys.digest(ctx, ["tools"]) != key


def test_a_source_outside_the_context_is_keyed_by_name_and_not_read(tmp_path: Path):
    ctx = _context(tmp_path / "ctx")
    secret = tmp_path / "secret.txt"
    secret.write_text("1")
    (ctx / "out").symlink_to(tmp_path)
    key = mountkeys.digest(ctx, ["../secret.txt", "out/secret.txt"])
    secret.write_text("2")
    assert mountkeys.digest(ctx, ["../secret.txt", "out/secret.txt"]) == key


def test_input_args_key_each_argument_s_step(tmp_path: Path):
    ctx = _context(tmp_path / "ctx")
    (ctx / "replay").mkdir()
    text = (
        "FROM base\nARG REPROBOX_INPUTS_LOCK_1\n"
        + STEP
        + "ARG REPROBOX_INPUTS_REPLAY\nRUN --mount=type=bind,source=replay,target=/r true\n"
        + "RUN --mount=type=cache,target=/c true\n"  # mounts nothing from the context
        + "ARG OTHER\nCOPY a b\n"
    )
    keys = mountkeys.input_args(ctx, text)
    assert keys.unkeyed == 0
    assert keys.args == {
        "REPROBOX_INPUTS_LOCK_1": mountkeys.digest(ctx, ["lock/all.txt", "tools"]),
        "REPROBOX_INPUTS_REPLAY": mountkeys.digest(ctx, ["replay"]),
    }


@pytest.mark.parametrize(
    "text",
    [
        "FROM base\n" + STEP,  # no argument
        "FROM base\nARG OTHER\n" + STEP,  # not reprobox's
        "FROM base\nARG REPROBOX_INPUTS_X\nFROM next\n" + STEP,  # one of another stage
        "FROM base\nARG REPROBOX_INPUTS_X\nRUN true\n" + STEP,  # one of the step before
    ],
)
def test_a_mounting_step_without_its_argument_is_unkeyed(tmp_path: Path, text: str):
    keys = mountkeys.input_args(_context(tmp_path / "ctx"), text)
    assert keys.unkeyed == 1 and keys.args == {}


def test_one_argument_for_two_different_steps_keys_neither_twice(tmp_path: Path):
    ctx = _context(tmp_path / "ctx")
    (ctx / "other").mkdir()
    text = (
        "FROM base\nARG REPROBOX_INPUTS_A\n"
        + STEP
        + "ARG REPROBOX_INPUTS_A\nRUN --mount=type=bind,source=other,target=/o true\n"
    )
    keys = mountkeys.input_args(ctx, text)
    assert keys.args == {"REPROBOX_INPUTS_A": mountkeys.digest(ctx, ["lock/all.txt", "tools"])}
    assert keys.unkeyed == 1  # the second step cannot be keyed by the same argument


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("*.Dockerfile")))
def test_every_mounting_step_reprobox_renders_is_keyed(tmp_path: Path, name: str):
    text = (GOLDEN / name).read_text()
    keys = mountkeys.input_args(tmp_path, text)
    assert keys.unkeyed == 0, name
    mounting = [i for i in mountkeys.instructions(text) if i.startswith("RUN") and "type=bind" in i]
    assert len(keys.args) == len(mounting), name


def test_the_podman_request_carries_the_keys_or_goes_without_the_cache(tmp_path: Path):
    ctx = _context(tmp_path / "ctx")
    dockerfile = ctx / "Dockerfile"
    dockerfile.write_text("FROM base\nARG REPROBOX_INPUTS_LOCK_1\n" + STEP)
    req = BuildRequest(context=ctx, dockerfile=dockerfile, tag="t", build_args={"X": "1"})
    said: list[str] = []
    out = keyed_request(req, said.append)
    assert out.build_args == {
        "X": "1",
        "REPROBOX_INPUTS_LOCK_1": mountkeys.digest(ctx, ["lock/all.txt", "tools"]),
    }
    assert not out.no_cache and said == []
    dockerfile.write_text("FROM base\n" + STEP)
    out = keyed_request(req, said.append)
    assert out.no_cache and out.build_args == {"X": "1"}
    assert said == [
        "1 step(s) of this Dockerfile mount files podman's layer cache does not look at: "
        "building without the cache"
    ]
    # a Dockerfile that cannot be read: the request as it was (the build reports the error)
    missing = BuildRequest(context=ctx, dockerfile=ctx / "nope", tag="t")
    assert keyed_request(missing) is missing
