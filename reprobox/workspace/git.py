"""The code of a run: the commit, the uncommitted change as a binary-safe patch, and the files git
does not know about; and, for ``reprobox run``, a detached worktree of that commit with the patch
applied, apart from the user's own working tree.

Everything goes through the ``git`` command line (no library), with the user's configuration
neutralised where it would change the patch (external diff drivers, textconv, colour, prefixes,
rename detection), so that the recorded patch applies with ``git apply`` anywhere.

A recorded patch is untrusted input when the capture arrives in a pull request: before applying,
every path it names is read from the diff headers (and, as a second opinion, from ``git apply
--numstat``) and refused when absolute, climbing out with ``..``, or reaching into ``.git``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from .. import proc
from ..errors import CommandError, GitError, ReproboxError, ValidationError
from ..model import GitInfo, sha256_hex
from ..redact import redact_text, strip_url_credentials

log = logging.getLogger("reprobox.workspace.git")

#: Past this size the patch is still recorded, with a warning: it is meant for code, not data.
LARGE_PATCH_BYTES = 5 * 1024 * 1024
#: A patch bigger than this is refused when applied (a record is small text by design).
MAX_PATCH_BYTES = 256 * 1024 * 1024
#: How many untracked paths go into the record (the warning still gives the full count).
MAX_UNTRACKED_LISTED = 500

_COMMIT_RE = re.compile(r"^(?:[0-9a-f]{7,40}|[0-9a-f]{64})$")
_NOT_A_REPO_HINT = (
    "reprobox records your code as a git commit: create one with "
    '`git init && git add -A && git commit -m "first commit"`'
)


@dataclass(frozen=True)
class GitCapture:
    """What the capture records about the code.

    ``info.patch`` is left None: the caller stores ``patch`` under a file name of its choice.
    """

    info: GitInfo
    patch: bytes | None
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- running git

#: Every git command reprobox runs: a repository's ``core.fsmonitor`` names a program that git
#: runs whenever it looks at the working tree (``diff``, ``ls-files --others``); it only speeds
#: git up, and reprobox runs no program a repository's configuration names.
NO_FSMONITOR = ("-c", "core.fsmonitor=false")


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "GIT_TERMINAL_PROMPT": "0",  # never wait for a password on a terminal
            "GIT_OPTIONAL_LOCKS": "0",  # reading must not take index.lock from a concurrent git
            "LC_ALL": "C",  # parseable messages
        }
    )
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    return env


def _git(
    args: Sequence[str | os.PathLike[str]],
    cwd: Path,
    *,
    check: bool = True,
    text: bool = True,
    what: str | None = None,
    hint: str | None = None,
    timeout: float | None = proc.DEFAULT_TIMEOUT,
    extra_env: dict[str, str] | None = None,
):
    """Run git; a failure becomes a GitError whose message never carries URL credentials."""
    try:
        return proc.run(
            ["git", *NO_FSMONITOR, *args],
            cwd=cwd,
            env={**_git_env(), **(extra_env or {})},
            check=check,
            text=text,
            what=what,
            timeout=timeout,
        )
    except CommandError as exc:
        raise GitError(
            f"{what or 'git ' + str(args[0])} failed: {redact_text(exc.stderr_tail.strip())}",
            hint or exc.hint,
        ) from None


def _toplevel(repo_root: Path) -> Path:
    if not Path(repo_root).is_dir():
        raise GitError(f"{repo_root} is not a directory", "run reprobox inside your project")
    done = _git(["rev-parse", "--show-toplevel"], Path(repo_root), check=False)
    if done.returncode != 0:
        err = done.stderr.strip()
        if "dubious ownership" in err:
            raise GitError(
                f"git refuses to read {repo_root}: it is owned by another user",
                f"if you trust it: `git config --global --add safe.directory {repo_root}`",
            )
        raise GitError(f"{repo_root} is not inside a git repository", _NOT_A_REPO_HINT)
    return Path(done.stdout.strip())


# --------------------------------------------------------------------------- capture


#: ``scheme://...`` (git's own URL form).
_URL_FORM = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: git's scp-like ``[user@]host:path`` form (a colon before any slash; not ``C:\\``).
_SCP_FORM = re.compile(r"^(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9._-]{2,}:(?!//)")


def is_tracked(repo_root: Path, rel: str) -> bool:
    """Whether git tracks the file ``rel`` (relative to the repository root, taken literally:
    ``[ab].sh`` is that name, not a pattern); False too when git cannot say."""
    try:
        done = _git(["ls-files", "-z", "--", f":(literal){rel}"], repo_root, check=False)
    except ReproboxError:  # no git, or it could not start
        return False
    return done.returncode == 0 and bool(done.stdout)


def local_remote_url(raw: str, top: Path) -> str | None:
    """A remote that is a local path (``/srv/git/x.git``, ``../x.git``) as a ``file://`` URL.

    Relative paths are taken from the top of the repository, as git does. Returns None for a
    remote that is not a local path (a URL or ``host:path``); raises ValueError for a local
    path that no URL can name (a control character in it).
    """
    if _URL_FORM.match(raw) or _SCP_FORM.match(raw):
        return None
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise ValueError("the path holds a control character")
    path = Path(os.path.expanduser(raw))
    if not path.is_absolute():
        path = Path(top) / path
    absolute = os.path.normpath(str(path))
    return "file://" + quote(absolute, safe="/-._~+")


def _remote_url(top: Path, branch: str | None, warnings: list[str] | None = None) -> str | None:
    name = None
    if branch:
        got = _git(["config", "--get", f"branch.{branch}.remote"], top, check=False)
        name = got.stdout.strip() or None
        if name == ".":  # upstream is a local branch
            name = None
    for candidate in (name, "origin"):
        if not candidate:
            continue
        got = _git(["remote", "get-url", candidate], top, check=False)
        if got.returncode == 0 and got.stdout.strip():
            raw = got.stdout.strip()
            try:
                local = local_remote_url(raw, top)
            except ValueError as exc:
                if warnings is not None:
                    warnings.append(
                        f"the git remote {candidate!r} is a local path that cannot be "
                        f"recorded as a file:// URL ({exc}); no remote was recorded"
                    )
                return None
            return local if local is not None else strip_url_credentials(raw)
    return None


def _pathspec(exclude: Sequence[str]) -> list[str]:
    return ["--", ".", *(f":(exclude){e.strip('/')}" for e in exclude if e.strip("/"))]


def _check_patch(patch: bytes) -> None:
    """Refuse, at capture, an uncommitted change that every command reading the record would
    refuse (a new symbolic link, a name a patch cannot carry safely): the fix is here, in the
    working tree, not in a re-capture."""
    from ..model.patch import patch_targets  # lazy: the record model, for dirty trees only

    try:
        patch_targets(patch, "the uncommitted change (git diff HEAD)")
    except ValidationError as exc:
        raise GitError(
            exc.message,
            "commit that change (a rerun checks out the commit, it needs no patch for it) or "
            "undo it (`git restore --staged --worktree PATH`), then capture again",
        ) from None


def git_info(repo_root: Path, exclude: Sequence[str] = (".reprobox",)) -> GitCapture:
    """Commit, branch, remote (without credentials), and the uncommitted change against HEAD.

    The patch holds staged and unstaged changes to tracked files (binary-safe); untracked files
    are listed with a warning because they are not in it. Paths under ``exclude`` (the store)
    are left out of both.
    """
    top = _toplevel(Path(repo_root))
    # ``exclude`` is relative to repo_root, which may sit below the top of the repository.
    try:
        below = Path(repo_root).resolve().relative_to(top.resolve()).as_posix()
    except ValueError:
        below = "."
    if below != ".":
        exclude = [f"{below}/{e.strip('/')}" for e in exclude]
    head = _git(["rev-parse", "--verify", "-q", "HEAD^{commit}"], top, check=False)
    if head.returncode != 0:
        raise GitError(
            f"the repository {top} has no commit yet",
            'commit your code first: `git add -A && git commit -m "first commit"`',
        )
    commit = head.stdout.strip()
    sym = _git(["symbolic-ref", "-q", "--short", "HEAD"], top, check=False)
    branch = sym.stdout.strip() if sym.returncode == 0 and sym.stdout.strip() else None
    remote_warnings: list[str] = []
    remote = _remote_url(top, branch, remote_warnings)

    diff = _git(
        [
            "diff",
            "HEAD",
            "--binary",
            "--full-index",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--no-renames",
            "--submodule=short",
            "--src-prefix=a/",
            "--dst-prefix=b/",
            *_pathspec(exclude),
        ],
        top,
        text=False,
        what="git diff",
        timeout=None,
    )
    patch: bytes | None = diff.stdout or None
    if patch:
        _check_patch(patch)
    warnings: list[str] = list(remote_warnings)
    if patch and len(patch) > LARGE_PATCH_BYTES:
        warnings.append(
            f"the uncommitted change is {len(patch) / 1048576:.1f} MiB: it is recorded as a patch, "
            "but data belongs in DVC or a commit; commit it or track large files with `dvc add`"
        )

    others = _git(
        [
            "ls-files",
            "-z",
            "--others",
            "--exclude-standard",
            "--directory",
            "--no-empty-directory",
            *_pathspec(exclude),
        ],
        top,
        what="git ls-files",
    )
    untracked = sorted(p for p in others.stdout.split("\0") if p)
    if untracked:
        shown = ", ".join(untracked[:5]) + (
            f" and {len(untracked) - 5} more" if len(untracked) > 5 else ""
        )
        warnings.append(
            f"{len(untracked)} untracked path(s) are NOT in the recorded patch and will be missing "
            f"when the experiment is rerun: {shown}; `git add` them (or list them in .gitignore)"
        )

    info = GitInfo(
        commit=commit,
        branch=branch,
        remote=remote,
        dirty=patch is not None,
        patch=None,
        patch_sha256=sha256_hex(patch) if patch else None,
        untracked=tuple(untracked[:MAX_UNTRACKED_LISTED]),
    )
    return GitCapture(info=info, patch=patch, warnings=warnings)


# --------------------------------------------------------------------------- worktree for run


def validate_commit(commit: str) -> str:
    """A recorded commit id, checked before it reaches a git command line."""
    if not isinstance(commit, str) or not _COMMIT_RE.match(commit):
        raise ValidationError("git.commit", commit, "not a hexadecimal git commit id")
    return commit


def make_worktree(repo_root: Path, commit: str, dest: Path) -> Path:
    """Check ``commit`` out, detached, at ``dest`` (a new folder), apart from the user's tree."""
    validate_commit(commit)
    top = _toplevel(Path(repo_root))
    found = _git(["cat-file", "-e", f"{commit}^{{commit}}"], top, check=False)
    if found.returncode != 0:
        shallow = _git(["rev-parse", "--is-shallow-repository"], top, check=False).stdout.strip()
        hint = "fetch it: `git fetch --all`"
        if shallow == "true":
            hint = "this clone is shallow: `git fetch --unshallow`"
        raise GitError(
            f"commit {commit} is not in the repository at {top}",
            hint + "; if it is still missing, push it from the machine where it was captured",
        )
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise GitError(
            f"{dest} already exists and is not empty", "choose another folder or remove it"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    argv = ["worktree", "add", "--detach", str(dest), commit]
    lfsconfig = _git(["cat-file", "-e", f"{commit}:.lfsconfig"], top, check=False)
    if lfsconfig.returncode == 0:
        # A committed .lfsconfig may point git-lfs at any server, which would be sent the
        # user's credentials for the LFS objects: those stay pointers, with a warning.
        log.warning(
            "the commit has a .lfsconfig: Git LFS files are not downloaded for it "
            "(the LFS server it names is not trusted with your credentials)"
        )
    extra = {"GIT_LFS_SKIP_SMUDGE": "1"} if lfsconfig.returncode == 0 else {}
    _git(argv, top, what="git worktree add", timeout=None, extra_env=extra)
    if (dest / ".gitmodules").is_file() or os.path.islink(dest / ".gitmodules"):
        update_submodules(dest)
    return dest.resolve()


#: ``git -c`` settings for a fetch the checkout asked for (its ``.gitmodules``): no credential
#: helper, no hooks, no local-path or ext:: transport, no fsmonitor or other program named by the
#: configuration of what is fetched.
_UNTRUSTED_FETCH_CONFIG = (
    "credential.helper=",
    "core.askPass=/bin/false",
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "protocol.allow=never",
    "protocol.https.allow=always",
    "protocol.http.allow=always",
    "protocol.git.allow=always",
    "protocol.ssh.allow=always",
    "protocol.file.allow=never",
    "protocol.ext.allow=never",
    "submodule.recurse=false",
    "http.emptyAuth=false",
    "http.extraHeader=",
)


#: Where the rerun's container sees the repository of the recorded commit (read-only).
CONTAINER_GIT_DIR = "/reprobox/git"


def make_run_repository(
    repo_root: Path, commit: str, dest: Path, container_git_dir: str = CONTAINER_GIT_DIR
) -> tuple[Path, Path]:
    """A repository holding the recorded commit alone, for code that reads git during a rerun.

    The checkout is a worktree whose ``.git`` file names a host path a container does not have;
    the container gets this instead: ``dest/repo`` (a shallow repository with only ``commit``,
    HEAD detached at it, an index of it, no remote, no hooks, no configuration of the user's)
    and ``dest/dotgit`` (a ``.git`` file naming ``container_git_dir``, where ``repo`` is mounted
    read-only). So ``git rev-parse HEAD``, GitPython and dvclive see the recorded commit, and
    ``git status`` the recorded patch as an uncommitted change, as at capture time. Nothing of the
    user's repository (other branches, its configuration, credentials in a remote URL) is in it.
    Returns ``(repo, dotgit)``.
    """
    validate_commit(commit)
    top = _toplevel(Path(repo_root))
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=False)
    repo = dest / "repo"
    quiet = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    _git(["init", "-q", "--bare", "--template=", str(repo)], dest, what="git init", extra_env=quiet)
    source = "file://" + str(top.resolve())
    _git(
        [
            "--git-dir",
            str(repo),
            "-c",
            "protocol.file.allow=always",
            "-c",
            "uploadpack.allowAnySHA1InWant=true",
            "fetch",
            "-q",
            "--depth",
            "1",
            "--no-tags",
            "--no-recurse-submodules",
            source,
            commit,
        ],
        dest,
        what="git fetch of the recorded commit",
        timeout=None,
        extra_env=quiet,
    )
    _git(
        ["--git-dir", str(repo), "update-ref", "--no-deref", "HEAD", commit],
        dest,
        what="git update-ref",
        extra_env=quiet,
    )
    _git(["--git-dir", str(repo), "read-tree", "HEAD"], dest, what="git read-tree", extra_env=quiet)
    _git(
        ["--git-dir", str(repo), "config", "core.bare", "false"],
        dest,
        what="git config",
        extra_env=quiet,
    )
    for leftover in ("FETCH_HEAD",):
        try:
            os.unlink(repo / leftover)
        except FileNotFoundError:
            pass
    dotgit = dest / "dotgit"
    dotgit.write_text(f"gitdir: {container_git_dir}\n")
    return repo, dotgit


