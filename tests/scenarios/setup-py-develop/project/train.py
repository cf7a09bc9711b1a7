"""Imports the package developed in place, reads its metadata and runs its console script."""

import json
import subprocess
from importlib.metadata import version

import legacylib

json.dump(
    {
        "scaled": legacylib.scale(4),
        "script": float(subprocess.check_output(["legacy-scale"], text=True)),
        "minor": int(version("legacylib").split(".")[1]),
    },
    open("metrics.json", "w"),
)
