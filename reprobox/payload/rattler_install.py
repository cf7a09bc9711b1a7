"""Install already fetched, hash-checked conda archives into a prefix with py-rattler, no solver.

Run as a child process (``python -m reprobox.payload.rattler_install``, a JSON request on
stdin) because py-rattler may abort while the interpreter shuts down after its work is done: the
child reports on stdout and leaves with ``os._exit``, so the caller sees a clean status.

Each archive becomes a record with ``RepoDataRecord.from_package_archive`` (which reads its
``info/`` and hashes it) and is installed from its local file; afterwards each
``conda-meta`` record gets back the URL the capture recorded, so the environment says where its
packages came from, not where the host cached them.

Request: ``{"prefix", "cache", "requested_specs": [...], "packages": [{"path",
"url", "channel", "md5", "sha256"}]}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any


async def _install(request: dict[str, Any]) -> None:
    # lazy: not for time: under main's try a missing py-rattler is reported, not a traceback
    import rattler

    records = []
    for pkg in request["packages"]:
        rec = await rattler.RepoDataRecord.from_package_archive(pkg["path"])
        if rec.sha256 is not None and pkg.get("sha256") and rec.sha256.hex() != pkg["sha256"]:
            raise RuntimeError(f"{pkg['path']}: sha256 changed since it was checked")
        rec.channel = pkg["channel"]
        if pkg.get("md5"):
            rec.md5 = bytes.fromhex(pkg["md5"])
        records.append(rec)
    specs = []
    for spec in request.get("requested_specs") or ():
        try:
            specs.append(rattler.MatchSpec(spec)._match_spec)
        except Exception:  # noqa: BLE001 - a spec rattler cannot parse is only informational
            continue
    await rattler.install(
        records,
        request["prefix"],
        cache_dir=request["cache"],
        requested_specs=specs or None,
        show_progress=False,
    )


def restore_urls(prefix: Path, packages: list[dict[str, Any]]) -> None:
    """Give each conda-meta record the URL and channel the capture recorded."""
    by_file = {Path(p["path"]).resolve().as_uri(): p for p in packages}
    meta = prefix / "conda-meta"
    for rec_path in sorted(meta.glob("*.json")):
        data = json.loads(rec_path.read_text(encoding="utf-8"))
        pkg = by_file.get(data.get("url", ""))
        if pkg is None:
            continue
        data["url"] = pkg["url"]
        data["channel"] = pkg["channel"]
        tmp = rec_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, rec_path)


def main() -> int:
    request = json.loads(sys.stdin.read())
    try:
        asyncio.run(_install(request))
        restore_urls(Path(request["prefix"]), request["packages"])
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises its error
        sys.stdout.write(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        sys.stdout.flush()
        return 1
    sys.stdout.write(json.dumps({"ok": True}))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    os._exit(code)
