"""Capture values in a pull-request comment never become a link, a mention, an issue reference or
an emoji: the comment is parsed the way GitHub does (markdown-it-py with linkify, plus GitHub's
own reference patterns over the rendered text)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path


from reprobox.diff import diff_environments, md_code, md_escape, render_markdown
from reprobox.model import GPU, Hardware, OutputFile, Package, PackageSource, SystemPackage
from reprobox.pr import MAX_COMMENT_CHARS, pr_markdown
from reprobox.store import StoredExperiment

from ..conftest import require_module
from ..factories import cpu_env, with_packages
from ..factories import make_exp

#: What GitHub links, notifies or turns into a picture when it meets it in text.
LURES = [
    "https://evil.example.com/login?next=/",
    "http://evil.example.com",
    "ftp://files.evil.example/x",
    "www.evil-example.com/path",
    "mailto:someone@evil.example.com",
    "someone@evil.example.com",
    "@octocat",
    "@org/team",
    "#12",
    "owner/repo#34",
    "GH-56",
    ":rocket:",
    ":+1:",
]
LURE = " ".join(LURES)

#: GitHub's reference and emoji filters, applied to rendered text nodes (they skip no text here:
#: a capture value must be inert wherever it is shown).
GITHUB_PATTERNS = {
    "mention": re.compile(r"(?<![A-Za-z0-9`])@[A-Za-z0-9][A-Za-z0-9-]*"),
    "issue": re.compile(r"(?<![A-Za-z0-9])(?:[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)?#\d+"),
    "gh-issue": re.compile(r"(?<![A-Za-z0-9])GH-\d+", re.IGNORECASE),
    "emoji": re.compile(r":[a-z0-9_+\-]+:"),
    "www": re.compile(r"(?<![A-Za-z0-9])www\.", re.IGNORECASE),
    "url": re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://"),
    "email": re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+\.[A-Za-z]"),
}


def parse(text: str) -> list:
    markdown_it = require_module("markdown_it")
    require_module("linkify_it")
    md = markdown_it.MarkdownIt("gfm-like", {"linkify": True, "html": True})
    # GitHub links scheme URLs, www. hosts and e-mail addresses, not bare domains ("train.py").
    md.linkify.set({"fuzzy_link": False})
    return md.parse(text)


def walk(tokens: list):
    for tok in tokens:
        yield tok
        if tok.children:
            yield from walk(tok.children)


def links_and_lures(text: str) -> list[str]:
    """Every link markdown-it makes, and every GitHub reference left in the rendered text."""
    found = []
    tokens = parse(text)
    for tok in walk(tokens):
        if tok.type == "link_open":
            found.append(f"link {tok.attrGet('href')}")
    for tok in tokens:
        if tok.type != "inline":
            continue
        # The text of the whole inline run, entities decoded and joined across the HTML tags
        # between them (stricter than GitHub, whose tags split text nodes).
        content = "".join(
            c.content
            for c in tok.children or ()
            if c.type in ("text", "text_special", "code_inline")
        )
        for kind, rx in GITHUB_PATTERNS.items():
            for m in rx.finditer(content):
                found.append(f"{kind} {m.group(0)!r} in {content!r}")
        if tok.type in ("html_inline", "html_block"):
            bad = re.findall(
                r"<(?!/?(?:code|br|span|details|summary|sub)\b|!--)[^>]*>", tok.content
            )
            found += [f"html {b}" for b in bad]
    return found


def test_md_escape_defuses_each_lure_alone() -> None:
    for lure in LURES:
        for render in (md_escape, md_code):
            out = render(lure)
            assert links_and_lures(f"| a |\n|---|\n| {out} |\n") == [], (lure, out)
            assert links_and_lures(out) == [], (lure, out)


def test_the_lures_are_found_when_not_escaped() -> None:
    # The checker itself: each lure, raw, is a link or a reference.
    for lure in LURES:
        assert links_and_lures(lure), lure


def test_defused_text_reads_the_same() -> None:
    # Only zero-width spaces are added: a reader sees the value as it was recorded.
    html = parse(md_escape(LURE))
    text = "".join(t.content for t in walk(html) if t.type in ("text", "text_special"))
    assert text.replace("\u200b", "") == LURE


def hostile_pair(tmp: Path) -> tuple[StoredExperiment, StoredExperiment]:
    source = PackageSource(
        "archive",
        url="https://evil.example.com/@octocat/lure-1.0.tar.gz",
        hash="sha256=" + "0" * 64,
    )
    env = with_packages(cpu_env(), Package("lure-pkg", "1.0", source))
    env = replace(
        env,
        system_packages=env.system_packages + (SystemPackage("www.evil.com", "#12"),),
        os=replace(env.os, pretty_name="Debian :rocket: @octocat"),
        hardware=Hardware(gpus=(GPU("GPU owner/repo#34 https://evil.example.com"),)),
    )
    head = StoredExperiment(
        replace(
            make_exp(env),
            name="lures @octocat #12 :rocket: GH-56",
            command="python train.py " + LURE,
            metrics={"metrics.json": {"see " + LURE: LURE, "@octocat": "#7"}},
            outputs=(OutputFile("www.evil.com/@octocat/#12.bin", "0" * 64, 1),),
            env={"LANG": "C :tada: @octocat"},
        ),
        env,
        tmp / "0123456789ab",
    )
    base = StoredExperiment(make_exp(cpu_env()), cpu_env(), tmp / "ba9876543210")
    return head, base


def test_pr_comment_from_a_luring_capture_links_and_mentions_nothing(tmp_path: Path) -> None:
    head, base = hostile_pair(tmp_path)
    out = pr_markdown(head, base)
    assert links_and_lures(out) == []
    # reprobox's own structure still renders: heading, summary table, folded lists, marker.
    tokens = list(walk(parse(out)))
    assert any(t.type == "heading_open" for t in tokens)
    assert sum(1 for t in tokens if t.type == "table_open") >= 2
    assert "<details>" in out and out.startswith("<!-- reprobox:pr -->")
    assert "lure-pkg" in out


def test_diff_markdown_from_a_luring_capture_links_and_mentions_nothing(tmp_path: Path) -> None:
    head, base = hostile_pair(tmp_path)
    d = diff_environments(
        base.environment, head.environment, exp_a=base.experiment, exp_b=head.experiment
    )
    assert links_and_lures(render_markdown(d)) == []


def test_a_capture_of_long_values_still_fits_one_comment(tmp_path: Path) -> None:
    """12 metric keys of 4,090 characters, values of 4,000 '&' and a command of 16,384 '|' made
    a comment of 471,042 characters (940,663 against itself): GitHub posts none past 65,536."""
    head, base = hostile_pair(tmp_path)
    exp = replace(
        head.experiment,
        command="|" * 16_384,
        metrics={"m.json": {f"k{i:02d}" + "\u2039" * 4090: "&" * 4000 for i in range(12)}},
    )
    head = StoredExperiment(exp, head.environment, head.path)
    for against in (base, head, None):
        out = pr_markdown(head, against)
        assert len(out) <= MAX_COMMENT_CHARS, len(out)
        assert out.startswith("<!-- reprobox:pr -->") and links_and_lures(out) == []
