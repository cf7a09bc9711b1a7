"""Property tests over the store readers: a hostile or corrupt record is refused, never a crash.

``experiment.json`` and ``environment.json`` arrive in pull requests; whatever they hold, reading
them must either succeed or end in a :class:`RecordRefused` (exit status 2, printed without a
traceback), never a ``TypeError``, ``KeyError``, ``RecursionError`` or ``UnicodeEncodeError``, and
never another kind of error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st


from reprobox.errors import RecordRefused, ValidationError
from reprobox.model import Environment, Experiment
from reprobox.store import Store, read_json

from ..asserts import refuses
from ..factories import make_env, make_exp

# Any text, lone surrogates and control characters included: JSON can carry "\ud800" escapes.
# The hostile characters are drawn often, not left to the odds of a million code points.
HOSTILE = st.sampled_from(
    [
        "\ud800",
        "\udfff",
        "\x00",
        "\n",
        "\r",
        "\x1b",
        "\u202e",
        "\u2028",
        "\ufeff",
        "/",
        ".",
        "$",
        "`",
        ";",
        '"',
        "\\",
    ]
)
ANY_TEXT = st.text(HOSTILE | st.characters(codec=None, exclude_categories=()), max_size=20)
KEYS = (
    st.sampled_from(
        [
            "schema",
            "digest",
            "interpreter",
            "packages",
            "system_packages",
            "os",
            "hardware",
            "name",
            "version",
            "source",
            "kind",
            "url",
            "commit",
            "gpus",
            "cpu_flags",
            "memory_mib",
            "id",
            "git",
            "dvc",
            "outputs",
            "metrics",
            "env",
            "cwd",
            "created",
            "environment_digest",
            "path",
            "sha256",
            "size",
            "hash",
            "implementation",
            "libraries",
            "editable",
            "wheel_tags",
        ]
    )
    | ANY_TEXT
)

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | ANY_TEXT
    | st.sampled_from(
        [
            "reprobox.environment/1",
            "reprobox.experiment/2",
            "reprobox.environment/2",
            "index",
            "vcs",
            "directory",
            "archive",
            "x/y",
            "/",
        ]
    )
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=25,
)

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _read_or_refused(fn: Any, data: Any) -> None:
    """``fn(data)`` returns, or refuses the record: any other exception fails the test."""
    try:
        fn(data)
    except RecordRefused as exc:
        assert exc.exit_code == 2 and exc.message


def _set_path(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of ``doc`` with the value at ``path`` replaced (a path into nested dicts/lists)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        out = dict(doc)
        out[head] = _set_path(doc.get(head), rest, value)
        return out
    if isinstance(doc, list) and isinstance(head, int) and 0 <= head < len(doc):
        out_list = list(doc)
        out_list[head] = _set_path(doc[head], rest, value)
        return out_list
    return doc


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.extend(_paths(v, prefix + (i,)))
    return out


ENV_DOC = make_env().to_dict()
EXP_DOC = make_exp(make_env()).to_dict()
ENV_PATHS = _paths(ENV_DOC)
EXP_PATHS = _paths(EXP_DOC)


# --------------------------------------------------------------------------- fully arbitrary


@SETTINGS
@given(JSON)
@example({"schema": "reprobox.environment/1", "interpreter": {}, "packages": ["name"]})
@example(
    {
        "schema": "reprobox.environment/1",
        "interpreter": {"implementation": "cpython", "version": "3.11.7"},
        "packages": [],
        "hardware": {"gpus": [7]},
    }
)
def test_environment_from_arbitrary_json(data: Any) -> None:
    if isinstance(data, dict):
        _read_or_refused(Environment.from_dict, data)


@SETTINGS
@given(JSON)
@example(
    {
        "schema": "reprobox.experiment/2",
        "id": "x",
        "name": "n",
        "git": {"commit": "a"},
        "environment_digest": "d",
        "created": "c",
        "tool_version": "1",
        "files": {},
        "outputs": ["path"],
    }
)
def test_experiment_from_arbitrary_json(data: Any) -> None:
    if isinstance(data, dict):
        _read_or_refused(Experiment.from_dict, data)


# --------------------------------------------------------------- valid documents, one field hostile


@SETTINGS
@given(st.sampled_from(ENV_PATHS), JSON)
def test_environment_with_one_field_replaced(path: tuple[Any, ...], value: Any) -> None:
    doc = _set_path(ENV_DOC, path, value)
    if isinstance(doc, dict):
        _read_or_refused(Environment.from_dict, doc)


@SETTINGS
@given(st.sampled_from(EXP_PATHS), JSON)
def test_experiment_with_one_field_replaced(path: tuple[Any, ...], value: Any) -> None:
    doc = _set_path(EXP_DOC, path, value)
    if isinstance(doc, dict):

        def read(d: Any) -> None:
            exp = Experiment.from_dict(d)
            exp.content_matches_id  # noqa: B018 - hashing the content must not crash either

        _read_or_refused(read, doc)


def test_lone_surrogate_in_a_package_name_is_read_then_refused_by_name() -> None:
    """The record parses and hashes (no UnicodeEncodeError); its grammar check refuses the name."""
    from reprobox.model.check import validate_environment

    doc = _set_path(ENV_DOC, ("packages", 0, "name"), "num\ud800py")
    doc.pop("digest")
    env = Environment.from_dict(doc)
    assert env.digest.startswith("sha256:")
    # Packages are kept sorted by name, so the hostile one is the second.
    assert [p.name for p in env.packages][1] == "num\ud800py"
    with refuses(ValidationError, field="packages[1].name", names="lone surrogate"):
        validate_environment(env)


# --------------------------------------------------------------------- read_json on arbitrary files


@SETTINGS
@given(st.binary(max_size=200) | st.builds(lambda d: json.dumps(d).encode(), JSON))
def test_read_json_arbitrary_bytes(tmp_path_factory: Any, raw: bytes) -> None:
    path = Path(tmp_path_factory.mktemp("rj")) / "experiment.json"
    path.write_bytes(raw)
    _read_or_refused(read_json, path)


def test_read_json_deeply_nested(tmp_path: Path) -> None:
    path = tmp_path / "experiment.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with refuses(RecordRefused, names=str(path)):
        read_json(path)


def test_read_json_huge_integer(tmp_path: Path) -> None:
    path = tmp_path / "experiment.json"
    path.write_text('{"size": ' + "9" * 5000 + "}")
    with refuses(RecordRefused, names=str(path)):
        read_json(path)


def test_read_json_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "experiment.json").mkdir()
    with refuses(RecordRefused, names=["experiment.json", "not a plain file"]):
        read_json(tmp_path / "experiment.json")


# --------------------------------------------------------------------------- the whole load path


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.sampled_from(EXP_PATHS), JSON)
def test_store_load_with_one_experiment_field_replaced(
    tmp_path: Path, path: tuple[Any, ...], value: Any
) -> None:
    store = Store(tmp_path)
    env = make_env()
    stored = store.save(make_exp(env), env)
    original = (stored.path / "experiment.json").read_bytes()
    doc = _set_path(json.loads(original), path, value)
    (stored.path / "experiment.json").write_text(json.dumps(doc))
    try:
        store.load(stored.id)
        assert doc == json.loads(original)  # only an unchanged record loads
    except RecordRefused as exc:
        assert exc.exit_code == 2
    finally:
        (stored.path / "experiment.json").write_bytes(original)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.sampled_from(EXP_PATHS), JSON)
def test_resealed_hostile_field_is_a_reprobox_error(
    tmp_path: Path, path: tuple[Any, ...], value: Any
) -> None:
    """Re-sealed so that the id matches, a hostile field still ends in a refusal (exit 2)."""
    from ..hostile import reseal

    import tempfile

    store = Store(Path(tempfile.mkdtemp(dir=tmp_path)))
    env = make_env()
    stored = store.save(make_exp(env), env)

    def edit(doc: dict) -> None:
        changed = _set_path(dict(doc), path, value)
        doc.clear()
        doc.update(changed if isinstance(changed, dict) else {})

    try:
        new_id = reseal(stored.path, experiment=edit)
    except (TypeError, ValueError):
        return  # not even JSON-serialisable: no attacker can write it
    try:
        loaded = store.load(new_id)
        from reprobox.model.check import validate_experiment

        validate_experiment(loaded.experiment, loaded.environment, folder=loaded.path)
    except (RecordRefused, ValidationError) as exc:
        # Refused as bad input (exit status 2), not failed as an error of the tool (3).
        assert exc.exit_code == 2 and exc.message