def untrusted_fetch_env() -> dict[str, str]:
    """The environment of a fetch the checkout asked for: no way to reach a credential.

    No prompt, ``GIT_ASKPASS``/``SSH_ASKPASS`` answering nothing, no SSH agent, ssh with no key
    and no user configuration, neither the global nor the system git configuration (URL
    rewrites carrying tokens, credential helpers scoped to a host), ``http.extraHeader`` reset
    (CI checkouts keep an authorization header there).
    """
    env = _git_env()
    for key in (
        "SSH_AUTH_SOCK",
        "SSH_AGENT_PID",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_ASKPASS",
        "SSH_ASKPASS",
        "GIT_CONFIG_PARAMETERS",
        "GIT_CONFIG_COUNT",
    ):
        env.pop(key, None)
    env.update(
        {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "/bin/false",
            "SSH_ASKPASS": "/bin/false",
            "SSH_ASKPASS_REQUIRE": "never",
            "GIT_SSH_COMMAND": "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes "
            "-o IdentityFile=/dev/null -o IdentityAgent=none",
            "GIT_PROTOCOL_FROM_USER": "0",
            "GIT_LFS_SKIP_SMUDGE": "1",
            # The user's own configuration may rewrite URLs to carry tokens (insteadOf) or hold
            # credential helpers scoped to a host: none of it applies to the checkout's fetches.
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
        }
    )
    return env


