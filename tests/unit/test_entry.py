"""The ``reprobox`` command's way out (:func:`reprobox.entry.leave`): the exit status sys.exit
would give, exit handlers run and streams flushed, without the interpreter's teardown — and the
usual way out where a thread is still running or a stream cannot be flushed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

_SCRIPT = """
import atexit, sys, threading, time
from reprobox.entry import leave

class Witness:
    def __del__(self):
        sys.__stderr__.write("torn down\\n")

witness = Witness()
atexit.register(lambda: sys.stderr.write("handler ran\\n"))
sys.stdout.write("buffered, no newline")  # a pipe: block-buffered, still in the buffer
mode, status = sys.argv[1], eval(sys.argv[2])
if mode == "thread":
    def late():
        time.sleep(0.3)
        open(sys.argv[3], "w").write("done")
    threading.Thread(target=late).start()
elif mode == "closed":
    sys.stdout.close()
leave(status)
"""


def _leave(mode: str, status: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode, status, *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "status, code", [("None", 0), ("0", 0), ("3", 3), ("-1", 255), ("256 + 5", 5), ("True", 1)]
)
def test_the_exit_status_is_what_sys_exit_gives(status: str, code: int) -> None:
    out = _leave("plain", status)
    assert out.returncode == code, out.stderr
    assert out.stdout == "buffered, no newline"  # flushed before the process ends
    assert "handler ran" in out.stderr
    assert "torn down" not in out.stderr  # no teardown: the fast way out was taken


def test_a_message_goes_to_stderr_with_status_one() -> None:
    out = _leave("plain", "'reprobox: no such thing'")
    assert out.returncode == 1
    assert out.stderr.splitlines()[:2] == ["handler ran", "reprobox: no such thing"]
    assert out.stdout == "buffered, no newline"


def test_a_running_thread_is_waited_for(tmp_path: Path) -> None:
    done = tmp_path / "done"
    out = _leave("thread", "4", str(done))
    assert out.returncode == 4, out.stderr
    assert done.read_text() == "done"  # the thread finished before the process ended
    assert out.stdout == "buffered, no newline"
    assert "handler ran" in out.stderr
    assert "torn down" in out.stderr  # the usual way out, teardown included


def test_a_stream_that_cannot_be_flushed_takes_the_usual_way_out() -> None:
    out = _leave("closed", "2")
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("handler ran") == 1  # run once, not again by the interpreter
    assert "torn down" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_command_runs_with_a_raised_collector_threshold_and_the_collector_on() -> None:
    """A command's process (and a child it forks, which inherits it) collects cyclic garbage
    rarely, never not at all."""
    script = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: sys.stderr.write(f'gc {gc.get_threshold()} {gc.isenabled()}'))\n"
        "sys.argv = ['reprobox', '--version']\n"
        "from reprobox.entry import GC_THRESHOLD, main\n"
        "sys.stderr.write(f'limit {GC_THRESHOLD}\\n')\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "version" in out.stdout
    limit = int(out.stderr.splitlines()[0].split()[1])
    assert limit > 700  # above Python's default
    first, second, third = (int(x) for x in out.stderr.split("gc (")[1].split(")")[0].split(","))
    assert first == limit
    assert (second, third) == (10, 10)  # the older generations as Python has them
    assert out.stderr.rstrip().endswith("True")
