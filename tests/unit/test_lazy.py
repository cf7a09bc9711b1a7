"""Package names imported on first use (reprobox.lazy), as the lock, build and base packages
use them: each in a fresh interpreter, so that nothing is loaded before."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_a_name_is_imported_on_first_use_and_kept() -> None:
    out = _run(
        """
        import sys
        import reprobox.build as build
        print("reprobox.build.builder" in sys.modules)
        fn = build.build_experiment
        print("reprobox.build.builder" in sys.modules, "build_experiment" in vars(build))
        print(fn is sys.modules["reprobox.build.builder"].build_experiment)
        """
    )
    assert out == ["False", "True", "True", "True"]


def test_an_unknown_name_is_an_attribute_error_and_submodules_still_import() -> None:
    out = _run(
        """
        import reprobox.base as base
        try:
            base.no_such_name
        except AttributeError as exc:
            print("AttributeError:" + str(exc).replace(" ", "_"))
        from reprobox.build import reinstate  # a submodule, not a listed name
        print(reinstate.__name__)
        """
    )
    assert out == [
        "AttributeError:module_'reprobox.base'_has_no_attribute_'no_such_name'",
        "reprobox.build.reinstate",
    ]