def update_submodules(worktree: Path) -> None:
    """``git submodule update --init --recursive`` with credentials out of reach.

    The URLs come from the checkout's ``.gitmodules``, which a stranger may have written: they
    are fetched as an anonymous client (no credential helper, no SSH key or agent, no hooks, no
    local-path transport that would copy a host repository into the checkout). A private
    submodule therefore fails with a clear message instead of borrowing the user's credentials.
    """
    worktree = Path(worktree)
    if os.path.islink(worktree / ".gitmodules"):
        raise ValidationError(
            ".gitmodules",
            ".gitmodules",
            "is a symbolic link: git would read it from outside the checkout",
        )
    argv: list[str] = []
    for setting in _UNTRUSTED_FETCH_CONFIG:
        argv += ["-c", setting]
    argv += ["submodule", "update", "--init", "--recursive"]
    try:
        proc.run(
            ["git", *argv],
            cwd=worktree,
            env=untrusted_fetch_env(),
            what="git submodule update",
            timeout=None,
        )
    except CommandError as exc:
        raise GitError(
            "git submodule update failed (submodules of a checkout are fetched without your "
            f"credentials): {redact_text(exc.stderr_tail.strip())}",
            "the experiment's commit uses submodules whose remotes must be readable without "
            "credentials (public https/git URLs); a private or local-path submodule is not "
            "fetched for an untrusted checkout: fetch it yourself into the worktree",
        ) from None


