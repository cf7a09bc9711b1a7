"""The captures the build tests use (``tests/factories.py``): real ones recorded on a Debian 12
machine, and variants of them that keep their ids consistent."""

from __future__ import annotations

from reprobox.model import Hardware

from ...factories import datascience, gpu, mixed_sources, small, with_env


def test_fixtures_are_real_captures() -> None:
    exp, env = small()
    assert exp.environment_digest == env.digest and exp.content_matches_id
    exp, env = datascience()
    assert exp.environment_digest == env.digest
    assert len(env.packages) > 100
    assert env.os.id == "debian" and env.os.codename == "bookworm"


def test_variants_keep_ids_consistent() -> None:
    exp, env = small()
    changed = mixed_sources(env)
    moved = with_env(exp, changed)
    assert moved.environment_digest == changed.digest
    assert moved.id != exp.id and moved.content_matches_id
    assert isinstance(gpu(env).hardware, Hardware)
