"""Write recorded post-install changes back over installed files; run *inside* the rebuilt env.

``python reinstate.py MANIFEST FOLDER``: MANIFEST is a JSON list of ``{"package", "path",
"file", "sha256"}``; FOLDER holds the files (sealed into the experiment at capture). Standard
library only (Python >= 3.8), like the probe: it runs with the rebuilt environment's interpreter.

Only what the capture saw changed is written, and only where a rebuild put the same file: the
path must be one the named distribution's RECORD lists, inside its site-packages folder, an
existing regular file (never a link), and not a ``.pth`` file (those run at every start); the
content must have the recorded sha256. Anything else stops with exit status 2 and one line
naming the entry: nothing outside the installed packages is ever written.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from importlib import metadata


def fail(message: str) -> int:
    sys.stderr.write(f"reprobox: cannot re-apply a post-install change: {message}\n")
    return 2


def main(argv: list) -> int:
    if len(argv) != 2:
        return fail("usage: reinstate.py MANIFEST FOLDER")
    manifest, folder = argv
    with open(manifest, "rb") as fh:
        entries = json.loads(fh.read().decode("utf-8"))
    for e in entries:
        package, rel, name, digest = e["package"], e["path"], e["file"], e["sha256"]
        where = f"{rel} of {package}"
        parts = rel.split("/")
        if rel.startswith("/") or ".." in parts or "" in parts or rel.endswith(".pth"):
            return fail(f"{where}: not a path a package installs")
        if os.sep in name or name.startswith("."):
            return fail(f"{where}: bad file name {name!r}")
        with open(os.path.join(folder, name), "rb") as fh:
            data = fh.read()
        if hashlib.sha256(data).hexdigest() != digest:
            return fail(f"{where}: the content does not have the recorded sha256")
        try:
            dist = metadata.distribution(package)
        except metadata.PackageNotFoundError:
            return fail(f"{where}: {package} is not installed")
        listed = {str(f).replace(os.sep, "/") for f in (dist.files or ())}
        if rel not in listed:
            return fail(f"{where}: not a file {package} installed")
        site = os.path.realpath(str(dist.locate_file("")))
        target = str(dist.locate_file(rel))
        if os.path.islink(target) or not os.path.isfile(target):
            return fail(f"{where}: not a regular file here")
        if not os.path.realpath(target).startswith(site + os.sep):
            return fail(f"{where}: outside the site-packages folder")
        mode = os.stat(target).st_mode & 0o777
        tmp = f"{target}.reprobox-{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
        sys.stderr.write(f"reprobox: re-applied the recorded change to {where}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
