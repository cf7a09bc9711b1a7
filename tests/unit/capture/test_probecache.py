"""The probe answer folder stays bounded: answers unused for a month go, then the least recently
used beyond a fixed count, and a killed capture's temporary files; nothing else is touched."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from reprobox.capture import probecache

DAY = 86400.0


def _answer(folder: Path, name: str, age_days: float, now: float) -> Path:
    path = folder / name
    path.write_text("{}")
    os.utime(path, (now - age_days * DAY, now - age_days * DAY))
    return path


def test_prune_removes_unused_answers_and_stale_temporaries_only(tmp_path: Path) -> None:
    now = 2_000_000_000.0
    old = _answer(tmp_path, "a" * 24 + "-answer.json", 31, now)
    recent = _answer(tmp_path, "b" * 24 + "-answer.json", 29, now)
    kept = _answer(tmp_path, "c" * 24 + "-answer.json", 400, now)  # the one just written
    stale_tmp = _answer(tmp_path, "d" * 24 + "-answer.json.123.tmp", 2, now)
    fresh_tmp = _answer(tmp_path, "e" * 24 + "-answer.json.456.tmp", 0.1, now)
    other = _answer(tmp_path, "notes.txt", 900, now)
    (tmp_path / ("f" * 24 + "-answer.json")).mkdir()  # not a plain file
    os.utime(tmp_path / ("f" * 24 + "-answer.json"), (0, 0))
    link = tmp_path / ("g" * 24 + "-answer.json")
    link.symlink_to(other)
    os.utime(link, (0, 0), follow_symlinks=False)

    assert probecache.prune(tmp_path, keep=kept.name, now=now) == 2
    left = sorted(p.name for p in tmp_path.iterdir())
    assert old.name not in left and stale_tmp.name not in left
    for p in (recent, kept, fresh_tmp, other, link):
        assert p.name in left
    assert (tmp_path / ("f" * 24 + "-answer.json")).is_dir()


def test_prune_keeps_the_most_recently_used_answers_up_to_the_cap(tmp_path: Path) -> None:
    now = 2_000_000_000.0
    n = probecache.KEEP_ANSWERS + 6
    paths = [_answer(tmp_path, f"{i:024d}-answer.json", i / 100, now) for i in range(n)]
    newest, oldest_first = paths[0], paths[::-1]
    # the one just written counts towards the cap and always stays, whatever its time
    written = oldest_first[0]
    assert probecache.prune(tmp_path, keep=written.name, now=now) == n - probecache.KEEP_ANSWERS
    left = {p.name for p in tmp_path.iterdir()}
    assert len(left) == probecache.KEEP_ANSWERS
    assert written.name in left and newest.name in left
    assert paths[probecache.KEEP_ANSWERS - 2].name in left
    assert paths[probecache.KEEP_ANSWERS - 1].name not in left


def test_writing_an_answer_prunes_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "probe"
    folder.mkdir()
    now = probecache.time.time()
    for i in range(probecache.KEEP_ANSWERS + 3):
        _answer(folder, f"{i:024d}-answer.json", 1 + i / 100, now)
    cache = probecache.ResultCache(
        folder / ("z" * 24 + "-answer.json"), Path(sys.executable), {}, Path(__file__)
    )
    cache.probe_starts()
    cache.store({"distributions": []})
    names = {p.name for p in folder.iterdir()}
    assert len(names) == probecache.KEEP_ANSWERS
    assert "z" * 24 + "-answer.json" in names
