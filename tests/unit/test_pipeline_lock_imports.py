"""The lock's imports: a pip lock never loads the conda lock, and the Dockerfile renderer the
lock writes next is loaded while the index lookups are in flight (each in a fresh interpreter,
so no earlier test has loaded anything)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_renderer_loads_beside_the_lookups_and_only_when_wanted() -> None:
    out = _run(
        """
        import sys, threading
        from reprobox import pipeline
        assert "reprobox.build.render" not in sys.modules
        with pipeline._renderer_loading(False):
            pass
        print("build.render" in " ".join(sys.modules), end=" ")
        seen = []
        with pipeline._renderer_loading(True):
            seen.extend(t.name for t in threading.enumerate())
        print("reprobox.build.render" in sys.modules, "reprobox-load-renderer" in seen, end=" ")
        print(any(t.name == "reprobox-load-renderer" for t in threading.enumerate()))
        """
    )
    # not loaded when not wanted; loaded on a thread of its own, joined on the way out
    assert out == "False True True False"


def test_the_dockerfile_template_is_compiled_beside_the_lookups(tmp_path) -> None:
    out = _run(
        f"""
        import os, sys
        os.environ["XDG_CACHE_HOME"] = {str(tmp_path)!r}  # cold: no compiled template yet
        from reprobox import pipeline, templating
        assert "jinja2" not in sys.modules
        with pipeline._renderer_loading(True):
            pass
        env = templating._jinja_env()
        print(sorted(name for _loader, name in env.cache.keys()))
        """
    )
    # jinja2 keeps the compiled template: rendering it later compiles nothing
    assert out == "['Dockerfile.j2']"


def test_a_pip_lock_imports_neither_the_conda_lock_nor_the_build() -> None:
    out = _run(
        """
        import sys
        from pathlib import Path
        from reprobox import pipeline
        from reprobox.lock.result import LockResult
        sys.path.insert(0, ".")
        from tests.factories import make_env, make_exp
        from reprobox.store import Store
        import tempfile

        def fake_lock(env, **kw):
            text = "# none\\n"
            return LockResult(text, text, files={"requirements.lock": text})

        pipeline_lock = __import__("reprobox.lock", fromlist=["lock_environment"])
        pipeline_lock.lock_environment = fake_lock
        root = Path(tempfile.mkdtemp())
        store = Store(root)
        env = make_env()
        stored = store.save(make_exp(env), env)
        sealed, result = pipeline.lock_experiment(store, stored)
        print("reprobox.lock.condalock" in sys.modules, "Dockerfile" in sealed.experiment.files)
        build = ("reprobox.build.builder", "reprobox.build.context", "reprobox.engine")
        print(sorted(m for m in build if m in sys.modules))
        """
    )
    conda, build = out.splitlines()
    assert conda == "False True"
    # the Dockerfile is rendered without the build's orchestration, engines or context
    assert build == "[]"
