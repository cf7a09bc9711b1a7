"""Metrics files (JSON, YAML, TOML, CSV/TSV) and output hashing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from reprobox.workspace import metrics as m
from reprobox.errors import ReproboxError, ValidationError

from ...asserts import refuses


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


# --------------------------------------------------------------------------- formats


def test_json_nested_is_flattened_and_numbers_stay_numbers(tmp_path):
    p = write(
        tmp_path, "metrics.json", '{"acc": 0.93, "epochs": 10, "loss": {"train": 0.1, "val": 0.2}}'
    )
    out = m.read_metrics(p)
    assert out == {"acc": 0.93, "epochs": 10, "loss.train": 0.1, "loss.val": 0.2}
    assert type(out["epochs"]) is int


def test_yaml_and_yml(tmp_path):
    for name in ("scores.yaml", "scores.yml"):
        p = write(tmp_path, name, "auc: 0.81\nper_class:\n  cat: 0.7\n  dog: 0.9\n")
        assert m.read_metrics(p) == {"auc": 0.81, "per_class.cat": 0.7, "per_class.dog": 0.9}


def test_toml(tmp_path):
    p = write(tmp_path, "m.toml", 'rmse = 1.5\n[test]\nr2 = 0.75\nn = 100\nlabel = "final"\n')
    assert m.read_metrics(p) == {"rmse": 1.5, "test.r2": 0.75, "test.n": 100, "test.label": "final"}


def test_unknown_suffix_is_read_as_yaml_like_dvc(tmp_path):
    assert m.read_metrics(write(tmp_path, "metrics.txt", "a: 1\n")) == {"a": 1}


def test_scalar_and_empty_files(tmp_path):
    assert m.read_metrics(write(tmp_path, "one.json", "0.5")) == {"value": 0.5}
    assert m.read_metrics(write(tmp_path, "empty.yaml", "")) == {}


def test_csv_single_row_is_header_to_value(tmp_path):
    p = write(tmp_path, "scores.csv", "accuracy,f1,n,model\n0.91,0.88,500,resnet\n")
    out = m.read_metrics(p)
    assert out == {"accuracy": 0.91, "f1": 0.88, "n": 500, "model": "resnet"}
    assert type(out["n"]) is int


def test_csv_several_rows_are_indexed_like_a_json_list(tmp_path):
    p = write(tmp_path, "history.csv", "epoch,loss\n1,0.9\n2,0.5\n")
    assert m.read_metrics(p) == {"0.epoch": 1, "0.loss": 0.9, "1.epoch": 2, "1.loss": 0.5}


def test_tsv_and_crlf_and_bom(tmp_path):
    p = write(tmp_path, "m.tsv", b"\xef\xbb\xbfauc\tloss\r\n0.7\t1e-3\r\n")
    assert m.read_metrics(p) == {"auc": 0.7, "loss": 0.001}


def test_csv_cells_that_are_not_plain_numbers_stay_text(tmp_path):
    p = write(tmp_path, "m.csv", "a,b,c\n1_000,0x10,nan\n")
    out = m.read_metrics(p)
    assert out["a"] == "1_000" and out["b"] == "0x10"
    assert out["c"] != out["c"]  # NaN is a float, as in JSON


# --------------------------------------------------------------------------- malformed files


@pytest.mark.parametrize(
    "name, text, where",
    [
        ("bad.json", '{"a": 1,\n "b": }\n', "line 2"),
        ("bad.yaml", "a: 1\nb: [1, 2\nc: 3\n", "line 3"),
        ("bad.toml", "a = 1\nb = \n", "line 2"),
        ("bad.csv", "a,b\n1,2\n3\n", "line 3"),
        ("dup.csv", "a,a\n1,2\n", "line 1"),
    ],
)
def test_malformed_files_name_the_file_and_line(tmp_path, name, text, where):
    p = write(tmp_path, name, text)
    with refuses(m.ResultFileError, names=[str(p), where]) as info:
        m.read_metrics(p)
    assert info.value.hint
    assert isinstance(info.value, ReproboxError)


def test_not_utf8(tmp_path):
    p = write(tmp_path, "m.json", b'{"a":\n "\xff"}')
    with refuses(m.ResultFileError, names=[str(p), "line 2"]):
        m.read_metrics(p)


def test_missing_folder_and_oversized(tmp_path, monkeypatch):
    with refuses(m.ResultFileError, names=["nope.json", "does not exist"]):
        m.read_metrics(tmp_path / "nope.json")
    with refuses(m.ResultFileError, names=[str(tmp_path), "not a regular file"]):
        m.read_metrics(tmp_path)
    monkeypatch.setattr(m, "MAX_METRICS_BYTES", 10)
    with refuses(m.ResultFileError, names=["big.json", "MiB"]):
        m.read_metrics(write(tmp_path, "big.json", '{"a": 1234567890}'))


# --------------------------------------------------------------------------- outputs


def test_file_output(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 7)  # more than one read chunk
    write(tmp_path, "model/weights.bin", data)
    out = m.hash_output(tmp_path, "model/weights.bin")
    assert out.path == "model/weights.bin"
    assert out.sha256 == hashlib.sha256(data).hexdigest()
    assert out.size == len(data)


def test_directory_output_manifest(tmp_path):
    write(tmp_path, "out/a.txt", "a")
    write(tmp_path, "out/sub/b.txt", "bb")
    first = m.hash_output(tmp_path, "out/")
    assert first.path == "out" and first.size == 3
    expected = "".join(
        f"{hashlib.sha256(c).hexdigest()}  {n}\n"
        for n, c in sorted([("a.txt", b"a"), ("sub/b.txt", b"bb")])
    )
    assert first.sha256 == hashlib.sha256(expected.encode()).hexdigest()
    assert m.hash_output(tmp_path, "out") == first  # stable
    (tmp_path / "out/sub/b.txt").rename(tmp_path / "out/sub/c.txt")
    renamed = m.hash_output(tmp_path, "out")
    assert renamed.sha256 != first.sha256 and renamed.size == first.size
    write(tmp_path, "out/sub/c.txt", "BB")
    assert m.hash_output(tmp_path, "out").sha256 != renamed.sha256


def test_symlinks_inside_the_tree_are_fine(tmp_path):
    write(tmp_path, "real.txt", "x")
    (tmp_path / "link.txt").symlink_to("real.txt")
    assert m.hash_output(tmp_path, "link.txt").sha256 == hashlib.sha256(b"x").hexdigest()


def test_symlink_leaving_the_tree_is_refused(tmp_path):
    outside = tmp_path / "outside"
    write(outside, "secret.txt", "s")
    root = tmp_path / "repo"
    root.mkdir()
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "dirlink").symlink_to(outside)
    write(root, "out/ok.txt", "ok")
    (root / "out" / "escape").symlink_to(outside / "secret.txt")
    # A folder is refused naming the link inside it that leaves.
    for rel, named in (
        ("link.txt", "link.txt"),
        ("dirlink", "dirlink"),
        ("dirlink/secret.txt", "dirlink/secret.txt"),
        ("out", "out/escape"),
    ):
        with refuses(
            ValidationError, field="output", names=[repr(named), "outside the repository"]
        ):
            m.hash_output(root, rel)


@pytest.mark.parametrize(
    ("rel", "reason"),
    [("../x", "'..'"), ("a/../../x", "'..'"), ("/etc/passwd", "absolute"), ("", "empty")],
)
def test_paths_leaving_the_root_are_refused(tmp_path, rel, reason):
    with refuses(ValidationError, field="output", names=[repr(rel), reason]):
        m.hash_output(tmp_path, rel)


def test_missing_output(tmp_path):
    with refuses(m.ResultFileError, names=["model.pkl", "does not exist"]):
        m.hash_output(tmp_path, "model.pkl")


# --------------------------------------------------------------------------- bounded parsing

BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
)  # nine levels of ten: 10**9 leaves once aliases are expanded


def test_yaml_alias_bomb_is_refused_with_bounded_memory(tmp_path):
    """Measured in a child process: its peak RSS stays far below what expanding the aliases
    would take (an address-space limit keeps an unguarded parser from taking the machine)."""
    import json
    import subprocess
    import sys

    bomb = write(tmp_path, "metrics.yaml", BOMB)
    child = (
        "import json, resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "from reprobox.workspace.metrics import read_metrics\n"
        "from reprobox.errors import ReproboxError\n"
        "try:\n"
        "    read_metrics(sys.argv[1]); msg = None\n"
        "except ReproboxError as exc:\n"
        "    msg = exc.message\n"
        "except MemoryError:\n"
        "    msg = 'MemoryError'\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child of a large
        # test process would report its parent's peak.
        "rss = next(int(line.split()[1]) for line in open('/proc/self/status')\n"
        "           if line.startswith('VmHWM:'))\n"
        "print(json.dumps({'message': msg, 'rss_kib': rss}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", child, str(bomb)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["message"] is not None and "metrics.yaml" in result["message"]
    assert "YAML anchor &a" in result["message"] and "line 1" in result["message"]
    assert result["rss_kib"] < 200 * 1024, result


def test_yaml_anchor_and_alias_are_refused_even_small(tmp_path):
    p = write(tmp_path, "m.yaml", "base: &b {lr: 0.1}\nrun: *b\n")
    with refuses(m.ResultFileError, names="m.yaml, line 1: YAML anchor &b"):
        m.read_metrics(p)


def test_deep_nesting_is_refused_in_every_format(tmp_path):
    cases = {
        "deep.json": "[" * 100_000 + "]" * 100_000,
        "deep.yaml": "[" * 100_000 + "]" * 100_000,
        "deep.toml": "a = " + "[" * 5_000 + "]" * 5_000 + "\n",
    }
    for name, text in cases.items():
        with refuses(m.ResultFileError, names=[name, "nest"]):
            m.read_metrics(write(tmp_path, name, text))


def test_nesting_within_the_limit_is_read(tmp_path):
    p = write(tmp_path, "ok.json", "[" * 10 + "1" + "]" * 10)
    assert m.read_metrics(p) == {"0.0.0.0.0.0.0.0.0.0": 1}


def test_too_many_values_is_a_data_file(tmp_path):
    p = write(tmp_path, "big.json", "[" + ",".join("1" for _ in range(m.MAX_METRIC_KEYS + 1)) + "]")
    with refuses(m.ResultFileError, names=["big.json", "holds 10001 values"]):
        m.read_metrics(p)


def test_oversize_metrics_refused_before_reading(tmp_path):
    p = tmp_path / "huge.json"
    with open(p, "wb") as fh:
        fh.truncate(m.MAX_METRICS_BYTES + 1)  # sparse: refused on its size, never read
    with refuses(m.ResultFileError, names=["huge.json", "over the 10 MiB"]):
        m.read_metrics(p)


def test_a_special_file_is_not_read(tmp_path):
    fifo = tmp_path / "m.json"
    os.mkfifo(fifo)
    with refuses(m.ResultFileError, names=[str(fifo), "not a regular file"]):
        m.read_metrics(fifo)


def test_the_rerun_writing_a_bomb_is_a_named_difference(tmp_path):
    """run.py reads the rerun's metrics (files and the inline values) through the same limits:
    a bomb ends as an unreadable metrics file in the verdict, naming why."""
    from types import SimpleNamespace

    from reprobox.run import _read_observed_metrics

    checkout = tmp_path / "checkout"
    (checkout / ".reprobox-run").mkdir(parents=True)
    write(checkout, "metrics.yaml", BOMB)
    inline = write(checkout, ".reprobox-run/metrics.json", "[" * 100_000 + "]" * 100_000)
    plan = SimpleNamespace(metrics_files=("metrics.yaml",), inline_metrics=True)
    observed, reasons = _read_observed_metrics(checkout, plan, inline)  # type: ignore[arg-type]
    assert observed == {"metrics.yaml": None, "<inline>": None}
    assert "YAML anchor" in reasons["metrics.yaml"]
    assert "nested" in reasons["<inline>"]


@pytest.mark.parametrize(
    "name, text",
    [
        ("m.csv", "loss\n" + "9" * 5000 + "\n"),
        ("m.yaml", "loss: " + "9" * 5000 + "\n"),
        ("m.toml", "loss = " + "9" * 5000 + "\n"),
        ("m.json", '{"loss": ' + "9" * 5000 + "}"),
    ],
)
def test_an_integer_of_more_digits_than_python_reads_is_refused(tmp_path, name, text):
    """Python refuses to convert integers of more than 4300 digits (ValueError): named, not a
    traceback, in every format."""
    p = tmp_path / name
    p.write_text(text)
    with refuses(m.ResultFileError, names=[name]):
        m.read_metrics(p)
