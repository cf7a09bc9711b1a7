"""Text from a capture or a rerun never reaches a terminal with an escape sequence, a control,
bidi or invisible character: the cleaning itself, the CLI's output, and the output relays."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from reprobox import termsafe
from reprobox.cli import main
from reprobox.store import Store

from ..factories import make_env, make_exp

ESC = "\x1b"
#: A fake verdict: erase the line, go back to its start, paint "REPRODUCED" green.
FAKE_VERDICT = f"{ESC}[2K\r{ESC}[1;32mREPRODUCED: experiment 000000000000{ESC}[0m"
OSC8 = f"{ESC}]8;;https://evil.example/{ESC}\\click here{ESC}]8;;{ESC}\\"
BIDI = "\u202egnp.exe\u202c \u2066x\u2069 \u200fy"
HOSTILE = "run" + FAKE_VERDICT + OSC8 + BIDI + f"\x9b31m\x07\x08\x7f{ESC}c{ESC}(B{ESC}[8m"

#: Every character that must never reach a terminal from a capture (newline and tab aside).
FORBIDDEN = (
    {chr(c) for c in range(0x20) if chr(c) not in "\n\t"}
    | {chr(c) for c in range(0x7F, 0xA0)}
    | set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
    | set("\u200b\u2060\ufeff\u00ad")
)


def assert_terminal_safe(text: str) -> None:
    bad = sorted({f"U+{ord(c):04X}" for c in text if c in FORBIDDEN})
    assert not bad, f"terminal control characters in output: {bad}\n{text!r}"


# --------------------------------------------------------------------------- the cleaning


def test_sequences_are_removed_whole_and_text_is_kept() -> None:
    out = termsafe.clean(HOSTILE)
    assert_terminal_safe(out)
    # Parameters of a removed sequence never linger as text ("[1;32m", "8;;https://...").
    assert "[1;32m" not in out and "8;;" not in out and "evil.example" not in out
    assert "REPRODUCED: experiment 000000000000" in out and "click here" in out
    assert "gnp.exe" in out


def test_newlines_and_tabs_stay_in_blocks_but_not_in_fields() -> None:
    assert termsafe.clean("a\n\tb") == "a\n\tb"
    assert termsafe.field("a\nREPRODUCED\tb\r") == "a REPRODUCED b"
    assert termsafe.clean("x\u2028y") == "x\ny"


def test_unterminated_sequences_and_c1_forms() -> None:
    for text in (
        f"ok{ESC}]0;title",
        f"ok{ESC}[",
        f"ok{ESC}",
        "ok\x9d8;;x",
        "ok\x9b2J",
        f"ok{ESC}P+q{ESC}\\",
    ):
        out = termsafe.clean(text)
        assert out.startswith("ok") and ESC not in out
        assert_terminal_safe(out)


def test_emoji_joiners_and_ordinary_unicode_are_kept() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    text = f"café — naïve 数据 {family} Ω"
    assert termsafe.clean(text) == text and termsafe.field(text) == text


def test_a_lone_surrogate_becomes_a_replacement_character() -> None:
    name = b"bad\xff.txt".decode("utf-8", "surrogateescape")
    assert termsafe.clean(name) == "bad\ufffd.txt"


def test_stream_lines_keep_what_a_terminal_would_show_last() -> None:
    assert termsafe.stream_line("10%\r50%\rdone") == "done"
    assert termsafe.stream_line("line\r") == "line"
    assert termsafe.stream_line(f"{ESC}[32mok{ESC}[0m") == "ok"


def test_keep_colors_keeps_only_colours() -> None:
    text = f"{ESC}[1;32mgreen{ESC}[0m {ESC}]0;t{ESC}\\{ESC}[2Jx\r"
    assert termsafe.clean(text, keep_colors=True) == f"{ESC}[1;32mgreen{ESC}[0m x"


@given(st.text())
def test_clean_never_leaves_a_forbidden_character(text: str) -> None:
    assert_terminal_safe(termsafe.clean(text))
    assert_terminal_safe(termsafe.field(text))
    assert termsafe.clean(termsafe.clean(text)) == termsafe.clean(text)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids),
        max_leaves=8,
    )
)
def test_escaped_json_is_the_same_data_and_inert(data: object) -> None:
    raw = json.dumps(data, ensure_ascii=False, sort_keys=True)
    text = termsafe.escape_json(raw)
    assert_terminal_safe(text.replace("\n", ""))
    assert json.loads(text) == json.loads(raw)


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def plant_hostile(repo: Path) -> tuple[str, str]:
    """A clean experiment and one whose name, command, metric and env values hold escapes."""
    store = Store(repo)
    env = make_env()
    good = store.save(make_exp(env, name="good"), env)
    bad_exp = replace(
        make_exp(env, name="bad" + FAKE_VERDICT),
        command="python train.py" + OSC8 + BIDI,
        metrics={"m.json": {"acc" + FAKE_VERDICT: "0.5" + OSC8}},
        env={"LANG": "C" + FAKE_VERDICT},
    )
    bad = store.save(bad_exp.with_id(), env)
    return good.id, bad.id


def test_ls_prints_no_control_characters(repo: Path) -> None:
    good, bad = plant_hostile(repo)
    code, out, err = invoke("ls")
    assert_terminal_safe(out + err)
    assert good in out
    if bad in out:  # listed (not skipped as invalid): on its own line, its name cleaned
        line = next(x for x in out.splitlines() if bad in x)
        assert "badREPRODUCED" in line.replace(" ", "")
        assert len([x for x in out.splitlines() if "REPRODUCED" in x]) == 1


def test_ls_json_is_valid_exact_and_inert(repo: Path) -> None:
    good, bad = plant_hostile(repo)
    code, out, _ = invoke("ls", "--json")
    assert code == 0
    assert_terminal_safe(out.replace("\n", ""))
    rows = {r["id"]: r for r in json.loads(out)}
    assert good in rows
    if bad in rows:
        assert rows[bad]["name"] == "bad" + FAKE_VERDICT  # exact data, escaped in the text
        assert "\\u001b[2K" in out


def test_show_of_a_hostile_experiment_is_refused_cleanly(repo: Path) -> None:
    _good, bad = plant_hostile(repo)
    code, out, err = invoke("show", bad)
    assert code != 0
    assert_terminal_safe(out + err)
    assert "refusing name=" in err  # the field is named, its value shown escaped


def test_show_names_odd_file_names_visibly(repo: Path) -> None:
    good, _bad = plant_hostile(repo)
    folder = repo / ".reprobox" / "experiments" / good
    (folder / f"{ESC}[31mred{ESC}[0m\u202etxt.exe").write_text("x")
    code, out, err = invoke("show", good)
    assert_terminal_safe(out + err)
    assert "red" in out + err  # shown (escaped), or named by a refusal
    if code == 0:
        assert "\\x1b[31mred" in out


def test_errors_quoting_capture_values_are_clean(repo: Path) -> None:
    plant_hostile(repo)
    code, out, err = invoke("show", "nosuch" + FAKE_VERDICT)
    assert code == 2
    assert_terminal_safe(out + err)
    assert "nosuch" in err


def test_warnings_and_progress_go_through_the_cleaning(capsys: pytest.CaptureFixture[str]) -> None:
    from reprobox import cli

    cli._warn("value " + FAKE_VERDICT)
    cli._Progress(False)("step " + OSC8)
    err = capsys.readouterr().err
    # reprobox's own prefix keeps its style; the message does not carry any sequence of its own.
    body = err.replace(f"{ESC}[33m", "").replace(f"{ESC}[1m", "").replace(f"{ESC}[0m", "")
    body = body.replace(f"{ESC}[2m", "").replace(f"{ESC}[22m", "").replace(f"{ESC}[39m", "")
    assert "REPRODUCED" in body and "click here" in body
    assert_terminal_safe(body)


# --------------------------------------------------------------------------- relays


def _run_on_pty(code: str) -> str:
    """Run ``code`` in a Python whose stdout and stderr are a terminal; what the terminal got."""
    master, slave = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        cwd=Path(__file__).resolve().parents[2],
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    child.wait(timeout=60)
    os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


HOSTILE_SCRIPT = (
    "import sys; sys.stdout.write('first\\n' + "
    + repr(FAKE_VERDICT + OSC8 + BIDI)
    + " + '\\nlast'); sys.stdout.flush()"
)


def test_a_rerun_on_a_terminal_is_relayed_cleaned() -> None:
    # The venv backend and the host's DVC run the recorded command through proc.run(capture=False).
    code = (
        "from reprobox import proc\n"
        f"done = proc.run([{sys.executable!r}, '-c', {HOSTILE_SCRIPT!r}], check=False,"
        " capture=False)\n"
        "print('REAL VERDICT: DIFFERS', done.returncode)\n"
    )
    seen = _run_on_pty(code).replace("\r\n", "\n")
    assert_terminal_safe(seen)
    assert "first\n" in seen and "last\n" in seen and "click here" in seen
    assert seen.rstrip().endswith("REAL VERDICT: DIFFERS 0")


def test_a_rerun_into_a_pipe_keeps_its_bytes() -> None:
    # Not a terminal (a file, a pipe): the command's output is kept exact for whoever reads it.
    code = (
        "from reprobox import proc\n"
        f"proc.run([{sys.executable!r}, '-c', {HOSTILE_SCRIPT!r}], check=False, capture=False)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    ).stdout
    assert (FAKE_VERDICT + OSC8 + BIDI).encode() in out


def test_the_docker_relay_cleans_on_a_terminal_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from reprobox.backends import docker

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    docker._to_stderr(FAKE_VERDICT + OSC8)
    seen = capsys.readouterr().err
    assert_terminal_safe(seen.rstrip("\n"))
    assert "REPRODUCED" in seen and "click here" in seen
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    docker._to_stderr(FAKE_VERDICT)
    assert capsys.readouterr().err == FAKE_VERDICT + "\n"


def test_the_build_log_relay_is_cleaned() -> None:
    from reprobox.engine import BuildLog

    seen: list[str] = []
    log = BuildLog(seen.append, ["install packages"])
    log.feed("#5 [1/1] RUN pip install x")
    log.feed("#5 0.1 ERROR: " + FAKE_VERDICT + OSC8)
    log.feed("#5 ERROR: process did not complete successfully")
    for line in seen + list(log.tail) + [log.error_text()]:
        assert_terminal_safe(line.replace("\n", ""))


def test_a_metric_key_written_by_the_rerun_cannot_start_a_line() -> None:
    from reprobox.outcome import MetricCheck

    check = MetricCheck(
        "m.json", "acc\nREPRODUCED: experiment 000000000000" + FAKE_VERDICT, None, 1.0, "new"
    )
    text = check.describe()
    assert "\n" not in text and "acc REPRODUCED: experiment 000000000000" in text
    assert_terminal_safe(text)


def test_verbose_logs_are_cleaned(repo: Path) -> None:
    import logging

    from reprobox import cli

    record = logging.LogRecord(
        "reprobox.proc",
        logging.DEBUG,
        __file__,
        1,
        "run: %s",
        ("python train.py" + FAKE_VERDICT,),
        None,
    )
    text = cli._CleanFormatter("%(name)s: %(message)s").format(record)
    assert_terminal_safe(text)
    assert text.startswith("reprobox.proc: run: python train.py")
