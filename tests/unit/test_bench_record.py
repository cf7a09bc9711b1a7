"""bench_record's side-by-side pairs: each side really runs pinned to its own core, started
together, and the rows judge the 1 % target on the aligned pair only."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_record  # noqa: E402

from ..conftest import require  # noqa: E402


def _two_cores() -> tuple[int, int]:
    """Two cores to pin to: skipped here without them, a failure on CI (a 2-core machine)."""
    cpus = bench_record.two_cores()
    require(cpus is not None, "two CPU cores for the side-by-side pairs")
    assert cpus is not None
    return cpus


def test_side_by_side_pins_each_side_to_its_own_core(tmp_path: Path) -> None:
    cpus = _two_cores()
    assert cpus[0] != cpus[1]
    report = "import os, sys; open(sys.argv[1], 'w').write(repr(sorted(os.sched_getaffinity(0))))"
    sides = [([sys.executable, "-c", report, str(tmp_path / n)], dict(os.environ)) for n in "ab"]
    walls = bench_record.side_by_side(sides, tmp_path, cpus)
    assert len(walls) == 2 and all(w > 0 for w in walls)
    assert (tmp_path / "a").read_text() == repr([cpus[0]])
    assert (tmp_path / "b").read_text() == repr([cpus[1]])
    # swapped: the first side now gets the second core
    bench_record.side_by_side(sides, tmp_path, (cpus[1], cpus[0]))
    assert (tmp_path / "a").read_text() == repr([cpus[1]])


def test_side_by_side_refuses_a_failed_side(tmp_path: Path) -> None:
    cpus = _two_cores()
    ok = ([sys.executable, "-c", "pass"], dict(os.environ))
    bad = ([sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ))
    with pytest.raises(SystemExit, match="raise SystemExit"):
        bench_record.side_by_side([ok, bad], tmp_path, cpus)


def test_two_cores_is_none_with_one_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {3})
    assert bench_record.two_cores() is None
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {5, 2, 7})
    assert bench_record.two_cores() == (2, 5)


def measurements(side_by_side: bool) -> dict[str, object]:
    ten = [10.0, 10.1, 9.9]
    return {
        "seconds": 10.0,
        "reps": 3,
        "plain": ten,
        "plain_cpu": ten,
        "payload": [10.2, 10.0, 10.1],
        "payload_cpu": [10.2, 10.0, 10.1],
        "record_command": [10.3, 10.2, 10.1],
        "record_total": [10.6, 10.5, 10.4],
        "fixed_plain": 0.0200,
        "fixed_payload": 0.0208,
        # (subject, peer) per repetition: payload +0.1 %, -0.2 %, +0.3 % -> median +0.1 %
        "side_by_side_payload": [[10.01, 10.0], [9.98, 10.0], [10.03, 10.0]]
        if side_by_side
        else [],
        "side_by_side_record": [[10.5, 10.0], [9.5, 10.0], [10.2, 10.0]] if side_by_side else [],
    }


def test_rows_judge_the_target_on_the_aligned_pair() -> None:
    rows = bench_record.rows(measurements(side_by_side=True))
    by = {(r.case, r.subject): r for r in rows}
    payload = by[("wall, side by side", "command with the payload")]
    assert payload.target == 1.0
    assert payload.value == pytest.approx(0.1)
    assert payload.met is True
    record = by[("wall, side by side", "reprobox record (command as timed by record)")]
    assert record.target is None and record.value == pytest.approx(2.0)
    # the back-to-back rows stay, with no target: 7 of them cannot resolve 1 % here
    back = [r for r in rows if r.case.endswith("back to back")]
    assert len(back) == 2 and all(r.target is None for r in back)
    assert any("0.8 ms CPU" in r.note for r in back)


def test_rows_without_a_second_core_have_no_side_by_side() -> None:
    rows = bench_record.rows(measurements(side_by_side=False))
    assert not [r for r in rows if "side by side" in r.case]
    assert [r.case for r in rows] == ["wall, back to back", "CPU, back to back", "end to end"]