def remove_worktree(repo_root: Path, dest: Path) -> None:
    """Remove a worktree made by :func:`make_worktree`, even if modified; again: a no-op."""
    top = _toplevel(Path(repo_root))
    dest = Path(dest)
    if dest.exists():
        _git(["worktree", "remove", "--force", "--force", str(dest)], top, check=False)
    marker = dest / ".git"
    if (
        dest.exists()
        and marker.is_file()
        and marker.read_text(errors="replace").startswith("gitdir:")
    ):
        shutil.rmtree(dest, ignore_errors=True)  # git could not remove it (e.g. files in use)
    _git(["worktree", "prune"], top, check=False)


# --------------------------------------------------------------------------- patch safety

_HUNK_RE = re.compile(rb"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")
_BASE85_LINE = re.compile(rb"^[A-Za-z][0-9A-Za-z!#$%&()*+\-;<=>?@^_`{|}~]+$")
_ESCAPES = {b"a": 7, b"b": 8, b"t": 9, b"n": 10, b"v": 11, b"f": 12, b"r": 13, b'"': 34, b"\\": 92}


def _unquote(raw: bytes) -> tuple[bytes, bytes]:
    """Split a git C-quoted name off the front of ``raw``: (name, rest)."""
    out = bytearray()
    i = 1
    while i < len(raw):
        c = raw[i : i + 1]
        if c == b'"':
            return bytes(out), raw[i + 1 :]
        if c == b"\\" and i + 1 < len(raw):
            nxt = raw[i + 1 : i + 2]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            octal = raw[i + 1 : i + 4]
            if re.fullmatch(rb"[0-7]{3}", octal):
                out.append(int(octal, 8))
                i += 4
                continue
        out += c
        i += 1
    return bytes(out), b""


