"""The benchmark harness's bookkeeping: interleaving, statistics, ratios, the table (no timing)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import harness  # noqa: E402
from harness import Contestant, Rep, Row, schedule, stats  # noqa: E402


def test_schedule_interleaves_and_rotates_the_starting_contestant() -> None:
    order = schedule(["A", "B", "C"], {"A": 3, "B": 3, "C": 3})
    assert [n for _, n in order] == ["A", "B", "C", "B", "C", "A", "C", "A", "B"]
    assert [r for r, _ in order] == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_schedule_gives_a_slow_peer_fewer_rounds_but_keeps_the_others_interleaved() -> None:
    order = schedule(["A", "slow"], {"A": 4, "slow": 2})
    assert [n for _, n in order] == ["A", "slow", "slow", "A", "A", "A"]
    assert sum(1 for _, n in order if n == "slow") == 2
    assert sum(1 for _, n in order if n == "A") == 4


def test_stats_are_median_min_max_of_every_value() -> None:
    s = stats([3.0, 1.0, 2.0, 10.0])
    assert (s.median, s.min, s.max, s.n) == (2.5, 1.0, 10.0, 4)
    with pytest.raises(ValueError, match="no measurements"):
        stats([])


def test_measure_runs_each_side_reps_times_in_interleaved_order_with_fresh_folders() -> None:
    seen: list[tuple[str, int, Path]] = []

    def fake(c: Contestant, rep: Rep) -> float:
        assert rep.tmp.is_dir() and not any(rep.tmp.iterdir())  # fresh and empty
        (rep.tmp / "cache").mkdir()
        seen.append((c.name, rep.index, rep.tmp))
        return {"A": 1.0, "B": 2.0, "C": 4.0}[c.name] + rep.index

    contestants = [Contestant("A", ["a"]), Contestant("B", ["b"]), Contestant("C", ["c"], reps=2)]
    result = harness.measure(contestants, 7, runner=fake)
    assert [n for n, _, _ in seen[:6]] == ["A", "B", "C", "B", "C", "A"]
    assert (result["A"].n, result["B"].n, result["C"].n) == (7, 7, 2)
    assert result["A"].median == 4.0 and result["A"].min == 1.0 and result["A"].max == 7.0
    assert result["C"].values == [4.0, 5.0]
    assert len({str(t) for _, _, t in seen}) == len(seen)  # never a shared folder


def test_measure_refuses_two_contestants_of_one_name() -> None:
    with pytest.raises(ValueError, match="names must be unique"):
        harness.measure(
            [Contestant("A", ["a"]), Contestant("A", ["b"])], 1, runner=lambda c, r: 0.0
        )


def test_run_once_names_the_failing_contestant() -> None:
    c = Contestant("broken", [sys.executable, "-c", "import sys; sys.exit(4)"])
    with pytest.raises(harness.BenchError, match="broken.*exited 4"):
        harness.run_once(c, Rep(0, Path(".")))


def test_rows_compute_ratio_overhead_percent_and_targets(tmp_path: Path) -> None:
    a, b = stats([1.0, 2.0, 3.0]), stats([4.0, 4.0, 5.0])
    ratio = Row("capture", "ds", "cold", "reprobox", a, "pip freeze", b, target=0.35)
    assert ratio.value == 0.5 and ratio.met is False
    over = Row("run", "ds", "", "reprobox run", b, "docker run", a, unit="overhead", target=1)
    assert over.value == 2.0 and over.met is False
    pct = Row(
        "record",
        "",
        "",
        "record",
        stats([10.05]),
        "bare",
        stats([10.0]),
        unit="percent",
        target=1.0,
    )
    assert pct.value == pytest.approx(0.5) and pct.met is True
    alone = Row("build", "ds", "code-only", "reprobox", stats([2.0]), unit="seconds", target=3)
    assert alone.value == 2.0 and alone.met is True
    text = harness.table([ratio, over, alone])
    assert "0.50×" in text and "MISSED" in text and "n=3" in text and "+2.00 s" in text
    doc = json.loads(harness.write_json([ratio], tmp_path / "r.json").read_text())
    assert doc["rows"][0]["value"] == 0.5 and doc["rows"][0]["met"] is False
    assert doc["rows"][0]["subject_stats"]["values"] == [1.0, 2.0, 3.0]


def test_merge_prints_one_table_of_the_chosen_benchmarks_from_several_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import run_all

    one = harness.write_json(
        [
            Row("capture --no-lock", "ds", "cold", "reprobox", stats([1.0]), "pip", stats([2.0])),
            Row("build", "ds", "cold", "reprobox build", stats([3.0]), "hand", stats([4.0])),
        ],
        tmp_path / "one.json",
    )
    two = harness.write_json(
        [Row("first run", "torch", "import", "reprobox", stats([5.0]), "plain", stats([6.0]))],
        tmp_path / "two.json",
    )
    assert run_all.merge([one, two], ["build"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("| ")]
    assert [x.split(" | ")[0] for x in lines[1:]] == ["| build", "| first run"]
    assert run_all.merge([one, two]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("| ")]
    assert len(lines) == 1 + 3


def test_merge_takes_a_row_measured_again_from_the_later_file_in_its_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import run_all

    old = harness.write_json(
        [
            Row("build", "ds", "cold", "reprobox build", stats([3.0]), "hand", stats([4.0])),
            Row("build", "ds", "numpy change", "reprobox", stats([2.0]), "own", stats([3.0])),
        ],
        tmp_path / "old.json",
    )
    new = harness.write_json(
        [Row("build", "ds", "cold", "reprobox build", stats([1.0]), "hand", stats([4.0]))],
        tmp_path / "new.json",
    )
    assert run_all.merge([old, new], ["build"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("| build")]
    assert len(lines) == 2
    assert "0.25×" in lines[0] and "| cold |" in lines[0]  # the later measure, first place
    assert "numpy change" in lines[1]


def test_an_ab_run_never_writes_over_an_earlier_runs_results(tmp_path: Path) -> None:
    """Two before/after runs that end in the same minute keep both files."""
    import ab_checkouts

    path = tmp_path / "2026-12-02-1333-ab.json"
    assert ab_checkouts.unused(path) == path
    path.write_text("{}")
    second = ab_checkouts.unused(path)
    assert second == tmp_path / "2026-12-02-1333-ab-2.json"
    second.write_text("{}")
    assert ab_checkouts.unused(path) == tmp_path / "2026-12-02-1333-ab-3.json"
