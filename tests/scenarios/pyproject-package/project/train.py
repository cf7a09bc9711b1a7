"""Uses the installed package, its metadata and its console script."""

import json
import subprocess
from importlib.metadata import version

import mylib

total = mylib.weighted_total([0.5, 1.25, 2.0])
from_script = float(subprocess.check_output(["mylib-total"], text=True))
json.dump(
    {"total": total, "script_total": from_script, "major": int(version("mylib").split(".")[1])},
    open("metrics.json", "w"),
)
