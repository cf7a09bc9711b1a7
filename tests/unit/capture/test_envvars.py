"""Replayable environment variables: an allowlist, never a secret, values checked."""

from __future__ import annotations

import pytest

from reprobox.capture import envvars
from reprobox.errors import ValidationError
from reprobox.model import envvars as allowlist
from reprobox.redact import is_secret_name

from ...asserts import refuses


def test_every_allowlisted_name_passes_the_secret_filter():
    # A name on the allowlist that the secret filter flags would be dead weight: make it visible.
    assert [n for n in allowlist.REPLAYED_NAMES if is_secret_name(n)] == []
    assert not allowlist.REPLAYED_NAMES & envvars.HOST_SPECIFIC_NAMES


def test_keeps_numerics_variables_and_drops_everything_else():
    environ = {
        "OMP_NUM_THREADS": "4",
        "MKL_NUM_THREADS": "4",
        "PYTHONHASHSEED": "0",
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "TF_DETERMINISTIC_OPS": "1",
        "XLA_FLAGS": "--xla_gpu_deterministic_ops=true",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LD_PRELOAD": "/tmp/evil.so",
        "PYTHONPATH": "/somewhere",
        "CUDA_VISIBLE_DEVICES": "3",
        "AWS_SECRET_ACCESS_KEY": "canary-9f1c",
        "HF_TOKEN": "hf_canary",
    }
    out = envvars.replayable_env(environ)
    assert out == {
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "LC_ALL": "C.UTF-8",
        "MKL_NUM_THREADS": "4",
        "OMP_NUM_THREADS": "4",
        "PYTHONHASHSEED": "0",
        "TF_DETERMINISTIC_OPS": "1",
        "TZ": "UTC",
        "XLA_FLAGS": "--xla_gpu_deterministic_ops=true",
    }
    assert list(out) == sorted(out)
    assert "canary" not in repr(out)


def test_device_selection_is_reported_but_never_replayed():
    environ = {"CUDA_VISIBLE_DEVICES": "0,1", "OMP_NUM_THREADS": "2"}
    assert "CUDA_VISIBLE_DEVICES" not in envvars.replayable_env(environ)
    assert envvars.host_specific_env(environ) == {"CUDA_VISIBLE_DEVICES": "0,1"}


def test_a_secret_looking_name_is_refused_even_when_allowlisted(monkeypatch):
    monkeypatch.setattr(allowlist, "REPLAYED_NAMES", allowlist.REPLAYED_NAMES | {"OMP_API_KEY"})
    assert envvars.replayable_env({"OMP_API_KEY": "x", "OMP_NUM_THREADS": "1"}) == {
        "OMP_NUM_THREADS": "1"
    }


@pytest.mark.parametrize(
    "value", ["1\n2", "a\x00b", "x\ry", "x" * (allowlist.MAX_VALUE_LENGTH + 1)]
)
def test_bad_values_are_left_out_at_capture(value):
    assert envvars.replayable_env({"OMP_NUM_THREADS": value, "TZ": "UTC"}) == {"TZ": "UTC"}


def test_tabs_and_spaces_are_fine():
    flags = "--xla_cpu_enable_fast_math=false\t--xla_force_host_platform_device_count=8"
    assert envvars.replayable_env({"XLA_FLAGS": flags}) == {"XLA_FLAGS": flags}


def test_check_replayable_accepts_a_recorded_mapping():
    recorded = {"TZ": "UTC", "OMP_NUM_THREADS": "8"}
    assert allowlist.check_replayable(recorded) == {"OMP_NUM_THREADS": "8", "TZ": "UTC"}


@pytest.mark.parametrize(
    "env, field",
    [
        ({"LD_PRELOAD": "/tmp/x.so"}, "env.LD_PRELOAD"),
        ({"PYTHONPATH": "/tmp"}, "env.PYTHONPATH"),
        ({"OMP_NUM_THREADS": "4\nRUN rm -rf /"}, "env.OMP_NUM_THREADS"),
        ({"OMP_NUM_THREADS": 4}, "env.OMP_NUM_THREADS"),
        ({"GITHUB_TOKEN": "x"}, "env.GITHUB_TOKEN"),
        ({"bad name": "x"}, "env"),
        ({"A=B": "x"}, "env"),
    ],
)
def test_check_replayable_refuses_hostile_records(env, field):
    with refuses(ValidationError, field=field, names="fix:"):
        allowlist.check_replayable(env)


def test_a_refused_secret_value_is_not_echoed():
    with refuses(ValidationError, field="env.GITHUB_TOKEN") as info:
        allowlist.check_replayable({"GITHUB_TOKEN": "ghp_canary123"})
    assert "ghp_canary123" not in str(info.value)
