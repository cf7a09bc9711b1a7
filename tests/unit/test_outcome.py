"""The comparison rules of a rerun's metrics and outputs (reprobox.outcome)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reprobox.outcome import (
    CLOSE,
    DIFFERS,
    MISSING,
    NEW,
    SAME,
    Tolerance,
    compare_metrics,
    compare_outputs,
    differences,
    value_status,
)
from reprobox.errors import UsageError
from reprobox.model import INLINE_METRICS, OutputFile


@pytest.mark.parametrize(
    "recorded, observed, status",
    [
        (0.9123, 0.9123, SAME),
        (3, 3.0, SAME),
        (3, 4, DIFFERS),
        (0.9123, 0.9124, DIFFERS),
        (True, 1, DIFFERS),
        (1, True, DIFFERS),
        (True, True, SAME),
        ("adam", "adam", SAME),
        ("adam", "sgd", DIFFERS),
        ("1", 1, DIFFERS),
        (None, None, SAME),
        (None, 0, DIFFERS),
        (float("nan"), float("nan"), SAME),
        (float("nan"), 1.0, DIFFERS),
        (1.0, float("nan"), DIFFERS),
        (float("inf"), float("inf"), SAME),
        (float("inf"), float("-inf"), DIFFERS),
        (2**60, 2**60 + 1, DIFFERS),  # float conversion would call these equal
    ],
)
def test_exact_comparison(recorded, observed, status):
    assert value_status(recorded, observed) == status


def test_tolerance_uses_the_recorded_value_as_reference():
    tol = Tolerance(rtol=0.01)
    assert value_status(100.0, 101.0, tol) == CLOSE
    assert value_status(100.0, 101.5, tol) == DIFFERS
    # Relative to the recorded 100, not to the observed 99: 1.0 <= 0.01 * 100.
    assert value_status(100.0, 99.0, tol) == CLOSE
    assert value_status(0.0, 1e-9, Tolerance(atol=1e-8)) == CLOSE
    assert value_status(0.0, 1e-7, Tolerance(atol=1e-8)) == DIFFERS
    assert value_status(10, 11, Tolerance(atol=1)) == CLOSE


def test_tolerance_never_applies_to_strings_flags_or_infinities():
    loose = Tolerance(rtol=1.0, atol=1e9)
    assert value_status("a", "b", loose) == DIFFERS
    assert value_status(True, False, loose) == DIFFERS
    assert value_status(float("inf"), 1e300, loose) == DIFFERS
    assert value_status(float("nan"), 0.0, loose) == DIFFERS


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "0.1", True])
def test_bad_tolerances_are_usage_errors(bad):
    with pytest.raises(UsageError) as err:
        Tolerance(rtol=bad)
    assert "--rtol" in str(err.value)


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12))
def test_a_value_always_matches_itself_exactly(x):
    assert value_status(x, x) == SAME


@given(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.floats(min_value=0, max_value=1.0),
    st.floats(min_value=0, max_value=10.0),
)
def test_tolerance_matches_its_formula(r, o, rtol, atol):
    status = value_status(r, o, Tolerance(rtol=rtol, atol=atol))
    within = abs(o - r) <= atol + rtol * abs(r)
    if r == o:
        assert status == SAME
    else:
        assert status == (CLOSE if within else DIFFERS)


def test_compare_metrics_names_every_difference():
    recorded = {
        "metrics.json": {"accuracy": 0.91, "loss": 0.31, "epochs": 10},
        "eval/scores.json": {"f1": 0.8},
        INLINE_METRICS: {"seed_check": 0.5},
    }
    observed = {
        "metrics.json": {"accuracy": 0.91, "loss": 0.29, "runtime_s": 12.5},
        # eval/scores.json not produced; inline values not reported
    }
    checks = compare_metrics(recorded, observed)
    by = {(c.file, c.key): c for c in checks}
    assert by[("metrics.json", "accuracy")].status == SAME
    assert by[("metrics.json", "loss")].status == DIFFERS
    assert by[("metrics.json", "epochs")].status == MISSING
    assert by[("metrics.json", "runtime_s")].status == NEW
    assert by[("eval/scores.json", "f1")].status == MISSING
    assert by[(INLINE_METRICS, "seed_check")].status == MISSING

    diffs = differences(checks, ())
    assert len(diffs) == 4  # the new key is listed, not a difference
    text = "\n".join(diffs)
    assert "loss in metrics.json: recorded 0.31, rerun gave 0.29" in text
    assert "epochs in metrics.json was not produced" in text
    assert "eval/scores.json does not exist after the rerun" in text
    assert "seed_check (given to reprobox.capture)" in text


def test_unavailable_reason_is_shown():
    checks = compare_metrics(
        {INLINE_METRICS: {"acc": 1.0}}, {}, unavailable={INLINE_METRICS: "reprobox is absent"}
    )
    assert checks[0].status == MISSING
    assert "reprobox is absent" in checks[0].describe()


def test_metric_checks_serialise_to_valid_json():
    checks = compare_metrics({"m.json": {"x": float("nan")}}, {"m.json": {"x": float("inf")}})
    text = json.dumps([c.to_dict() for c in checks], allow_nan=False)
    assert json.loads(text)[0] == {
        "file": "m.json",
        "key": "x",
        "recorded": "nan",
        "observed": "inf",
        "status": DIFFERS,
    }


def test_compare_outputs_by_sha256():
    a, b = "a" * 64, "b" * 64
    recorded = [
        OutputFile("model.pkl", a, 10),
        OutputFile("preds.csv", a, 5),
        OutputFile("gone.bin", b, 1),
    ]
    observed = {
        "model.pkl": OutputFile("model.pkl", a, 10),
        "preds.csv": OutputFile("preds.csv", b, 6),
        "gone.bin": None,
    }
    checks = {c.path: c for c in compare_outputs(recorded, observed)}
    assert checks["model.pkl"].status == SAME
    assert checks["preds.csv"].status == DIFFERS
    assert checks["gone.bin"].status == MISSING
    text = "\n".join(differences((), tuple(checks.values())))
    assert "preds.csv differs" in text and "5 -> 6 bytes" in text
    assert "gone.bin was not produced" in text
    assert "model.pkl" not in text


def test_nan_recorded_reproduced_is_same_in_a_whole_comparison():
    checks = compare_metrics({"m.json": {"x": math.nan}}, {"m.json": {"x": math.nan}})
    assert [c.status for c in checks] == [SAME]
    assert differences(checks, ()) == ()


# --------------------------------------------------------------------------- hash names, folders,
# --------------------------------------------------------------------------- CSV/JSON, ignores

from reprobox.outcome import (  # noqa: E402
    IGNORED,
    FileDiff,
    OutputCheck,
    apply_ignores,
    compare_data,
    compare_manifests,
)


def test_report_fields_are_named_by_their_algorithm():
    md5 = OutputCheck("data/out", "a" * 32 + ".dir", "b" * 32 + ".dir", DIFFERS, algorithm="md5")
    data = md5.to_dict()
    assert data["recorded_md5"] == "a" * 32 + ".dir" and data["observed_md5"] == "b" * 32 + ".dir"
    assert "recorded_sha256" not in data and data["algorithm"] == "md5"
    sha = OutputCheck("model.pkl", "c" * 64, None, MISSING).to_dict()
    assert sha["recorded_sha256"] == "c" * 64 and sha["observed_sha256"] is None
    assert "md5" not in json.dumps(sha)


def test_a_differing_folder_names_the_files_inside():
    files = compare_manifests(
        {"a.csv": "1", "b.bin": "2", "gone.txt": "3"}, {"a.csv": "1", "b.bin": "X", "new.txt": "4"}
    )
    assert [(f.path, f.status) for f in files] == [
        ("b.bin", DIFFERS),
        ("gone.txt", MISSING),
        ("new.txt", NEW),
    ]
    check = OutputCheck(
        "out", "a" * 32 + ".dir", "b" * 32 + ".dir", DIFFERS, algorithm="md5", files=files
    )
    text = check.describe()
    assert "3 file(s) inside: b.bin differs; gone.txt missing; new.txt new" in text
    assert "a.csv" not in text


def test_ignore_output_marks_outputs_and_files_under_a_folder():
    a = OutputCheck("plots/loss.png", "a" * 64, "b" * 64, DIFFERS)
    b = OutputCheck("model.pkl", "a" * 64, "b" * 64, DIFFERS)
    folder = OutputCheck(
        "out",
        "a" * 32 + ".dir",
        "b" * 32 + ".dir",
        DIFFERS,
        algorithm="md5",
        files=(FileDiff("plots/x.png", DIFFERS),),
    )
    got = {c.path: c for c in apply_ignores((a, b, folder), ("plots", "out/plots/"))}
    assert got["plots/loss.png"].status == IGNORED and got["plots/loss.png"].ok
    assert got["model.pkl"].status == DIFFERS  # a sibling is not touched
    assert got["out"].status == IGNORED and got["out"].files[0].status == IGNORED
    assert differences((), tuple(got.values())) == (got["model.pkl"].describe(),)


def test_plots_is_not_a_prefix_of_plots2():
    c = OutputCheck("plots2/a.png", "a" * 64, "b" * 64, DIFFERS)
    assert apply_ignores((c,), ("plots",))[0].status == DIFFERS


CSV_A = b"epoch,loss,name\n1,0.5,a\n2,0.25,b\n"
CSV_B = b"epoch,loss,name\n1,0.5000001,a\n2,0.25,b\n"


def test_csv_numbers_within_the_tolerance_are_close():
    status, detail = compare_data("m.csv", CSV_A, CSV_B, Tolerance(rtol=1e-5))
    assert status == CLOSE and "row 2, column loss" in detail


def test_csv_numbers_beyond_the_tolerance_name_the_cell():
    status, detail = compare_data("m.csv", CSV_A, CSV_B, Tolerance(rtol=1e-9))
    assert status == DIFFERS
    assert detail == "row 2, column loss: recorded 0.5, now 0.5000001"


def test_csv_text_cells_and_shape_are_exact():
    assert (
        compare_data("m.csv", CSV_A, CSV_A.replace(b",b", b",c"), Tolerance(rtol=1))[1]
        == "row 3, column name: recorded 'b', now 'c'"
    )
    assert (
        compare_data("m.csv", CSV_A, CSV_A + b"3,0.1,c\n", Tolerance(rtol=1))[1]
        == "3 rows recorded, 4 now"
    )


def test_json_values_with_tolerance_and_keys_exact():
    a = b'{"acc": 0.9, "per_class": [0.8, 1.0], "name": "x"}'
    b = b'{"acc": 0.9000001, "per_class": [0.8, 1.0], "name": "x"}'
    assert compare_data("r.json", a, b, Tolerance(atol=1e-3))[0] == CLOSE
    assert compare_data("r.json", a, b, Tolerance())[1] == "acc: recorded 0.9, now 0.9000001"
    c = b'{"acc": 0.9, "per_class": [0.8, 1.0], "other": "x"}'
    status, detail = compare_data("r.json", a, c, Tolerance(rtol=1))
    assert status == DIFFERS and "keys differ" in detail and "name" in detail


def test_data_parsing_is_bounded():
    from reprobox import outcome

    deep = b"[" * 100 + b"]" * 100
    status, detail = compare_data("r.json", deep, deep + b" ", Tolerance(rtol=1))
    assert status == DIFFERS and "nested more than" in detail
    big = b"0," * (outcome.MAX_DATA_BYTES // 2 + 1)
    assert compare_data("x.csv", big, big + b"1", Tolerance(rtol=1)) == (
        DIFFERS,
        f"compared by bytes: over {outcome.MAX_DATA_BYTES // 1048576} MiB",
    )
    assert compare_data("r.json", b"{", b"{}", Tolerance(rtol=1))[1] == (
        "compared by bytes: not valid JSON"
    )
