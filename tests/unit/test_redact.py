"""The redaction pass: each rule alone, on the shapes secrets take on a laptop."""

from __future__ import annotations

import pytest

from reprobox.redact import Redactor, scan_patch, strip_url_credentials

GH = "ghp_" + "C4n4ry" * 6  # GitHub token shape, 36 characters after the prefix
HF = "hf_" + "CanaryCanary" * 3
ENV = {
    "HF_TOKEN": HF,
    "HOME": "/root",
    "SHORT_TOKEN": "1",
    "DB_PASSWORD": "Canary-db-Passw0rd",
    "PIP_INDEX_URL": "https://__token__:CanaryIndexToken42@pypi.example.com/simple",
    "WANDB_MODE": "offline",
}


def redacted(value: str, *, command: bool = False) -> tuple[str, Redactor]:
    red = Redactor(ENV)
    return red.text(value, "field", command=command), red


@pytest.mark.parametrize(
    "cmd,secret,kind",
    [
        ("python train.py --api-key Canary123 --lr 0.1", "Canary123", "api-key"),
        ("python train.py --api_key=Canary123", "Canary123", "api_key"),
        ("python train.py --token 'Canary 123'", "Canary 123", "token"),
        ("python train.py --hf-token Canary123", "Canary123", "hf-token"),
        ("mysql -u me -p Canary123 db", "Canary123", "password"),
        ("mysql -u me -pCanary123 db", "Canary123", "password"),
        ("API_TOKEN=Canary123 python train.py", "Canary123", "$API_TOKEN"),
        (f"python train.py --hf {HF}", HF, "$HF_TOKEN"),  # the shell expanded $HF_TOKEN
        ("python train.py --db Canary-db-Passw0rd", "Canary-db-Passw0rd", "$DB_PASSWORD"),
        ("python fetch.py CanaryIndexToken42", "CanaryIndexToken42", "$PIP_INDEX_URL"),
        (
            "python train.py --url https://bob:Canary123@data.example.com/x",
            "Canary123",
            "url-credentials",
        ),
        (f"python train.py --repo-token {GH}", GH, "repo-token"),
        (f"python train.py {GH}", GH, "github-token"),
        ("aws s3 cp s3://b/k . # AKIAIOSFODNN7CANARYX", "AKIAIOSFODNN7CANARYX", "aws-access-key"),
    ],
)
def test_secrets_in_a_command_are_redacted(cmd: str, secret: str, kind: str) -> None:
    out, red = redacted(cmd, command=True)
    assert secret not in out, out
    if kind != "url-credentials":  # user info is removed from a URL, without a marker
        assert f"<redacted:{kind}>" in out, out
    (warning,) = red.warnings()
    assert warning.startswith("field: a secret (") and kind in warning
    assert secret not in warning


@pytest.mark.parametrize(
    "cmd",
    [
        "python train.py --lr 0.1 --epochs 3",
        'python train.py --token "$HF_TOKEN"',  # a reference, not the secret
        "python -m pytest -p no:cacheprovider -p xdist",
        "docker run -p 8080:80 img",
        "python train.py --sort-key loss --session-dir /tmp/s --keep",
        "WANDB_MODE=offline python train.py",
        "python train.py --data https://data.example.com/v1/set.csv?rev=3",
    ],
)
def test_ordinary_commands_are_left_alone(cmd: str) -> None:
    out, red = redacted(cmd, command=True)
    assert out == cmd and red.warnings() == []


@pytest.mark.parametrize(
    "url,expected",
    [
        (
            "https://acct.blob.core.windows.net/c/x-1.0-py3-none-any.whl?sv=2022-11-02&se=2030&sp=r"
            "&sig=Canary%2Bsig%3D",
            "https://acct.blob.core.windows.net/c/x-1.0-py3-none-any.whl",
        ),
        (
            "https://s3.amazonaws.com/b/x.whl?X-Amz-Credential=AKIA&X-Amz-Signature=Canary",
            "https://s3.amazonaws.com/b/x.whl",
        ),
        ("https://files.example.com/x.tar.gz?token=Canary", "https://files.example.com/x.tar.gz"),
        ("https://user:Canary@pypi.example.com/simple", "https://pypi.example.com/simple"),
        (f"https://pkgs.example.com/{GH}/simple/x/", "https://pkgs.example.com/REDACTED/simple/x/"),
        (
            f"https://hf.example.com/api/{HF}/x.whl#sha256=ab",
            "https://hf.example.com/api/REDACTED/x.whl#sha256=ab",
        ),
        ("https://example.com/cb#access_token=Canary&x=1", "https://example.com/cb"),
        (
            "https://files.pythonhosted.org/packages/ab/cd/x-1.0.whl#sha256=00ff",
            "https://files.pythonhosted.org/packages/ab/cd/x-1.0.whl#sha256=00ff",
        ),
    ],
)
def test_urls_lose_every_credential(url: str, expected: str) -> None:
    assert strip_url_credentials(url) == expected
    red = Redactor({})
    assert red.url(url, "source") == expected
    assert bool(red.warnings()) == (url != expected)


