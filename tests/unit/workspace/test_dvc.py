"""Reading a DVC project without DVC: files as DVC 3 (and DVC 2) write them."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from reprobox.workspace import dvc
from reprobox.errors import DvcError
from reprobox.safefs import UnsafePath

from ...asserts import refuses

# Written by `dvc repro` / `dvc add` / `dvc remote add -d` (DVC 3.67) for a 2-stage pipeline.
DVC_YAML = """\
stages:
  prepare:
    cmd: mkdir -p out && awk '{s+=$1} END {print s}' data/raw.csv > out/sum.txt
    deps:
    - data/raw.csv
    params:
    - seed
    outs:
    - out/sum.txt
  score:
    cmd: python score.py
    deps:
    - out/sum.txt
    params:
    - train.lr
    metrics:
    - metrics.json:
        cache: false
metrics:
- dvclive/metrics.json
- eval/${split}/scores.json
"""

DVC_LOCK = """\
schema: '2.0'
stages:
  prepare:
    cmd: mkdir -p out && awk '{s+=$1} END {print s}' data/raw.csv > out/sum.txt
    deps:
    - path: data/raw.csv
      hash: md5
      md5: d632eba71107bf7bc3ec423eab256d78
      size: 292
    params:
      params.yaml:
        seed: 3
    outs:
    - path: out/sum.txt
      hash: md5
      md5: 9fdc03fef9ff73d752cddfe000401e74
      size: 5
  score:
    cmd: python score.py
    deps:
    - path: out/sum.txt
      hash: md5
      md5: 9fdc03fef9ff73d752cddfe000401e74
      size: 5
    params:
      params.yaml:
        train.lr: 0.1
    outs:
    - path: metrics.json
      hash: md5
      md5: 1726fc2716c7096e281d73df64804b2d
      size: 35
"""

RAW_DVC = """\
outs:
- md5: d632eba71107bf7bc3ec423eab256d78
  size: 292
  hash: md5
  path: raw.csv
"""

CONFIG = """\
[core]
    remote = store
['remote "store"']
    url = /srv/dvc-store
"""

# A sub-project pipeline in the DVC 2 format (md5 without "hash: md5"), with a working folder.
SUB_YAML = """\
stages:
  featurize:
    wdir: work
    cmd: python featurize.py
    outs:
    - features
    metrics:
    - eval.json:
        cache: false
  train:
    foreach: [a, b]
    do:
      cmd: python train.py ${item}
      outs:
      - model-${item}.pkl
"""

SUB_LOCK = """\
schema: '2.0'
stages:
  featurize:
    cmd: python featurize.py
    outs:
    - path: features
      md5: 153aad06d376b6595932470e459ef42a.dir
      size: 8437363
      nfiles: 2
  train@a:
    cmd: python train.py a
    outs:
    - path: model-a.pkl
      md5: 0ff8e3a0e4a5bb57e9e6bd1ff2d8b8e1
      size: 12