def _name(raw: bytes) -> bytes:
    """One file name of a ---/+++ or rename line: unquoted, without a trailing tab + date."""
    raw = raw.rstrip(b"\r\n")
    if raw.startswith(b'"'):
        return _unquote(raw)[0]
    return raw.split(b"\t", 1)[0]


def _strip_prefix(name: bytes) -> bytes:
    return name.split(b"/", 1)[1] if b"/" in name else name


def _git_header_names(rest: bytes) -> list[bytes]:
    """The names of a ``diff --git A B`` line, the way git finds them (equal halves unquoted)."""
    rest = rest.rstrip(b"\r\n")
    if rest.startswith(b'"'):
        first, tail = _unquote(rest)
        tail = tail.lstrip(b" ")
        second = _unquote(tail)[0] if tail.startswith(b'"') else tail
        return [_strip_prefix(first), _strip_prefix(second)]
    if rest.endswith(b'"') and b' "' in rest:
        first, _, quoted = rest.partition(b' "')
        return [_strip_prefix(first), _strip_prefix(_unquote(b'"' + quoted)[0])]
    for i, ch in enumerate(rest):
        if ch == 0x20:
            left, right = _strip_prefix(rest[:i]), _strip_prefix(rest[i + 1 :])
            if left == right:
                return [left]
    # Not equal halves (a rename): check the whole text; rename lines name the files exactly.
    return [_strip_prefix(rest)]