def test_metric_keys_and_values_are_redacted_naming_the_field() -> None:
    red = Redactor(ENV)
    out = red.tree(
        {"acc": 0.9, GH: 1, "note": f"pushed with {HF}", "nested": {"k": [GH]}}, "metrics[m.json]"
    )
    text = repr(out)
    assert GH not in text and HF not in text and out["acc"] == 0.9
    fields = [w.split(":", 1)[0] for w in red.warnings()]
    assert fields == ["metrics[m.json] key", "metrics[m.json].note", "metrics[m.json].nested.k[0]"]


def test_detect_secrets_finds_what_reprobox_has_no_rule_for() -> None:
    slack_hook = "https://hooks.slack.com/services/T0CANARY1/B0CANARY2/CanaryCanaryCanary12"
    stripe = "sk_live_" + "Canary0123456789abcdefgh"
    for secret in (stripe, "SG.CanaryCanaryCanary1234." + "Canary" * 7 + "1"):
        out, red = redacted(f"value {secret} end")
        assert secret not in out and out.startswith("value <redacted:") and out.endswith(" end")
    out, _ = redacted(slack_hook)
    assert "B0CANARY2" not in out


def test_a_file_is_redacted_line_by_line() -> None:
    red = Redactor(ENV)
    text = (
        "a==1 \\\n    --hash=sha256:"
        + "0" * 64
        + "\n# from https://u:Canary@idx.example.com/simple\n"
    )
    out = red.file_text(text, "requirements.lock")
    assert "Canary" not in out and "0" * 64 in out
    assert [w.split(":", 1)[0] for w in red.warnings()] == ["requirements.lock line 3"]


def test_hashes_and_ordinary_values_are_not_secrets() -> None:
    red = Redactor(ENV)
    for value in (
        "sha256:" + "ab" * 32,
        "0123456789abcdef" * 4,
        "cp311-cp311-manylinux_2_17_x86_64",
        "a" * 40,
        "models/resnet50_v1.5.pt",
        "C.UTF-8",
        "--xla_gpu_deterministic_ops=true",
    ):
        assert red.text(value, "f") == value
    assert red.warnings() == []


PATCH = f"""diff --git a/conf/settings.py b/conf/settings.py
index 1111111..2222222 100644
--- a/conf/settings.py
+++ b/conf/settings.py
@@ -10,4 +10,6 @@ import os
 DEBUG = False
-INDEX = os.environ["INDEX"]
+INDEX = "https://user:CanaryPatchPw@pypi.example.com/simple"
 TIMEOUT = 3
+
+GITHUB = "{GH}"
diff --git a/train.py b/train.py
--- a/train.py
+++ b/train.py
@@ -1,2 +1,3 @@
 import json
+password = "Canary-hardcoded-1"
 print(1)
"""


def test_a_patch_is_scanned_naming_file_and_line_never_the_value() -> None:
    found = scan_patch(PATCH.encode(), {})
    where = sorted({(f.path, f.line) for f in found})
    assert where == [("conf/settings.py", 11), ("conf/settings.py", 14), ("train.py", 2)]
    assert not any("Canary" in f.kind for f in found)


def test_a_clean_patch_and_removed_lines_pass() -> None:
    patch = (
        "diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -1,2 +1,2 @@\n"
        f"-TOKEN = '{GH}'\n+TOKEN = os.environ['TOKEN']\n x = 1\n"
    )
    assert scan_patch(patch.encode(), {}) == []


def test_an_expanded_host_secret_in_a_patch_is_found() -> None:
    patch = f"diff --git a/a.txt b/a.txt\n--- a/a.txt\n+++ b/a.txt\n@@ -0,0 +1 @@\n+{HF}\n"
    (f,) = scan_patch(patch.encode(), ENV)
    assert (f.path, f.line) == ("a.txt", 1)