"""


def project(tmp_path: Path) -> Path:
    files = {
        ".dvc/config": CONFIG,
        ".dvc/config.local": "[core]\n    remote = canary-local\n['remote \"store\"']\n"
        "    password = hunter2-canary\n",
        "dvc.yaml": DVC_YAML,
        "dvc.lock": DVC_LOCK,
        "data/raw.csv.dvc": RAW_DVC,
        "sub/dvc.yaml": SUB_YAML,
        "sub/dvc.lock": SUB_LOCK,
    }
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_not_a_dvc_project(tmp_path):
    assert not dvc.is_dvc_project(tmp_path)
    assert dvc.dvc_info(tmp_path) is None


def test_reads_outputs_params_stages_metrics_and_remote(tmp_path):
    root = project(tmp_path)
    assert dvc.is_dvc_project(root)
    info = dvc.dvc_info(root)
    assert info is not None
    outs = {o.path: (o.hash, o.hash_name, o.stage) for o in info.outputs}
    assert outs == {
        "data/raw.csv": ("d632eba71107bf7bc3ec423eab256d78", "md5", "data/raw.csv.dvc"),
        "out/sum.txt": ("9fdc03fef9ff73d752cddfe000401e74", "md5", "prepare"),
        "metrics.json": ("1726fc2716c7096e281d73df64804b2d", "md5", "score"),
        "sub/work/features": (
            "153aad06d376b6595932470e459ef42a.dir",
            "md5-dos2unix",
            "sub/dvc.yaml:featurize",
        ),
        "sub/model-a.pkl": (
            "0ff8e3a0e4a5bb57e9e6bd1ff2d8b8e1",
            "md5-dos2unix",
            "sub/dvc.yaml:train@a",
        ),
    }
    assert info.params == {"params.yaml": {"seed": 3, "train.lr": 0.1}}
    assert info.stages == ("prepare", "score", "sub/dvc.yaml:featurize", "sub/dvc.yaml:train")
    # templated paths need DVC to resolve them: left out rather than guessed
    assert info.metrics_files == ("dvclive/metrics.json", "metrics.json", "sub/work/eval.json")
    assert info.remote == "store"


def test_config_local_is_never_read(tmp_path):
    info = dvc.dvc_info(project(tmp_path))
    text = repr(info.to_dict())
    assert "canary" not in text and "hunter2" not in text and "/srv/dvc-store" not in text


def test_lock_digest(tmp_path):
    root = project(tmp_path)
    (root / "sub/dvc.lock").unlink()
    (root / "sub/dvc.yaml").unlink()
    info = dvc.dvc_info(root)
    assert info.lock_digest == hashlib.sha256(DVC_LOCK.encode()).hexdigest()  # `sha256sum dvc.lock`
    (root / "dvc.lock").write_text(DVC_LOCK.replace("seed: 3", "seed: 4"))
    assert dvc.dvc_info(root).lock_digest != info.lock_digest


def test_several_lock_files_give_one_digest_that_follows_each(tmp_path):
    root = project(tmp_path)
    first = dvc.dvc_info(root).lock_digest
    (root / "sub/dvc.lock").write_text(SUB_LOCK.replace("size: 12", "size: 13"))
    assert dvc.dvc_info(root).lock_digest not in (first, None)


def test_project_without_git_is_walked(tmp_path):
    root = project(tmp_path)
    (root / ".venv/lib").mkdir(parents=True)
    (root / ".venv/lib/noise.dvc").write_text("outs: [{path: x, md5: ffff}]\n")
    info = dvc.dvc_info(root)
    assert "x" not in {o.path for o in info.outputs}
    assert len(info.outputs) == 5


def test_broken_yaml_names_the_file(tmp_path):
    root = project(tmp_path)
    (root / "dvc.yaml").write_text("stages:\n  a: [\n")
    with refuses(DvcError, names="dvc.yaml is not valid YAML (line 3)"):
        dvc.dvc_info(root)


# --------------------------------------------------------------------------- hostile DVC files

SECRET_LOCK = """\
schema: '2.0'
stages:
  prepare:
    cmd: true
    params:
      params.yaml:
        api_key: OUTSIDE-SECRET
"""


@pytest.mark.parametrize(
    "rel, outside",
    [
        ("dvc.lock", SECRET_LOCK),
        ("data/raw.csv.dvc", "outs:\n- md5: OUTSIDE-SECRET\n  path: raw.csv\n"),
        (".dvc/config", "[core]\n    remote = OUTSIDE-SECRET\n"),
        ("sub/dvc.yaml", "stages:\n  OUTSIDE-SECRET: {cmd: 'true'}\n"),
    ],
)
def test_a_dvc_file_that_is_a_link_is_refused_and_what_it_names_never_read(tmp_path, rel, outside):
    """A checkout may commit dvc.lock as a link to a file of the machine that captures it: the
    file's content must never reach the record (params, remote name) nor its digest."""
    root = project(tmp_path / "repo")
    secret = tmp_path / "secret.yaml"
    secret.write_text(outside)
    (root / rel).unlink()
    (root / rel).symlink_to(secret)
    with refuses(UnsafePath, names=[rel, "symbolic link"]) as info:
        dvc.dvc_info(root)
    assert "OUTSIDE-SECRET" not in info.value.message


