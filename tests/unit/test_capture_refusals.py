"""What a capture that cannot be stored says: a refused value of an installed package's own
metadata names the package and how to repair it; any other refused value keeps its hint."""

from __future__ import annotations

from dataclasses import replace

from reprobox.errors import UsageError
from reprobox.pipeline import _check_before_storing

from ..asserts import refuses
from ..factories import small, with_env


def test_a_packages_bad_metadata_names_the_package_and_the_repair() -> None:
    exp, env = small()
    pkg = env.packages[0]
    bad = replace(pkg, installer="pip; rm -rf /")
    env = replace(env, packages=(bad, *env.packages[1:]))
    with refuses(UsageError, names=[f"packages[{pkg.name}].installer", "pip; rm -rf /"]) as e:
        _check_before_storing(with_env(exp, env), env, name_given=False)
    assert f"installed metadata of {pkg.name} {pkg.version}" in e.value.hint
    assert f"--force-reinstall --no-deps {pkg.name}" in e.value.hint


def test_a_package_name_refused_by_index_names_that_package_quoted() -> None:
    exp, env = small()
    bad = replace(env.packages[1], name="my package")
    env = replace(env, packages=(env.packages[0], bad, *env.packages[2:]))
    with refuses(UsageError, names=["packages[1].name", "'my package'"]) as e:
        _check_before_storing(with_env(exp, env), env, name_given=False)
    assert "pip uninstall 'my package'" in e.value.hint


def test_a_refused_value_outside_the_packages_keeps_its_own_hint() -> None:
    exp, env = small()
    exp = replace(exp, git=replace(exp.git, branch="main; rm -rf /"))
    with refuses(UsageError, names=["git.branch"]) as e:
        _check_before_storing(with_env(exp, env), env, name_given=False)
    assert "rename the file or value" in e.value.hint
    assert "reinstall" not in e.value.hint


def test_a_field_key_in_other_digits_is_a_name_not_an_index() -> None:
    from reprobox.pipeline import _package_of_field

    _exp, env = small()
    assert _package_of_field("packages[\u00b2].installer", env) is None  # '²': no crash
    assert _package_of_field("packages[0].installer", env) == env.packages[0]


def test_an_output_that_is_the_repository_or_its_store_is_refused(tmp_path) -> None:
    """--output . was refused as 'a symbolic link leads outside' (.venv), and --output
    .reprobox was recorded, so that no rerun could ever match it."""
    from reprobox.pipeline import _repo_rel

    (tmp_path / ".reprobox").mkdir()
    for given, named in [
        (".", "the repository itself"),
        ("./", "the repository itself"),
        (".reprobox", "inside .reprobox/"),
        (".reprobox/local/x", "inside .reprobox/"),
        (".git/config", "inside .git/"),
    ]:
        with refuses(UsageError, names=["output", repr(given), named]):
            _repo_rel(tmp_path, tmp_path, given, "output")
    assert _repo_rel(tmp_path, tmp_path, "out/model.pkl", "output") == "out/model.pkl"
    assert _repo_rel(tmp_path, tmp_path, ".reprobox-notes.txt", "output") == ".reprobox-notes.txt"


def test_a_command_the_shell_cannot_read_is_refused_at_capture() -> None:
    from reprobox.pipeline import _refuse_bad_shell_syntax, _shell_syntax_check

    for bad in ("python train.py 'x", 'echo "a', "if true; then echo x", "echo $(date"):
        with refuses(UsageError, names=["--cmd", "/bin/sh"]):
            _refuse_bad_shell_syntax(_shell_syntax_check(bad))
    for good in ("python train.py --lr 0.1", "cd src && python -c 'print(1)' | tee log", "a; b"):
        _refuse_bad_shell_syntax(_shell_syntax_check(good))  # read, never run


def test_a_name_that_reads_as_an_id_prefix_is_refused() -> None:
    """`capture --name 3b0a` was accepted, and `show 3b0a` then found an id starting 3b0a."""
    exp, env = small()
    for name in ("3b0a", "deadbeef"):
        with refuses(UsageError, names=["--name", repr(name), "experiment id"]):
            _check_before_storing(with_env(replace(exp, name=name), env), env, name_given=True)
    for name in ("abc", "run-3b0a", "3B0A", "train"):  # too short, punctuation, capitals
        _check_before_storing(with_env(replace(exp, name=name), env), env, name_given=True)
