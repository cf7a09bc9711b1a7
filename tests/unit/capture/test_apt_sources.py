"""The capture host's apt sources: parsed from both formats, credentials removed, hostile entries
left out (capture) or refused (a hand-edited capture), rendered into the image's apt step with
signature checking on."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprobox.build.render import apt_sources_file
from reprobox.capture.system import apt_sources, parse_deb822_sources, parse_sources_list
from reprobox.errors import ValidationError
from reprobox.model import AptSource, Environment, Interpreter
from reprobox.model.check import validate_environment

from ...asserts import refuses

DEB822 = """\
Types: deb deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: https://snapshot.debian.org/archive/debian-security/20250520T000000Z/
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: https://apt.example.com/repo
Suites: stable
Components: main
Enabled: no

Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
"""

ONE_LINE = (
    "# a comment\n"
    "deb [arch=amd64 signed-by=/etc/apt/keyrings/vendor.gpg] "
    "https://user:s3cret@apt.vendor.example/x stable main\n"
    "deb-src http://deb.debian.org/debian bookworm main\n"
    "deb cdrom:[Debian 12]/ bookworm main\n"
    "deb http://deb.debian.org/debian bookworm main ; rm -rf /\n"
)


def test_deb822_entries_with_suites_components_keys_and_snapshot_time():
    warnings: list[str] = []
    got = parse_deb822_sources(DEB822, "debian.sources", warnings)
    assert got == [
        AptSource(
            "http://deb.debian.org/debian",
            ("bookworm", "bookworm-updates"),
            ("main", "contrib"),
            "debian-archive-keyring.gpg",
            None,
        ),
        AptSource(
            "https://snapshot.debian.org/archive/debian-security/20250520T000000Z/",
            ("bookworm-security",),
            ("main",),
            "debian-archive-keyring.gpg",
            "20250520T000000Z",
        ),
    ]
    assert warnings == []


def test_one_line_entries_lose_credentials_and_hostile_ones_are_left_out_with_a_warning():
    warnings: list[str] = []
    got = parse_sources_list(ONE_LINE, "/etc/apt/sources.list", warnings)
    assert got == [
        AptSource("https://apt.vendor.example/x", ("stable",), ("main",), "vendor.gpg", None)
    ]
    assert "s3cret" not in repr(got)
    text = " ".join(warnings)
    assert "cdrom:[Debian" in text and "/etc/apt/sources.list" in text
    assert "';'" in text or "rm" in text  # the line with shell characters is named


def test_the_hosts_folder_layout_is_read(tmp_path: Path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://deb.debian.org/debian bookworm main\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "old.list.disabled").write_text(
        "deb http://other.example/x stable main\n"
    )
    sources, warnings = apt_sources(tmp_path)
    assert [s.uri for s in sources] == [
        "http://deb.debian.org/debian",
        "http://deb.debian.org/debian",
        "https://snapshot.debian.org/archive/debian-security/20250520T000000Z/",
    ]
    assert warnings == []


def _env(*sources: AptSource) -> Environment:
    return Environment(interpreter=Interpreter("cpython", "3.11.7"), apt_sources=tuple(sources))


@pytest.mark.parametrize(
    "field,source",
    [
        ("uri", AptSource("http://u:p@deb.debian.org/debian", ("bookworm",))),
        ("uri", AptSource("file:///srv/repo", ("bookworm",))),
        ("uri", AptSource("http://deb.debian.org/debian\nTrusted: yes", ("bookworm",))),
        ("suites", AptSource("http://deb.debian.org/debian", ("bookworm [trusted=yes]",))),
        ("suites", AptSource("http://deb.debian.org/debian", ())),
        ("components", AptSource("http://deb.debian.org/debian", ("bookworm",), ("main\n",))),
        (
            "signed_by",
            AptSource("http://deb.debian.org/debian", ("bookworm",), ("main",), "../../etc/shadow"),
        ),
        (
            "snapshot",
            AptSource("http://deb.debian.org/debian", ("bookworm",), ("main",), None, "yesterday"),
        ),
    ],
)
def test_a_hand_edited_capture_with_a_hostile_source_is_refused_naming_the_field(field, source):
    with refuses(ValidationError, field=f"apt_sources[0].{field}"):
        validate_environment(_env(source))


def test_rendered_sources_keep_signature_checking_and_skip_unknown_keys():
    lines, warnings = apt_sources_file(
        _env(
            AptSource(
                "https://snapshot.debian.org/archive/debian/20250520T000000Z",
                ("bookworm",),
                ("main",),
                "debian-archive-keyring.gpg",
                "20250520T000000Z",
            ),
            AptSource("https://apt.vendor.example/x", ("stable",), ("main",), "vendor.gpg"),
        )
    )
    assert lines == (
        "Types: deb",
        "URIs: https://snapshot.debian.org/archive/debian/20250520T000000Z",
        "Suites: bookworm",
        "Components: main",
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg",
        "Check-Valid-Until: no",
    )
    assert not any("trusted" in line.lower() for line in lines)
    assert warnings == [
        "the apt source https://apt.vendor.example/x is not one of Debian's or "
        "Ubuntu's own archives: not used in the image (the base image's sources "
        "are)"
    ]


@pytest.mark.parametrize(
    "uri,used",
    [
        ("http://deb.debian.org/debian", True),
        ("https://security.debian.org/debian-security", True),
        ("http://ftp.de.debian.org/debian", True),
        ("http://de.archive.ubuntu.com/ubuntu", True),
        ("http://deb.debian.org.attacker.example/debian", False),
        ("http://attacker.example/deb.debian.org/debian", False),
        ("http://deb.debian.org:8080/debian", False),
        ("http://127.0.0.1/debian", False),
    ],
)
def test_a_captures_apt_source_may_only_name_a_distribution_archive(uri, used):
    """A stranger's capture must not point the image's apt at a host of its choosing."""
    lines, warnings = apt_sources_file(
        _env(AptSource(uri, ("bookworm",), ("main",), "debian-archive-keyring.gpg"))
    )
    assert (f"URIs: {uri}" in lines) is used
    assert (
        any(uri in w and "not one of Debian's or Ubuntu's own archives" in w for w in warnings)
        is not used
    )


def test_environment_json_round_trips_sources_without_changing_the_digest():
    src = AptSource(
        "http://deb.debian.org/debian", ("bookworm",), ("main",), "debian-archive-keyring.gpg"
    )
    env = _env(src)
    assert env.digest == _env().digest  # descriptive, not part of the identity
    data = env.to_dict()
    assert data["apt_sources"] == [
        {
            "uri": "http://deb.debian.org/debian",
            "suites": ["bookworm"],
            "components": ["main"],
            "signed_by": "debian-archive-keyring.gpg",
        }
    ]
    assert Environment.from_dict(data).apt_sources == (src,)
    assert "apt_sources" not in _env().to_dict()
