"""The comparison rules of a rerun's metrics and outputs (reprobox.compare)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reprobox.compare import (
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
        "file": "m.json", "key": "x", "recorded": "nan", "observed": "inf", "status": DIFFERS,
    }


def test_compare_outputs_by_sha256():
    a, b = "a" * 64, "b" * 64
    recorded = [OutputFile("model.pkl", a, 10), OutputFile("preds.csv", a, 5),
                OutputFile("gone.bin", b, 1)]
    observed = {"model.pkl": OutputFile("model.pkl", a, 10),
                "preds.csv": OutputFile("preds.csv", b, 6), "gone.bin": None}
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
