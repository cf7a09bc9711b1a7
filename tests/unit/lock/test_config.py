"""read_index_config: pip's files and PIP_* variables, merged the way pip merges them.

The precedence tests use pip itself as the oracle where it matters: the same files and
environment are handed to `pip config list` and both must agree.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reprobox.errors import UsageError

from ...asserts import refuses
from reprobox.lock import config
from reprobox.lock.config import PYPI_SIMPLE, read_index_config


@pytest.fixture()
def homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """An isolated set of pip configuration locations: no file of this machine is read."""
    monkeypatch.setattr(config, "ETC_PIP_CONF", str(tmp_path / "etc" / "pip.conf"))
    layout = {
        "xdg_dirs": tmp_path / "etc-xdg",
        "home": tmp_path / "home",
        "xdg_home": tmp_path / "home" / ".config",
        "venv": tmp_path / "venv",
    }
    for p in layout.values():
        p.mkdir(parents=True, exist_ok=True)
    return layout


def _env(homes: dict[str, Path], **extra: str) -> dict[str, str]:
    env = {
        "HOME": str(homes["home"]),
        "XDG_CONFIG_DIRS": str(homes["xdg_dirs"]),
        "XDG_CONFIG_HOME": str(homes["xdg_home"]),
    }
    env.update(extra)
    return env


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_with_no_configuration(homes):
    cfg = read_index_config(_env(homes), venv=homes["venv"])
    assert cfg.index_url == PYPI_SIMPLE
    assert cfg.extra_index_urls == () and cfg.find_links == () and cfg.cert is None
    assert cfg.index_urls == (PYPI_SIMPLE,)


def test_variants_override_in_pips_order(homes, tmp_path):
    # global < user (legacy < new) < site < PIP_CONFIG_FILE < PIP_* variables
    _write(
        homes["xdg_dirs"] / "pip" / "pip.conf",
        "[global]\nindex-url = https://global.example/simple\ntimeout = 5\n"
        "extra-index-url = https://g1.example/simple https://g2.example/simple\n",
    )
    _write(
        homes["home"] / ".pip" / "pip.conf", "[global]\nindex-url = https://legacy.example/simple\n"
    )
    _write(
        homes["xdg_home"] / "pip" / "pip.conf",
        "[global]\nindex-url = https://user.example/simple\nfind-links = /wheels/a\n",
    )
    _write(homes["venv"] / "pip.conf", "[global]\nfind-links = /wheels/site\n")
    cfg = read_index_config(_env(homes), venv=homes["venv"])
    assert cfg.index_url == "https://user.example/simple"
    assert cfg.find_links == ("/wheels/site",)
    assert cfg.extra_index_urls == ("https://g1.example/simple", "https://g2.example/simple")
    assert cfg.timeout == 5.0
    assert "pip.conf [global]" in cfg.origins["index_url"]

    env_file = _write(tmp_path / "env.conf", "[global]\nfind-links = /wheels/env\n")
    cfg = read_index_config(
        _env(homes, PIP_CONFIG_FILE=str(env_file), PIP_EXTRA_INDEX_URL="https://e.example/simple"),
        venv=homes["venv"],
    )
    # PIP_CONFIG_FILE wins over the site file, and an existing one turns the user files off
    assert cfg.find_links == ("/wheels/env",)
    assert cfg.index_url == "https://global.example/simple"
    # a variable replaces the list, it does not append to it
    assert cfg.extra_index_urls == ("https://e.example/simple",)
    assert cfg.origins["extra_index_urls"] == "env PIP_EXTRA_INDEX_URL"


def test_install_section_beats_global_and_env_beats_both(homes):
    _write(
        homes["xdg_home"] / "pip" / "pip.conf",
        "[global]\nindex-url = https://g.example/simple\ncert = /g.pem\n"
        "[install]\nindex-url = https://i.example/simple\n[download]\ncert = /d.pem\n",
    )
    cfg = read_index_config(_env(homes), venv=homes["venv"])
    assert cfg.index_url == "https://i.example/simple"
    assert cfg.cert == "/g.pem"  # [download] is another command's section
    cfg = read_index_config(
        _env(homes, PIP_INDEX_URL="https://v.example/simple/"), venv=homes["venv"]
    )
    assert cfg.index_url == "https://v.example/simple"


def test_devnull_config_file_disables_every_file(homes):
    _write(homes["xdg_home"] / "pip" / "pip.conf", "[global]\nindex-url = https://u.example/x\n")
    cfg = read_index_config(
        _env(homes, PIP_CONFIG_FILE=os.devnull, PIP_FIND_LINKS="/w"), venv=homes["venv"]
    )
    assert cfg.index_url == PYPI_SIMPLE
    assert cfg.find_links == ("/w",)
    assert cfg.files == ()


def test_key_spellings_empty_values_and_booleans(homes):
    _write(
        homes["xdg_home"] / "pip" / "pip.conf",
        "[global]\nExtra_Index_URL = https://x.example/simple\nfind-links =\n"
        "no-index = yes\ntrusted-host = a.example b.example:8080\n"
        "constraint = /c1.txt /c2.txt\n",
    )
    cfg = read_index_config(_env(homes), venv=homes["venv"])
    assert cfg.extra_index_urls == ("https://x.example/simple",)
    assert cfg.find_links == ()
    assert cfg.no_index and cfg.index_urls == ()
    assert cfg.trusted_hosts == ("a.example", "b.example:8080")
    assert cfg.is_trusted("https://b.example:8080/simple/x/")
    assert not cfg.is_trusted("https://b.example/simple/x/")
    assert cfg.constraints == ("/c1.txt", "/c2.txt")


def test_bad_values_are_clear_usage_errors(homes):
    _write(homes["xdg_home"] / "pip" / "pip.conf", "[global]\nno-index = maybe\n")
    conf = str(homes["xdg_home"] / "pip" / "pip.conf")
    with refuses(UsageError, names=["no-index", "boolean"]):
        read_index_config(_env(homes), venv=homes["venv"])
    _write(homes["xdg_home"] / "pip" / "pip.conf", "this is not ini\n")
    with refuses(UsageError, names=[conf, "cannot be read"]) as err:
        read_index_config(_env(homes), venv=homes["venv"])
    assert err.value.hint


def test_proxies_and_ca_fallbacks(homes):
    cfg = read_index_config(
        _env(
            homes,
            HTTPS_PROXY="http://u:pw@proxy.example:3128",
            no_proxy="localhost,.corp",
            REQUESTS_CA_BUNDLE="/ca.pem",
        ),
        venv=homes["venv"],
    )
    assert cfg.proxies == {"https": "http://u:pw@proxy.example:3128", "no": "localhost,.corp"}
    assert cfg.cert == "/ca.pem" and cfg.origins["cert"] == "env REQUESTS_CA_BUNDLE"
    _write(homes["xdg_home"] / "pip" / "pip.conf", "[global]\nproxy = proxy2.example:8080\n")
    cfg = read_index_config(_env(homes, HTTPS_PROXY="http://other:1"), venv=homes["venv"])
    assert cfg.proxies["https"] == cfg.proxies["http"] == "http://proxy2.example:8080"


def test_redacted_strips_every_credential_and_pip_environ_keeps_them(homes):
    env = _env(
        homes,
        PIP_INDEX_URL="https://user:s3cret@private.example/simple",
        PIP_EXTRA_INDEX_URL="https://tok@extra.example/simple",
        PIP_FIND_LINKS="https://u:p@links.example/wheels/",
        HTTPS_PROXY="http://pu:ppw@proxy.example:3128",
    )
    cfg = read_index_config(env, venv=homes["venv"])
    red = cfg.redacted()
    text = repr(red) + repr(red.to_dict()) + repr(cfg.to_dict())
    for secret in ("s3cret", "tok@", "u:p@", "ppw"):
        assert secret not in text
    assert red.index_url == "https://private.example/simple"
    assert cfg.has_credentials() and not red.has_credentials()
    assert cfg.pip_environ()["PIP_INDEX_URL"] == "https://user:s3cret@private.example/simple"


@pytest.mark.parametrize("case", ["files", "env-file", "install-section"])
def test_agrees_with_pip_config_list(homes, tmp_path, case):
    """pip itself, given the same files and environment, must see the same values."""
    _write(
        homes["xdg_dirs"] / "pip" / "pip.conf",
        "[global]\nindex-url = https://global.example/simple\n",
    )
    _write(
        homes["xdg_home"] / "pip" / "pip.conf",
        "[global]\nextra-index-url = https://u1.example/simple https://u2.example/simple\n",
    )
    _write(homes["venv"] / "pip.conf", "[global]\nfind-links = /site/wheels\n")
    extra: dict[str, str] = {}
    if case == "env-file":
        extra["PIP_CONFIG_FILE"] = str(
            _write(tmp_path / "e.conf", "[global]\nfind-links = /env/wheels\n")
        )
        extra["PIP_TRUSTED_HOST"] = "t.example"
    if case == "install-section":
        _write(
            homes["venv"] / "pip.conf",
            "[global]\nfind-links = /site/wheels\n[install]\nfind-links = /install/wheels\n",
        )
    env = _env(homes, **extra)
    # pip's global and site files pointed at the test's folders (its own lookup of them is
    # what the other tests pin); everything else is pip reading the files as it always does
    script = (
        "import sys\n"
        "venv, xdg, etc = sys.argv[1:4]\n"
        "import pip._internal.configuration as c\n"
        "orig = c.get_configuration_files\n"
        "def patched():\n"
        "    d = orig()\n"
        # keyed by kind: plain strings up to pip 25, `Kind` members since (pip 26 has no
        # `kinds`); matched by value, so that pip's own key is the one replaced
        "    for k in list(d):\n"
        "        v = getattr(k, 'value', k)\n"
        "        if v == 'global':\n"
        "            d[k] = [xdg + '/pip/pip.conf', etc]\n"
        "        elif v == 'site':\n"
        "            d[k] = [venv + '/pip.conf']\n"
        "    return d\n"
        "c.get_configuration_files = patched\n"
        # the value pip uses for each key (`pip config list` lists every file's own value
        # since pip 26, not the one that wins)
        "conf = c.Configuration(isolated=False)\n"
        "conf.load()\n"
        "for key in sys.argv[4:]:\n"
        "    try:\n"
        "        print('%s=%r' % (key, conf.get_value(key)))\n"
        "    except c.ConfigurationError:\n"
        "        pass\n"
    )
    keys = (
        "global.index-url",
        "global.extra-index-url",
        "global.find-links",
        "install.find-links",
        ":env:.find-links",
        ":env:.trusted-host",
    )
    run_env = {**{k: v for k, v in os.environ.items() if not k.startswith("PIP_")}, **env}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(homes["venv"]),
            str(homes["xdg_dirs"]),
            config.ETC_PIP_CONF,
            *keys,
        ],
        env=run_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pip_sees: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        pip_sees[key] = value.strip("'")
    cfg = read_index_config(env, venv=homes["venv"])
    # pip lists every section; the install command applies [global] then [install] then env
    assert cfg.index_url == pip_sees["global.index-url"]
    assert " ".join(cfg.extra_index_urls) == pip_sees.get("global.extra-index-url", "")
    expected_links = (
        pip_sees.get("install.find-links")
        or pip_sees.get(":env:.find-links")
        or pip_sees["global.find-links"]
    )
    if case == "env-file":
        expected_links = pip_sees["global.find-links"]
        assert cfg.trusted_hosts == (pip_sees[":env:.trusted-host"],)
    assert " ".join(cfg.find_links) == expected_links
