"""Build hostile captures the way an attacker would: edit a real capture by hand, then re-seal it.

The seal (the id over experiment.json and its manifest of every other file) is no secret: anyone
holding the folder can recompute it. So the tests of every attack on a capture start from a real
capture, edit it, and call :func:`reseal` so that its id matches again; the attack must then fail
for what it is, not because the seal is broken.

    new_id = reseal(folder, experiment=lambda d: d.update(cwd="../../etc"))
    new_id = reseal(folder, environment=lambda d: d["packages"].append({...}))
    (folder / "requirements.lock").write_text(evil); new_id = reseal(folder)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Optional

from reprobox.model import Environment, pretty_json, seal_id

Edit = Callable[[dict[str, Any]], Optional[Any]]


def reseal(
    folder: Path,
    *,
    experiment: Optional[Edit] = None,
    environment: Optional[Edit] = None,
    rename: bool = True,
) -> str:
    """Apply the edits, list every file of ``folder`` (but experiment.json) in the manifest,
    recompute environment.json's digest and the id, and rename the folder to the new id.

    Returns the new id. A symbolic link in the folder is listed with the sha256 of what it points
    to (an attacker would do the same to get a link past the manifest check).
    """
    folder = Path(folder)
    exp_path = folder / "experiment.json"
    doc = json.loads(exp_path.read_text(encoding="utf-8"))
    env_path = folder / "environment.json"
    if environment is not None:
        data = json.loads(env_path.read_text(encoding="utf-8"))
        environment(data)
        data.pop("digest", None)
        digest = Environment.from_dict(data).digest
        data["digest"] = digest
        env_path.write_text(pretty_json(data), encoding="utf-8")
        doc["environment_digest"] = digest
    if experiment is not None:
        experiment(doc)
    files = {}
    for p in sorted(folder.iterdir()):
        if p.name == "experiment.json":
            continue
        try:
            files[p.name] = "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
        except OSError:  # a dangling link, a folder: listed under some digest all the same
            files[p.name] = "sha256:" + "0" * 64
    doc["files"] = files
    doc.pop("id", None)
    new_id = seal_id(doc)
    doc["id"] = new_id
    exp_path.write_text(pretty_json(doc), encoding="utf-8")
    if rename and folder.name != new_id:
        folder.rename(folder.parent / new_id)
    return new_id


def plant_file(folder: Path, name: str, content: bytes | str) -> str:
    """Add or replace one file of a capture and re-seal it; returns the new id."""
    path = Path(folder) / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return reseal(folder)
