"""File-system access that never follows a symbolic link below a trusted root.

A checkout is untrusted: anyone can commit ``.reprobox`` (or ``.reprobox/local``, or an experiment
folder) as a symbolic link to ``~/.ssh`` or ``/etc``. Every folder the store reads or writes is
therefore reached one component at a time from the repository root with
``O_DIRECTORY | O_NOFOLLOW`` (a link or a plain file in the way is refused, naming the path), and
every file is created, read, renamed and removed relative to the open folder (``dir_fd``), so
nothing can be redirected between a check and its use.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Iterable, Optional, Union

from .errors import ReproboxError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class UnsafePath(ReproboxError):
    """A path reprobox reads or writes is a symbolic link or not the kind of entry expected."""

    exit_code = 2

    def __init__(self, path: Path, what: str) -> None:
        #: A link in the way (else another kind of entry than expected: a folder for a file).
        self.linked = "symbolic link" in what
        why = "; reprobox never reads or writes through a symbolic link" if self.linked else ""
        super().__init__(
            f"refusing {path}: {what}{why}",
            "remove it (it may come from a commit you did not write) and run the command again",
        )
        self.path = path


class TooLarge(ReproboxError):
    """A file is over the size reprobox reads for its kind."""

    exit_code = 2


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ReproboxError(f"internal: bad path component {name!r}")


class SafeDir:
    """An open folder reached without following links; a context manager that closes it."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls, root: Path, parts: Iterable[str] = (), *, create: bool = False, mode: int = 0o755
    ) -> "SafeDir":
        """``root/part/part...``: ``root`` itself is trusted (the repository), each part is not."""
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
        top = cls(fd, Path(root))
        try:
            return top.walk(parts, create=create, mode=mode)
        finally:
            top.close()

    def walk(self, parts: Iterable[str], *, create: bool = False, mode: int = 0o755) -> "SafeDir":
        """A new handle on ``self/part/part...`` (this one stays open)."""
        here = SafeDir(os.dup(self.fd), self.path)
        try:
            for part in parts:
                nxt = here.sub(part, create=create, mode=mode)
                here.close()
                here = nxt
        except BaseException:
            here.close()
            raise
        return here

    def sub(self, name: str, *, create: bool = False, mode: int = 0o755) -> "SafeDir":
        _check_name(name)
        path = self.path / name
        if create:
            try:
                os.mkdir(name, mode, dir_fd=self.fd)
            except FileExistsError:
                pass
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK):
                raise UnsafePath(path, "it is a symbolic link") from None
            if exc.errno == errno.ENOTDIR:  # also a link, opened with O_DIRECTORY | O_NOFOLLOW
                try:
                    linked = stat.S_ISLNK(
                        os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mode
                    )
                except OSError:
                    linked = False
                what = "it is a symbolic link" if linked else "it is not a folder"
                raise UnsafePath(path, what) from None
            raise
        return SafeDir(fd, path)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "SafeDir":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ entries

    def names(self) -> list[str]:
        return sorted(os.listdir(self.fd))

    def lstat(self, name: str) -> Optional[os.stat_result]:
        _check_name(name)
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def exists(self, name: str) -> bool:
        return self.lstat(name) is not None

    def is_dir(self, name: str) -> bool:
        st = self.lstat(name)
        return st is not None and stat.S_ISDIR(st.st_mode)

    # ------------------------------------------------------------------ reading

    def read(self, name: str, limit: int) -> bytes:
        """The bytes of a plain file, refused when over ``limit`` (checked before reading)."""
        _check_name(name)
        path = self.path / name
        try:
            fd = os.open(
                name,
                os.O_RDONLY
                | os.O_NOFOLLOW
                | getattr(os, "O_CLOEXEC", 0)
                | getattr(os, "O_NONBLOCK", 0),
                dir_fd=self.fd,
            )
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK):
                raise UnsafePath(path, "it is a symbolic link") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # before fdopen, which refuses a folder
            os.close(fd)
            raise UnsafePath(path, "it is not a plain file")
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if st.st_size > limit:
                raise TooLarge(
                    f"refusing {path}: it is {st.st_size} bytes, over the {limit} bytes "
                    "reprobox reads from such a file",
                    "restore it from git (`git checkout -- .reprobox/`) or re-capture",
                )
            data = fh.read(limit + 1)
        if len(data) > limit:  # grew while being read
            raise TooLarge(f"refusing {path}: it is over the {limit} bytes reprobox reads")
        return data

    # ------------------------------------------------------------------ writing

    def write_atomic(self, name: str, data: Union[str, bytes], mode: int = 0o644) -> Path:
        """Write through a temporary file in this folder, then rename over ``name`` (a link
        there is replaced, never followed)."""
        _check_name(name)
        raw = data.encode() if isinstance(data, str) else data
        tmp = f".{name[:40]}.{os.urandom(6).hex()}.tmp"
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
            0o600,
            dir_fd=self.fd,
        )
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
                os.fchmod(fh.fileno(), mode)
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=self.fd)
            except FileNotFoundError:
                pass
            raise
        return self.path / name

    def create_new(self, name: str, data: Union[str, bytes], mode: int = 0o644) -> bool:
        """Create ``name`` only if nothing is there; False when it exists (any kind of entry)."""
        _check_name(name)
        raw = data.encode() if isinstance(data, str) else data
        try:
            fd = os.open(
                name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                mode,
                dir_fd=self.fd,
            )
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        return True

    def mkdtemp(self, prefix: str) -> str:
        while True:
            name = f"{prefix}{os.urandom(6).hex()}"
            try:
                os.mkdir(name, 0o700, dir_fd=self.fd)
                return name
            except FileExistsError:
                continue

    def rename(self, src: str, dst: str) -> None:
        _check_name(src)
        _check_name(dst)
        os.rename(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def chmod(self, name: str, mode: int) -> None:
        with self.sub(name) as d:
            os.fchmod(d.fd, mode)

    def unlink(self, name: str) -> None:
        _check_name(name)
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass

    def rmtree(self, name: str) -> None:
        """Remove a folder below this one; links inside are removed, never followed."""
        _check_name(name)
        st = self.lstat(name)
        if st is None:
            return
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=self.fd)
            return
        with self.sub(name) as d:
            for entry in d.names():
                d.rmtree(entry)
        os.rmdir(name, dir_fd=self.fd)


def ensure_dir(root: Path, parts: Iterable[str], mode: int = 0o755) -> Path:
    """Create ``root/parts...`` refusing a link or a file on the way; return its path."""
    with SafeDir.open(root, parts, create=True, mode=mode) as d:
        return d.path


def write_under(
    root: Path, rel: Union[str, Path], data: Union[str, bytes], mode: int = 0o644
) -> Path:
    """Write ``root/rel`` atomically, creating its folders, through no symbolic link at all."""
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or ".." in parts:
        raise ReproboxError(f"internal: {rel} is not a path inside {root}")
    with SafeDir.open(root, parts[:-1], create=True) as d:
        return d.write_atomic(parts[-1], data, mode)