def test_a_dot_dvc_folder_that_is_a_link_is_refused(tmp_path):
    root = project(tmp_path / "repo")
    elsewhere = tmp_path / "elsewhere"
    (root / ".dvc").rename(elsewhere)
    (root / ".dvc").symlink_to(elsewhere)
    with refuses(UnsafePath, names=[".dvc", "symbolic link"]):
        dvc.dvc_info(root)


def _with_lock_params(root: Path, params_yaml: str) -> Path:
    (root / "sub/dvc.lock").unlink()
    (root / "sub/dvc.yaml").unlink()
    (root / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  prepare:\n    cmd: 'true'\n    params:\n" + params_yaml
    )
    return root


def test_params_keep_their_values_as_json_does(tmp_path):
    """YAML reads 2020-01-01 as a date and `1:` as a number: the record keeps JSON."""
    root = _with_lock_params(
        project(tmp_path),
        "      params.yaml:\n        day: 2020-01-01\n        weights: {1: 0.5, b: 2}\n"
        "        flags: [true, null]\n",
    )
    info = dvc.dvc_info(root)
    assert info.params == {
        "params.yaml": {"day": "2020-01-01", "flags": [True, None], "weights": {"1": 0.5, "b": 2}}
    }
    assert info.to_dict()  # encodes


