"""What a wheel of reprobox ships: every package of the source tree (an install from a wheel,
not an editable one, is what users and the rerun images get)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_of_the_source_tree_is_shipped() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    find = config["tool"]["setuptools"]["packages"]["find"]
    shipped = set(find_packages(str(ROOT), include=find["include"]))
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "reprobox").rglob("__init__.py")
    }
    assert found - shipped == set(), "[tool.setuptools.packages.find] misses these packages"
    assert {"reprobox.model", "reprobox.diff"} <= shipped
    assert "reprobox.templates" in shipped
    assert "package-dir" not in config["tool"]["setuptools"]  # the tree is the layout