def patch_paths(data: bytes) -> Iterator[str]:
    """Every path a patch names in its headers, as git would read them (hunk bodies skipped)."""
    old = new = 0
    binary = False
    for line in data.split(b"\n"):
        if old > 0 or new > 0:  # inside a hunk: content, never a header
            tag = line[:1]
            if tag in (b" ", b""):
                old, new = old - 1, new - 1
            elif tag == b"-":
                old -= 1
            elif tag == b"+":
                new -= 1
            continue
        if binary:
            if not line or _BASE85_LINE.match(line) or re.match(rb"^(literal|delta) \d+$", line):
                continue
            binary = False
        names: list[bytes] = []
        if line.startswith(b"diff --git "):
            names = _git_header_names(line[len(b"diff --git ") :])
        elif line.startswith((b"--- ", b"+++ ")):
            name = _name(line[4:])
            names = [] if name == b"/dev/null" else [_strip_prefix(name)]
        elif line.startswith((b"rename from ", b"rename to ", b"copy from ", b"copy to ")):
            names = [_name(line.split(b" ", 2)[2])]
        elif line.startswith(b"GIT binary patch"):
            binary = True
        else:
            m = _HUNK_RE.match(line)
            if m:
                old = int(m.group(1)) if m.group(1) is not None else 1
                new = int(m.group(2)) if m.group(2) is not None else 1
        for name in names:
            yield name.decode("utf-8", "surrogateescape")


def check_patch_path(path: str, field: str = "git.patch") -> None:
    """Refuse a path that leaves the tree or touches git's own files."""
    if not path or "\0" in path:
        raise ValidationError(field, path, "an empty or NUL-containing file name")
    if path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", path):
        raise ValidationError(field, path, "an absolute path: the patch may only touch the project")
    parts = re.split(r"[/\\]", path)
    if any(p == ".." for p in parts):
        raise ValidationError(field, path, "climbs out of the project with '..'")
    if any(p.lower() == ".git" for p in parts):
        raise ValidationError(field, path, "touches git's own files (.git)")


def apply_patch(worktree: Path, patch_file: Path) -> None:
    """Apply a recorded patch to a fresh worktree, after checking every path it names."""
    patch_file = Path(patch_file)
    try:
        size = patch_file.stat().st_size
        if size > MAX_PATCH_BYTES:
            raise ValidationError(
                "git.patch", patch_file.name, f"{size} bytes, larger than any code change"
            )
        data = patch_file.read_bytes()
    except OSError as exc:
        raise GitError(
            f"cannot read the recorded patch {patch_file}: {exc.strerror}",
            "restore it from git (`git checkout -- .reprobox/`)",
        ) from None
    for path in patch_paths(data):
        check_patch_path(path)
    # Second opinion from git's own parser, which is what will apply it.
    listed = _git(
        ["apply", "--numstat", "-z", str(patch_file.resolve())],
        Path(worktree),
        what="reading the recorded patch",
        hint="the patch file is damaged; restore it from git or re-capture",
    )
    for entry in listed.stdout.split("\0"):
        name = entry.split("\t")[-1]
        if name:
            check_patch_path(name)
    _git(
        ["apply", "--binary", "--whitespace=nowarn", str(patch_file.resolve())],
        Path(worktree),
        what="applying the recorded patch",
        hint="the patch no longer applies to the recorded commit: was it edited after capture? "
        "restore it from git or re-capture the experiment",
    )