@pytest.mark.parametrize(
    "params, named",
    [
        ("      - a\n      - b\n", "params of stage 'prepare' are not a mapping"),
        ("      params.yaml:\n        w: {1: a, '1': b}\n", "given twice"),
        ("      params.yaml:\n        blob: !!binary aGk=\n", "type bytes"),
        ("      params.yaml:\n        n: " + "9" * 5000 + "\n", "cannot be read"),
        (
            "      params.yaml:\n        a: " + "[" * 600 + "]" * 600 + "\n",
            "nests more than 64 levels deep",
        ),
    ],
)
def test_params_of_the_wrong_shape_are_refused_naming_the_file(tmp_path, params, named):
    root = _with_lock_params(project(tmp_path), params)
    with refuses(DvcError, names=["dvc.lock", named]):
        dvc.dvc_info(root)


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    """Ten anchors of ten aliases each: 10**10 values once walked, from ~600 bytes."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    root = _with_lock_params(project(tmp_path), "      params.yaml:\n        a: *a9\n")
    (root / "dvc.lock").write_text("\n".join(lines) + "\n" + (root / "dvc.lock").read_text())
    with refuses(DvcError, names=["dvc.lock", "more than 1000000 values"]):
        dvc.dvc_info(root)


def test_repro_forced_argv_uses_the_dvc_installed_with_reprobox(tmp_path):
    import sys

    root = project(tmp_path)
    # reprobox's own interpreter has DVC (the test extra, like `reprobox[dvc]`): no PATH needed
    argv = dvc.repro_forced(root, {"PATH": str(tmp_path / "empty-bin")})
    assert argv == [sys.executable, "-m", "dvc", "repro", "--force"]
    assert dvc.DVC_PIPELINE_COMMAND == "dvc repro"


def test_repro_forced_falls_back_to_the_dvc_on_path(tmp_path, monkeypatch):
    root = project(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "dvc"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    monkeypatch.setattr(dvc, "_bundled_dvc", lambda: False)
    assert dvc.repro_forced(root, {"PATH": str(bin_dir)}) == [str(exe), "repro", "--force"]


def test_repro_forced_needs_a_pipeline(tmp_path):
    with refuses(DvcError, names=f"no dvc.yaml in {tmp_path}"):
        dvc.repro_forced(tmp_path, None)


def test_missing_dvc_says_install_the_reprobox_extra(tmp_path, monkeypatch):
    root = project(tmp_path)
    monkeypatch.setattr(dvc, "_bundled_dvc", lambda: False)
    with refuses(DvcError, names="pip install 'reprobox[dvc]'"):
        dvc.repro_forced(root, {"PATH": str(tmp_path / "empty-bin")})


def test_pull_without_dvc_says_install_the_reprobox_extra(tmp_path, monkeypatch):
    root = project(tmp_path)
    monkeypatch.setattr(dvc, "_bundled_dvc", lambda: False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with refuses(DvcError, names="pip install 'reprobox[dvc]'"):
        dvc.pull(root)


def test_pull_failure_is_a_clear_error_without_credentials(tmp_path, monkeypatch):
    # A stand-in `dvc` that fails the way `dvc pull` does when the remote is unreachable.
    root = project(tmp_path)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "dvc"
    fake.write_text(
        "#!/bin/sh\n"
        'echo "ERROR: failed to pull data from the cloud - Unable to connect to '
        "'https://user:s3cr3t-canary@dvc.example.com/store'\" >&2\nexit 1\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(dvc, "_bundled_dvc", lambda: False)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    with refuses(DvcError, names=["failed to pull", "dvc push"]) as info:
        dvc.pull(root)
    text = str(info.value)
    assert "failed to pull" in text and "dvc push" in text
    assert "s3cr3t-canary" not in text


# --------------------------------------------------------------------------- untrusted checkouts


def _project(root: Path, dvc_yaml: str = "", config: str = "") -> Path:
    (root / ".dvc").mkdir(parents=True)
    (root / ".dvc" / "config").write_text(config)
    if dvc_yaml:
        (root / "dvc.yaml").write_text(dvc_yaml)
    return root


@pytest.mark.parametrize(
    "dvc_yaml,named",
    [
        ("vars:\n  - /etc/passwd\n", "/etc/passwd"),
        ("vars:\n  - ../secrets.yaml:token\n", "../secrets.yaml"),
        ("stages:\n  s:\n    cmd: x\n    deps:\n      - ~/.ssh/id_rsa\n", "~/.ssh/id_rsa"),
        (
            (
                "stages:\n  s:\n    cmd: x\n"
                "    outs:\n      - /root/.bashrc:\n          cache: false\n"
            ),
            "/root/.bashrc",
        ),
        ("stages:\n  s:\n    wdir: ../..\n    cmd: x\n", "../.."),
        ("stages:\n  s:\n    cmd: x\n    deps:\n      - ${root}/../../x\n", "${root}/../../x"),
        (
            "stages:\n  s:\n    foreach: [a]\n    do:\n      cmd: x\n      outs:\n"
            "        - /tmp/${item}\n",
            "/tmp/${item}",
        ),
        ("plots:\n  - roc:\n      y:\n        /etc/shadow: [a]\n", "/etc/shadow"),
        (
            "stages:\n  s:\n    cmd: x\n    deps:\n      - remote://storage/x\n",
            "remote://storage/x",
        ),
    ],
)
def test_paths_leaving_the_checkout_are_refused(tmp_path, dvc_yaml, named):
    from reprobox.errors import UsageError

    root = _project(tmp_path / "co", dvc_yaml)
    with refuses(UsageError, names=[repr(named), "refusing dvc.yaml"]) as err:
        dvc.check_untrusted_project(root)
    assert err.value.exit_code == 2


def test_paths_inside_the_checkout_pass(tmp_path):
    root = _project(
        tmp_path / "co",
        "vars:\n  - params.yaml\n  - {x: 1}\nstages:\n  s:\n"
        "    wdir: sub\n    cmd: x\n    deps:\n      - ../data/${x}.csv\n"
        "    params:\n      - ../params.yaml:\n          - a\n"
        "    outs:\n      - out:\n          cache: true\n",
    )
    (root / "sub").mkdir()
    dvc.check_untrusted_project(root)


def test_a_link_under_dot_dvc_or_a_path_through_a_link_is_refused(tmp_path):
    from reprobox.errors import UsageError

    outside = tmp_path / "outside"
    outside.mkdir()
    root = _project(tmp_path / "co", "stages:\n  s:\n    cmd: x\n    deps:\n      - data/x\n")
    os.symlink(outside, root / "data")
    with refuses(UsageError, names=["'data/x'", "symbolic link"]):
        dvc.check_untrusted_project(root)
    (root / "data").unlink()
    os.symlink(outside / "creds", root / ".dvc" / "config.local")
    with refuses(UsageError, names=".dvc/config.local"):
        dvc.check_untrusted_project(root)


def test_only_a_remote_equal_to_a_trusted_one_is_used(tmp_path, monkeypatch):
    from reprobox.errors import UsageError

    glob, system = tmp_path / "g", tmp_path / "s"
    glob.mkdir()
    system.mkdir()
    monkeypatch.setenv("DVC_GLOBAL_CONFIG_DIR", str(glob))
    monkeypatch.setenv("DVC_SYSTEM_CONFIG_DIR", str(system))
    root = _project(
        tmp_path / "co",
        config="[core]\n    remote = theirs\n['remote \"theirs\"']\n    url = s3://bucket/data/\n",
    )
    with refuses(
        UsageError, names=["'theirs'", "s3://bucket/data/", ".dvc/config", "--dvc-remote"]
    ):
        dvc.choose_trusted_remote(root, None)
    (system / "config").write_text("['remote \"team\"']\n    url = s3://bucket/data\n")
    chosen = dvc.choose_trusted_remote(root, None)
    assert (chosen.name, chosen.source) == ("team", str(system / "config"))
    # an explicit --dvc-remote wins, whatever the checkout says
    assert dvc.choose_trusted_remote(root, None, "/srv/dvc").url == "/srv/dvc"


def test_a_relative_local_remote_is_compared_resolved(tmp_path):
    root = tmp_path / "co"
    assert dvc.normalize_remote_url("../../r", root / ".dvc") == str((tmp_path / "r").resolve())
    assert dvc.normalize_remote_url("S3://b/p/", root) == "s3://b/p"


def test_lock_paths_relative_to_a_stage_wdir_are_not_mistaken_for_escapes(tmp_path):
    root = _project(
        tmp_path / "co",
        "stages:\n  s:\n    wdir: sub\n    cmd: x\n    outs:\n      - ../data/out.csv\n",
    )
    (root / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  s:\n    cmd: x\n    outs:\n"
        "    - path: ../data/out.csv\n      md5: " + "a" * 32 + "\n"
    )
    dvc.check_untrusted_project(root)


def test_a_malformed_dvc_remote_option_is_refused(tmp_path):
    from reprobox.errors import UsageError

    root = _project(tmp_path / "co")
    with refuses(UsageError, names="--dvc-remote") as err:
        dvc.choose_trusted_remote(root, None, "/srv/x\n[core]\nremote = evil")
    assert err.value.message.startswith("--dvc-remote")


@pytest.mark.parametrize(
    "config,remote",
    [
        ("[core]\n    remote = storage\n['remote \"storage\"']\n    url = /data\n", "storage"),
        ("[core]\n    autostage = true\n", None),
        ("[core]\n    remote =   \n", None),
        # not INI (a key before any section): no remote is guessed from a line of it, as the
        # run reads none either
        ("remote = elsewhere\n[core]\n    remote = storage\n", None),
        ("[core\nremote = storage\n", None),
        (b"[core]\n    remote = st\xffrage\n", None),  # not UTF-8
    ],
)
def test_the_default_remote_is_read_as_the_run_reads_the_config(tmp_path, config, remote):
    root = tmp_path / "p"
    (root / ".dvc").mkdir(parents=True)
    data = config if isinstance(config, bytes) else config.encode()
    (root / ".dvc" / "config").write_bytes(data)
    assert dvc._default_remote(root) == remote
