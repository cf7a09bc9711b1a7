"""The probe runs in the user's interpreter and keeps what it reads until it answers: it raises
the collector's first threshold for its own short run, and leaves the collector on."""

from __future__ import annotations

import json
import subprocess
import sys

from reprobox.capture.interp import PROBE


def test_the_probe_answers_with_a_raised_collector_threshold() -> None:
    script = (
        "import gc, io, runpy, sys, contextlib\n"
        f"sys.argv = ['probe.py', '--no-files', '--no-native']\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        f"    probe = runpy.run_path({str(PROBE)!r}, run_name='probe')\n"
        "    assert probe['main'](sys.argv[1:]) == 0\n"
        "sys.stdout.write(out.getvalue())\n"
        "sys.stderr.write(f'{gc.get_threshold()} {gc.isenabled()}')\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["distributions"]  # a real answer
    threshold, enabled = done.stderr.rsplit(" ", 1)
    first, second, third = (int(x) for x in threshold.strip("()").split(","))
    assert first > 700 and (second, third) == (10, 10)
    assert enabled == "True"


def test_the_probe_leaves_without_teardown_its_answer_whole() -> None:
    """Run as a script, the probe leaves through ``os._exit`` once its answer is flushed: the
    answer is whole, the status 0, and no exit handler of the interpreter runs."""
    script = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: sys.stderr.write('teardown ran'))\n"
        f"sys.argv = ['probe.py', '--no-files', '--no-native']\n"
        f"runpy.run_path({str(PROBE)!r}, run_name='__main__')\n"
        "sys.stderr.write('returned')\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["distributions"]  # a real answer, flushed before leaving
    assert "teardown ran" not in done.stderr and "returned" not in done.stderr


def test_the_probe_leaves_with_its_status() -> None:
    done = subprocess.run(
        [sys.executable, "-I", str(PROBE), "--no-such-option"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert "unknown argument '--no-such-option'" in done.stderr  # flushed before leaving