#: One token of each format TOKEN_PATTERNS knows (shapes only: none of them is real).
TOKEN_SAMPLES = {
    "github-token": ["ghp_" + "C4n4ry" * 6, "ghs_" + "C4n4ry" * 6, "github_pat_" + "C4n4ry_" * 4],
    "huggingface-token": [HF],
    "gitlab-token": [f"{p}-" + "C4n4ry" * 4 for p in ("glpat", "gldt", "glft", "glsoat", "glrt")]
    + ["glcbt-" + "C4n4ry" * 4],
    "slack-token": ["xoxb-" + "1234567890-C4n4ry", "xoxp-" + "C4n4ryC4n4ry"],
    "api-key": ["sk-" + "C4n4ry" * 4, "sk-proj-" + "C4n4ry" * 4, "sk-ant-" + "C4n4ry" * 4],
    "aws-access-key": ["AKIA" + "C4N4RYC4N4RYC4N4", "ASIA" + "C4N4RYC4N4RYC4N4"],
    "google-api-key": ["AIza" + "C4n4ry_C4n4ry-C4n4ryC4n4ryC4n4ry123"],
    "pypi-token": ["pypi-" + "C4n4ry" * 9],
    "npm-token": ["npm_" + "C4n4ry" * 6],
    "jwt": ["eyJC4n4ryC4n4ry.eyJC4n4ryC4n4ry.C4n4ryC4n4ry"],
    "private-key": ["-----BEGIN OPENSSH PRIVATE KEY-----"],
    "azure-storage-key": ["AccountKey=" + "C4n4ryC4n4ry+=" * 4],
}


def test_every_token_format_passes_the_marker_prefilter_and_is_stripped_from_a_url_path():
    from reprobox.redact import TOKEN_MARKERS, TOKEN_PATTERNS

    # a format added to TOKEN_PATTERNS needs a sample here, and its fixed part in TOKEN_MARKERS
    assert set(TOKEN_SAMPLES) == {kind for kind, _rx in TOKEN_PATTERNS}
    for kind, rx in TOKEN_PATTERNS:
        for token in TOKEN_SAMPLES[kind]:
            assert rx.search(token), (kind, token)  # the sample has the format's shape
            assert TOKEN_MARKERS.search(token), (kind, token)
            url = f"https://files.example.com/org/{token}/pkg-1.0-py3-none-any.whl"
            stripped = strip_url_credentials(url)
            assert token not in stripped, (kind, stripped)
            assert stripped.endswith("/pkg-1.0-py3-none-any.whl")
            text, red = redacted(f"python train.py --key {token} --lr 0.1")
            assert token not in text and red.warnings, (kind, text)
    # a plain file URL passes untouched
    plain = "https://files.pythonhosted.org/packages/ab/cd/0123abcd/numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl"
    assert strip_url_credentials(plain) == plain


# --------------------------------------------------------------------------- the plain-URL path

from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from reprobox.redact import _strip_split  # noqa: E402

_URL_PARTS = st.sampled_from(
    [
        "https://",
        "HTTPS://",
        "http://",
        "git+ssh://",
        "file://",
        "s3://",
        "hTtp://",
        "user:pw@",
        "tok@",
        "files.pythonhosted.org",
        "[::1]",
        "[::1",
        ":8080",
        "/",
        "//",
        "/packages/ab/cd/",
        "numpy-2.1.0-cp311-cp311-manylinux_2_17_x86_64.whl",
        "dask-2024.1",
        "ghp_" + "a" * 36,
        "hf_" + "B" * 34,
        "sk-" + "c" * 24,
        "?token=x",
        "?x=1",
        "#sha256=ab",
        "#frag",
        " ",
        "\t",
        "\n",
        "\x00",
        "é",
        "..",
        "%40",
        ";",
        "=",
        "&",
    ]
)


@settings(max_examples=3000, deadline=None)
@given(st.lists(_URL_PARTS, min_size=1, max_size=8).map("".join))
@example("https://files.pythonhosted.org/packages/ab/dask-2024.1.tar.gz")
@example("HTTPS://Host/path")
@example("https://host/path\twith-tab")
def test_a_url_taken_as_plain_is_what_the_split_gives_back(url: str) -> None:
    """The shortcut for plain URLs (most a lock writes) answers exactly what the full split
    and join would: never a credential left, never a URL changed."""
    if "://" in url:
        assert strip_url_credentials(url) == _strip_split(url)
    else:
        assert strip_url_credentials(url) == url
