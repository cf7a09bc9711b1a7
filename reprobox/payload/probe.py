"""Environment probe, run *inside* the target interpreter; prints one JSON object on stdout.

This file is executed as a script by whatever Python the user trains with, where reprobox is
usually not installed, so it must only use the standard library and must run on CPython >= 3.8.
``reprobox.capture.python`` runs it as a file (``reprobox.payload.script("probe")``);
``reprobox.capture.record`` also reuses its ELF and ld.so.cache readers in-process.

How it is run, and why: ``<python> -I probe.py [--user-site] [--cache FILE]``.

* ``-I`` (isolated mode) ignores every ``PYTHON*`` variable (``PYTHONPATH``, ``PYTHONHOME``,
  ``PYTHONSTARTUP``...) and keeps the script's folder off ``sys.path``, so nothing from the
  user's shell or working directory can leak into what is recorded or shadow a stdlib module.
* ``-S`` is deliberately *not* used: ``site`` must run so that site-packages, ``.pth`` files
  (editable installs, ``easy-install.pth``) and venv/conda layouts look exactly as they do when
  the user's own script runs.
* Isolated mode also hides the user site-packages (``~/.local/lib/pythonX.Y/site-packages``),
  which a normal run *does* see unless ``PYTHONNOUSERSITE`` is set or the interpreter is a venv
  without system site-packages. The caller knows the user's environment and passes
  ``--user-site`` when that folder would be active; the probe then adds it at the place
  ``site`` would have put it (before the other site-packages).

What it reports (see ``main``): the interpreter, every distribution on ``sys.path`` in
``importlib.metadata`` order (shadowed duplicates apart), the native libraries the extension
modules need that neither the wheels nor the interpreter provide, the OS, and a few small
version files that reveal the CUDA build of frameworks without importing them.

Speed matters (a capture must cost less than ``pip freeze``): metadata files are read only up to
the end of their headers, extension modules are found through the wheels' RECORD files rather
than by walking every folder, ELF parses are cached by (path, size, mtime) in ``--cache FILE``,
and no subprocess is started on glibc systems.
"""

from __future__ import annotations

import base64
import csv
import gc
import io
import json
import os
import re
import site
import struct
import sys
import sysconfig
from stat import S_ISREG

PROBE_VERSION = 1

#: Version files shipped verbatim (capped) so the caller can read CUDA/cuDNN builds.
VERSION_FILES = (
    "torch/version.py",
    "tensorflow/python/platform/build_info.py",
    "jaxlib/version.py",
    "cupy/_environment.py",
)
VERSION_FILE_CAP = 16384

#: The consumer name used for the interpreter itself and its stdlib extension modules.
PYTHON_USER = "<python>"
#: The consumer name for extension modules in site-packages that no distribution claims.
UNKNOWN_USER = "<unknown>"

_SO_RE = re.compile(r"\.so(\.[0-9][^/]*)?$")
_NORM_RE = re.compile(r"[-_.]+")
_warnings = []  # type: list


def warn(message):
    _warnings.append(message)


def normalize(name):
    """PEP 503 normalized project name."""
    return _NORM_RE.sub("-", name).lower()


# --------------------------------------------------------------------------- interpreter


def _glibc_version():
    try:
        value = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        return None
    if not value:
        return None
    parts = value.split()
    return parts[1] if len(parts) == 2 and parts[0] == "glibc" else None


def _abi_tag(sysconfig):
    impl = sys.implementation.name
    gil_disabled = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    if impl == "cpython":
        abi = f"cp{sys.version_info[0]}{sys.version_info[1]}"
        if sysconfig.get_config_var("Py_DEBUG") or hasattr(sys, "gettotalrefcount"):
            abi += "d"
        if gil_disabled:
            abi += "t"
        return abi, gil_disabled
    soabi = sysconfig.get_config_var("SOABI") or ""
    parts = soabi.split("-")
    if len(parts) >= 2:
        return "_".join(parts[:2]).replace(".", "_"), gil_disabled
    return None, gil_disabled


def _interpreter_tag():
    """``cp311`` / ``pp39``: the interpreter part of a wheel tag."""
    short = {"cpython": "cp", "pypy": "pp", "ironpython": "ip", "jython": "jy"}
    name = sys.implementation.name
    return f"{short.get(name, name)}{sys.version_info[0]}{sys.version_info[1]}"


def _musl_version(executable):
    """musl's version from the dynamic loader named in the interpreter's PT_INTERP, or None."""
    info = read_elf(executable, interp=True)
    interp = info and info.get("interp")
    if not interp or "musl" not in interp:
        return None
    # lazy: subprocess costs 3.6 ms to import, and is needed only on musl systems
    import subprocess

    try:
        out = subprocess.run(
            [interp], check=False, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, timeout=5
        ).stderr.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    match = re.search(r"Version (\d+)\.(\d+)", out)
    return "{}.{}".format(*match.groups()) if match else "unknown"


def platform_tags(sysconfig, glibc):
    """The most specific compatible platform tags, computed like ``packaging.tags`` does."""
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_").replace(" ", "_")
    if not plat.startswith("linux_"):
        return [plat]
    arch = plat[len("linux_") :]
    if struct.calcsize("P") == 4:  # 32-bit interpreter on a 64-bit kernel
        arch = {"x86_64": "i686", "aarch64": "armv8l"}.get(arch, arch)
    tags = []
    if glibc:
        try:
            major, minor = (int(x) for x in glibc.split(".")[:2])
        except ValueError:
            major, minor = 0, 0
        if major == 2 and minor >= 5:
            # manylinux_2_5 is the oldest manylinux tag; give the few most specific ones and
            # the manylinux2014 baseline (2_17) that most binary wheels target.
            for m in range(minor, max(minor - 4, 4), -1):
                tags.append(f"manylinux_2_{m}_{arch}")
            if minor - 4 >= 17:
                tags.append(f"manylinux_2_17_{arch}")
    else:
        musl = _musl_version(sys.executable)
        if musl and musl != "unknown":
            mj, mn = musl.split(".")
            tags.append(f"musllinux_{mj}_{mn}_{arch}")
    tags.append("linux_" + arch)
    return tags


def interpreter_kind(prefix, base_prefix, sysconfig):
    """How this Python was installed: what rebuilding it would have to replicate."""

    def base_kind(path):
        real = os.path.realpath(path)
        if os.path.isdir(os.path.join(path, "conda-meta")):
            return "conda"
        uv_dirs = [
            os.environ.get("UV_PYTHON_INSTALL_DIR") or "",
            os.path.join(
                os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"),
                "uv",
                "python",
            ),
        ]
        for d in uv_dirs:
            if d and (real + os.sep).startswith(os.path.realpath(d) + os.sep):
                return "uv"
        if "/.pyenv/versions/" in real + "/" or (
            os.environ.get("PYENV_ROOT")
            and real.startswith(os.path.join(os.environ["PYENV_ROOT"], "versions") + os.sep)
        ):
            return "pyenv"
        config_args = sysconfig.get_config_var("CONFIG_ARGS") or ""
        if "--prefix=/install" in config_args and real != "/install":
            return "python-build-standalone"
        if real in ("/usr", "/usr/lib") or real.startswith("/usr/lib/"):
            return "system"
        return "other"

    base = base_kind(base_prefix)
    if os.path.realpath(prefix) != os.path.realpath(base_prefix):
        if os.path.isdir(os.path.join(prefix, "conda-meta")):
            return "conda", base
        return "venv", base
    return base, base


def _build_and_compiler():
    """platform.python_build() (joined) and python_compiler(), without importing platform.

    CPython's sys.version reads ``3.11.7 (main, Dec  8 2023, 14:22:46) [GCC 12.2.0]``; any
    other shape is left to the platform module.
    """
    m = re.match(
        r"[^(]*\((?P<no>[^,]*),\s*(?P<date>[^,]*),\s*(?P<time>[^)]*)\)\s*\[(?P<cc>[^\]]*)\]",
        sys.version.replace("\n", " "),
    )
    if m and sys.implementation.name == "cpython":
        build = ", ".join(x for x in (m.group("no"), m.group("date") + " " + m.group("time")) if x)
        return build, m.group("cc")
    # lazy: platform costs 1.3 ms to import; sys.version answers for CPython
    import platform

    return ", ".join(x for x in platform.python_build() if x), platform.python_compiler()


def interpreter_info():
    vi = sys.version_info
    version = f"{vi[0]}.{vi[1]}.{vi[2]}"
    if vi.releaselevel != "final":
        short = {"alpha": "a", "beta": "b", "candidate": "rc"}
        version += short.get(vi.releaselevel, vi.releaselevel) + str(vi.serial)
    abi, gil_disabled = _abi_tag(sysconfig)
    glibc = _glibc_version()
    kind, base = interpreter_kind(sys.prefix, sys.base_prefix, sysconfig)
    plats = platform_tags(sysconfig, glibc)
    build, compiler = _build_and_compiler()
    return {
        "implementation": sys.implementation.name,
        "version": version,
        "version_info": list(vi[:3]) + [vi.releaselevel, vi.serial],
        "abi": abi,
        "soabi": sysconfig.get_config_var("SOABI"),
        "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"),
        "platform": sysconfig.get_platform(),
        "build": build,
        "compiler": compiler,
        "gil_disabled": gil_disabled,
        # full wheel tags, most specific first (like packaging.tags.sys_tags()), and the
        # platform parts alone
        "platform_tags": [f"{_interpreter_tag()}-{abi or 'none'}-{p}" for p in plats],
        "platforms": plats,
        "executable": sys.executable,
        "kind": kind,
        "base_kind": base,
        "prefix": sys.prefix,
        "base_prefix": sys.base_prefix,
        "pointer_bits": struct.calcsize("P") * 8,
    }


# --------------------------------------------------------------------------- sys.path


def site_dirs(user_site):
    """The site-packages folders of this interpreter, in sys.path order."""
    dirs = [user_site] if user_site else []  # site puts it before the others
    try:
        dirs.extend(site.getsitepackages())
    except AttributeError:  # very old virtualenv's site.py
        pass
    seen = set()
    out = []
    for d in dirs:
        real = os.path.realpath(d)
        if real not in seen and os.path.isdir(real):
            seen.add(real)
            out.append(d)
    return out


def user_site_dir(wanted):
    """Add the user site-packages the way ``site`` would have, when the caller says it is on."""
    if not wanted:
        return None
    cfg = os.path.join(sys.prefix, "pyvenv.cfg")
    if sys.prefix != sys.base_prefix and os.path.isfile(cfg):
        try:
            with io.TextIOWrapper(_open_file(cfg), encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            text = ""
        pattern = r"^\s*include-system-site-packages\s*=\s*true\s*$"
        if not re.search(pattern, text, re.MULTILINE | re.IGNORECASE):
            return None  # a venv without system site-packages hides the user site too
    if hasattr(os, "geteuid") and os.geteuid() != os.getuid():
        return None
    path = site.getusersitepackages()
    if not os.path.isdir(path):
        return None
    before = list(sys.path)
    site.addsitedir(path)  # also runs its .pth files, as a normal start would
    added = [p for p in sys.path if p not in before]
    rest = [p for p in sys.path if p not in added]
    sitepkgs = set(site.getsitepackages())
    at = next((i for i, p in enumerate(rest) if p in sitepkgs), len(rest))
    sys.path[:] = rest[:at] + added + rest[at:]
    return path


# --------------------------------------------------------------------------- distributions


def read_headers(path, wanted=("name", "version")):
    """Header fields of a METADATA / PKG-INFO file, reading no further than needed.

    Stops at the first blank line (the end of the headers) or as soon as every wanted field has
    been seen, so a long description or a huge list of classifiers is never read.
    """
    found = {}
    try:
        with io.TextIOWrapper(_open_file(path), encoding="utf-8", errors="replace") as f:
            for line in f:
                if line in ("\n", "\r\n"):
                    break
                if line[:1] in (" ", "\t"):
                    continue
                key, sep, value = line.partition(":")
                key = key.strip().lower()
                if sep and key in wanted and key not in found:
                    found[key] = value.strip()
                    if len(found) == len(wanted):
                        break
    except OSError as exc:
        return None, str(exc)
    return found, None


def _open_fd(path):
    """A descriptor of ``path`` opened for reading, for a plain file only. The open does not
    wait (a FIFO or a device under a name the environment lists must not stall the probe), and
    anything but a regular file is an OSError, which every reader here treats as "unreadable"."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        if not S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{os.fsdecode(path)} is not a plain file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_file(path):
    """``open(path, "rb")`` through :func:`_open_fd`: plain files only, never waiting."""
    return os.fdopen(_open_fd(path), "rb")


def _read_small(path, limit=65536):
    """A small text file's content (binary read + decode: cheaper than a text-mode file)."""
    try:
        with _open_file(path) as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def _dir_name(entry):
    """Project name encoded in a metadata folder name, as importlib.metadata derives it."""
    return entry.rpartition(".")[0].partition("-")[0]


def read_dist(meta_dir, entry, site, kind):
    """One distribution's record from its metadata folder (or PKG-INFO file for egg-info files)."""
    rec = {
        "name": None,
        "version": None,
        "metadata_dir": meta_dir,
        "site": site,
        "format": kind,
        "installer": None,
        "requested": False,
        "wheel_tags": [],
        "direct_url": None,
        "has_record": False,
    }
    if kind == "egg-info-file":
        headers, err = read_headers(meta_dir)
        files = []
    else:
        try:
            files = os.listdir(meta_dir)
        except OSError as exc:
            files, headers, err = [], None, str(exc)
        else:
            meta = "METADATA" if kind == "dist-info" else "PKG-INFO"
            if meta in files:
                headers, err = read_headers(os.path.join(meta_dir, meta))
            else:
                headers, err = None, f"no {meta} file"
    if headers is None or "name" not in headers or "version" not in headers:
        rec["problem"] = err or "metadata lacks Name or Version"
        headers = headers or {}
    rec["name"] = headers.get("name") or _dir_name(entry)
    rec["version"] = headers.get("version") or ""
    if "INSTALLER" in files:
        text = _read_small(os.path.join(meta_dir, "INSTALLER"), 256)
        rec["installer"] = text.strip() if text and text.strip() else None
    rec["requested"] = "REQUESTED" in files
    if "WHEEL" in files:
        text = _read_small(os.path.join(meta_dir, "WHEEL")) or ""
        rec["wheel_tags"] = [
            ln.partition(":")[2].strip()
            for ln in text.splitlines()
            if ln.lower().startswith("tag:")
        ]
    if "direct_url.json" in files:
        text = _read_small(os.path.join(meta_dir, "direct_url.json"), 1 << 20)
        try:
            rec["direct_url"] = json.loads(text) if text is not None else None
        except ValueError as exc:
            rec["direct_url_error"] = f"unreadable direct_url.json: {exc}"
    rec["has_record"] = "RECORD" in files
    if kind == "egg-info":
        if "top_level.txt" in files:
            text = _read_small(os.path.join(meta_dir, "top_level.txt")) or ""
            rec["top_level"] = [ln.strip() for ln in text.splitlines() if ln.strip()]
        rec["has_installed_files"] = "installed-files.txt" in files
    return rec


def _egg_links(sites):
    """Folders named by ``*.egg-link`` files (setuptools ``develop`` installs)."""
    out = {}
    for folder in sites:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for n in names:
            if n.endswith(".egg-link"):
                text = _read_small(os.path.join(folder, n), 4096) or ""
                target = text.splitlines()[0].strip() if text.strip() else ""
                if target:
                    out[os.path.realpath(os.path.join(folder, target))] = os.path.join(folder, n)
    return out


def find_distributions(sites, entries=None):
    """Every distribution on sys.path: first occurrence of a name wins, like importlib.metadata.

    importlib.metadata walks ``sys.path`` in order and, in each folder, the ``*.dist-info`` and
    ``*.egg-info`` entries in directory order (``.egg`` folders on the path contribute their
    ``EGG-INFO``), keyed by the normalized name in the folder's file name.
    """
    site_set = {os.path.realpath(s) for s in sites}
    # the stdlib folder may hold egg-info files of its own; they are not develop installs
    for key in ("stdlib", "platstdlib"):
        site_set.add(os.path.realpath(sysconfig.get_path(key) or "/"))
    links = None
    active, shadowed, first = [], [], {}
    scanned = set()
    for entry_path in sys.path if entries is None else entries:
        if not entry_path:
            continue
        path = os.path.abspath(entry_path)
        real_entry = os.path.realpath(path)
        if real_entry in scanned:
            continue  # the same folder twice (a symlinked lib64, a repeated .pth line)
        scanned.add(real_entry)
        if path.lower().endswith(".egg") and os.path.isdir(os.path.join(path, "EGG-INFO")):
            candidates = [(os.path.join(path, "EGG-INFO"), os.path.basename(path), "egg")]
        else:
            try:
                names = os.listdir(path)
            except OSError:
                continue  # zip files, missing folders, path hooks
            candidates = []
            for n in names:
                low = n.lower()
                if low.endswith(".dist-info"):
                    candidates.append((os.path.join(path, n), n, "dist-info"))
                elif low.endswith(".egg-info"):
                    full = os.path.join(path, n)
                    kind = "egg-info" if os.path.isdir(full) else "egg-info-file"
                    candidates.append((full, n, kind))
        for meta_dir, entry, kind in candidates:
            rec = read_dist(meta_dir, entry, path, kind)
            if kind != "dist-info" and real_entry not in site_set:
                # An egg-info outside site-packages got onto sys.path through a .pth file:
                # a setuptools ``develop`` (editable) install of that project folder.
                if links is None:
                    links = _egg_links(sites)
                rec["develop"] = True
                rec["project_dir"] = path
                rec["egg_link"] = links.get(real_entry)
            key = normalize(_dir_name(entry) if kind != "egg" else entry.partition("-")[0])
            if normalize(rec["name"]) != key and "problem" not in rec:
                warn(f"{meta_dir} declares the name {rec['name']!r}")
            if key in first:
                rec["shadowed_by"] = first[key]
                shadowed.append(rec)
            else:
                first[key] = meta_dir
                active.append(rec)
    return active, shadowed


# --------------------------------------------------------------------------- ELF


_DT_NEEDED, _DT_STRTAB, _DT_STRSZ, _DT_SONAME, _DT_RPATH, _DT_RUNPATH = 1, 5, 10, 14, 15, 29


def read_elf(path, interp=False):
    """Parse an ELF file's dynamic section with struct: needed libs, soname, rpath, runpath.

    Handles 32/64-bit and both byte orders; returns None for anything that is not ELF. Only the
    headers, the dynamic segment and the few strings it names are read, never the whole file.
    """
    try:
        with _open_file(path) as f:
            return _parse_elf(f, interp)
    except (OSError, struct.error, ValueError):
        return None


def _parse_elf(f, interp):
    """The body of :func:`read_elf` on an open file; struct errors mean "not usable"."""
    ident = f.read(64)
    if len(ident) < 52 or ident[:4] != b"\x7fELF":
        return None
    bits = {1: 32, 2: 64}.get(ident[4])
    end = {1: "<", 2: ">"}.get(ident[5])
    if bits is None or end is None:
        return None
    wide = bits == 64
    header = end + ("HHIQQQIHHHHHH" if wide else "HHIIIIIHHHHHH")
    fields = struct.unpack(header, ident[16 : 16 + struct.calcsize(header)])
    e_type, machine, phoff, shoff = fields[0], fields[1], fields[4], fields[5]
    phentsize, phnum, shentsize = fields[8], fields[9], fields[10]
    ph_fmt = end + ("IIQQQQQQ" if wide else "IIIIIIII")
    dyn_fmt = end + ("qQ" if wide else "iI")
    if phnum == 0xFFFF and shoff:  # PN_XNUM: the real count lives in section 0's sh_info
        f.seek(shoff)
        sec0 = f.read(shentsize)
        phnum = struct.unpack(end + "I", sec0[44:48] if bits == 64 else sec0[28:32])[0]
    ph_size = struct.calcsize(ph_fmt)
    if phentsize < ph_size or phnum > 4096:
        return None
    f.seek(phoff)
    table = f.read(phentsize * phnum)
    loads, dynamic, interp_at = [], None, None
    for i in range(phnum):
        raw = table[i * phentsize : i * phentsize + ph_size]
        if len(raw) < ph_size:
            break
        ph = struct.unpack(ph_fmt, raw)
        if bits == 64:
            p_type, _flags, off, vaddr, _pa, filesz, _memsz, _al = ph
        else:
            p_type, off, vaddr, _pa, filesz, _memsz, _flags, _al = ph
        if p_type == 1:
            loads.append((vaddr, filesz, off))
        elif p_type == 2:
            dynamic = (off, filesz)
        elif p_type == 3:
            interp_at = (off, filesz)
    info = {
        "bits": bits,
        "endian": "little" if end == "<" else "big",
        "machine": machine,
        "type": e_type,
        "needed": [],
        "soname": None,
        "rpath": None,
        "runpath": None,
    }
    if interp and interp_at:
        f.seek(interp_at[0])
        info["interp"] = f.read(min(interp_at[1], 4096)).split(b"\0")[0].decode("utf-8", "replace")
    if dynamic is None:
        return info
    f.seek(dynamic[0])
    data = f.read(min(dynamic[1], 1 << 20))
    step = struct.calcsize(dyn_fmt)
    entries, strtab = [], None
    for i in range(0, len(data) - step + 1, step):
        tag, val = struct.unpack(dyn_fmt, data[i : i + step])
        if tag == 0:
            break
        if tag == _DT_STRTAB:
            strtab = val
        elif tag in (_DT_NEEDED, _DT_SONAME, _DT_RPATH, _DT_RUNPATH):
            entries.append((tag, val))
    if strtab is None:
        return info
    base = None
    for vaddr, filesz, off in loads:
        if vaddr <= strtab < vaddr + filesz:
            base = strtab - vaddr + off
            break
    if base is None:
        return info
    for tag, val in entries:
        s = _read_cstr(f, base + val)
        if tag == _DT_NEEDED:
            info["needed"].append(s)
        elif tag == _DT_SONAME:
            info["soname"] = s
        elif tag == _DT_RPATH:
            info["rpath"] = s
        else:
            info["runpath"] = s
    return info


def _read_cstr(f, offset):
    f.seek(offset)
    chunk = b""
    while True:
        more = f.read(256)
        chunk += more
        nul = chunk.find(b"\0")
        if nul >= 0:
            return chunk[:nul].decode("utf-8", "surrogateescape")
        if not more or len(chunk) > 65536:
            return chunk.decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- ld.so cache


def read_ld_cache(path="/etc/ld.so.cache"):
    """soname -> [paths] from glibc's ld.so.cache (new format, alone or after the old one)."""
    try:
        with _open_file(path) as f:
            data = f.read()
    except OSError:
        return None
    new_magic = b"glibc-ld.so.cache1.1"
    starts = []
    if data.startswith(new_magic):
        starts.append(0)
    elif data.startswith(b"ld.so-1.7.0"):
        nlibs = struct.unpack("=I", data[12:16])[0]
        off = 16 + nlibs * 12
        off = (off + 7) & ~7
        if data[off : off + len(new_magic)] == new_magic:
            starts.append(off)
    if not starts:
        return None
    start = starts[0]
    flags = data[start + 28]
    end = {2: "<", 3: ">"}.get(flags, "=")
    nlibs, _strlen = struct.unpack(end + "II", data[start + 20 : start + 28])
    out = {}
    entry = start + 48
    for base in (start, 0):  # string offsets are relative to the new header in every layout seen
        ok = True
        out = {}
        for i in range(nlibs):
            at = entry + i * 24
            _fl, key, value = struct.unpack(end + "iII", data[at : at + 12])
            k_end = data.find(b"\0", base + key)
            v_end = data.find(b"\0", base + value)
            if k_end < 0 or v_end < 0:
                ok = False
                break
            soname = data[base + key : k_end].decode("utf-8", "surrogateescape")
            target = data[base + value : v_end].decode("utf-8", "surrogateescape")
            if not target.startswith("/"):
                ok = False
                break
            out.setdefault(soname, []).append(target)
        if ok:
            return out
    return None


def ldconfig_p():
    """Fallback when the cache file has an unknown layout: one ``ldconfig -p`` call."""
    # lazy: subprocess costs 3.6 ms to import; this fallback is rarely taken
    import subprocess

    for exe in ("/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"):
        try:
            text = subprocess.run(
                [exe, "-p"],
                check=False,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                timeout=10,
            ).stdout.decode("utf-8", "surrogateescape")
        except (OSError, subprocess.SubprocessError):
            continue
        out = {}
        for line in text.splitlines()[1:]:
            soname, sep, target = line.strip().partition(" => ")
            if sep:
                out.setdefault(soname.split(" (")[0], []).append(target.strip())
        return out
    return {}


# --------------------------------------------------------------------------- native libraries


class ProbeCache:
    """Results keyed by file path and validated by (size, mtime_ns), kept in one JSON file.

    Sections: ``elf`` (parsed dynamic sections), ``record`` and ``columns`` (what a RECORD
    lists), ``ctypes`` (library names a distribution's sources hand to ctypes, by RECORD). A file
    that changed gets a different size or mtime and is parsed again; entries for files not seen
    in this run are dropped when the cache is written back.
    """

    def __init__(self, path):
        self.path = path
        self.old = {}
        self.new = {"elf": {}, "record": {}, "columns": {}, "ctypes": {}}
        self.hits = 0
        self.misses = 0
        if path:
            try:
                with _open_file(path) as f:
                    data = json.loads(f.read().decode("utf-8"))
                if data.get("version") == PROBE_VERSION:
                    self.old = {k: data.get(k) or {} for k in self.new}
            except (OSError, ValueError, AttributeError):
                self.old = {}

    def get(self, section, path, st, compute):
        found, value = self.lookup(section, path, st)
        if not found:
            value = compute(path)
            self.put(section, path, st, value)
        return value

    def lookup(self, section, path, st):
        """(True, value) when ``path`` with this stat was answered before, else (False, None)."""
        key = [st.st_size, st.st_mtime_ns]
        hit = self.old.get(section, {}).get(path)
        if hit is not None and hit[0] == key:
            self.hits += 1
            self.new[section][path] = [key, hit[1]]
            return True, hit[1]
        return False, None

    def put(self, section, path, st, value):
        self.misses += 1
        self.new[section][path] = [[st.st_size, st.st_mtime_ns], value]

    def save(self):
        if (
            not self.path
            or self.misses == 0
            and all(len(self.new[k]) == len(self.old.get(k, ())) for k in self.new)
        ):
            return
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            d = os.path.dirname(self.path)
            if d:
                os.makedirs(d, exist_ok=True)
            data = dict(self.new, version=PROBE_VERSION)
            text = json.dumps(data, separators=(",", ":"))  # dumps: the C encoder, ~10x dump's
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, self.path)
        except OSError as exc:
            warn(f"could not write the probe cache {self.path}: {exc}")
            try:
                os.unlink(tmp)
            except OSError:
                pass


_RECORD_SO = re.compile(rb'\.so(?:"?,|\.)')


def parse_record(path):
    """[extension files, top-level entries] listed by one RECORD file (paths as written)."""
    try:
        with _open_file(path) as f:
            data = f.read()
    except OSError:
        return [[], []]
    sos = []
    if b".so" in data:
        for m in _RECORD_SO.finditer(data):
            start = data.rfind(b"\n", 0, m.start()) + 1
            end = data.find(b"\n", m.start())
            line = data[start : end if end >= 0 else len(data)].rstrip(b"\r")
            if line.startswith(b'"'):  # CSV quoting: a path with a comma or a quote in it
                try:
                    text = line.decode("utf-8", "surrogateescape")
                    fields = next(csv.reader(io.StringIO(text, newline="")), [])
                except csv.Error:  # not CSV (a field over csv's limit): not a file it names
                    fields = []
                rel = fields[0] if fields else ""
            else:
                rel = line.split(b",", 1)[0].decode("utf-8", "surrogateescape")
            if _is_so(rel) and rel not in sos:
                sos.append(rel)
    tops = {line.split(b"/", 1)[0].split(b",", 1)[0].lstrip(b'"') for line in data.split(b"\n")}
    tops.discard(b"")
    return [sos, sorted(t.decode("utf-8", "surrogateescape") for t in tops)]


def record_files(dist, cache):
    """(extension files, top-level entries) a distribution's RECORD lists."""
    path = os.path.join(dist["metadata_dir"], "RECORD")
    try:
        st = os.stat(path)
    except OSError:
        return [], []
    sos, tops = cache.get("record", path, st, parse_record)
    return sos, tops


def _is_so(name):
    return name.endswith(".so") or ".so." in name and _SO_RE.search(name) is not None


def _walk_sos(root, out):
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    if e.is_dir(follow_symlinks=False):
                        if e.name != "__pycache__":
                            stack.append(e.path)
                    elif _is_so(e.name) and e.is_file():
                        out.append(e.path)
                except OSError:
                    continue


def extension_files(dists, sites, cache):
    """(path, owner, inside_site) of every ELF candidate under the site-packages folders.

    Distributions with a RECORD say which files they installed (no folder walk needed); the
    top-level entries of each site folder that no RECORD claims are walked, and their files are
    attributed by name (``top_level.txt``, ``<name>``, ``<name>.libs``) when possible.
    """
    owned = []
    claimed = {}  # realpath of site -> set of top-level names
    by_top = {}
    real_of = {}
    for s in sites:
        real_of[s] = os.path.realpath(s)
    site_real = {r: s for s, r in real_of.items()}
    for d in dists:
        site = d["site"]
        if site not in real_of:
            real_of[site] = os.path.realpath(site)
        real_site = real_of[site]
        if real_site not in site_real:
            continue
        if d.get("has_record"):
            sos, tops = record_files(d, cache)
            claimed.setdefault(real_site, set()).update(tops)
            for rel in sos:
                inside = not (rel.startswith("..") or os.path.isabs(rel))
                owned.append((os.path.normpath(os.path.join(site, rel)), d["name"], inside))
        claimed.setdefault(real_site, set()).add(os.path.basename(d["metadata_dir"]))
        for top in d.get("top_level") or ():
            by_top[(real_site, top)] = d["name"]
        by_top[(real_site, normalize(d["name"]).replace("-", "_"))] = d["name"]
    for real_site, site in site_real.items():
        taken = claimed.get(real_site, set())
        try:
            names = os.listdir(site)
        except OSError:
            continue
        for n in names:
            if n in taken or n == "__pycache__" or n.endswith((".pth", ".py", ".pyc", ".txt")):
                continue
            full = os.path.join(site, n)
            found = []
            if _is_so(n):
                found.append(full)
            else:
                _walk_sos(full, found)
            if not found:
                continue
            stem = n.split(".")[0].split("-")[0]
            owner = (
                by_top.get((real_site, stem))
                or by_top.get((real_site, stem.lstrip("_")))
                or by_top.get((real_site, normalize(stem).replace("-", "_")))
                or UNKNOWN_USER
            )
            owned.extend((p, owner, True) for p in found)
    return owned


def python_own_files(sites):
    """The interpreter binary, libpython and the stdlib extension modules (lib-dynload)."""
    out = [os.path.realpath(sys.executable)]
    soname = sysconfig.get_config_var("INSTSONAME") or ""
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and (soname.endswith(".so") or ".so." in soname):
        lib = os.path.join(libdir, soname)
        if os.path.isfile(lib):
            out.append(os.path.realpath(lib))
    dynload = sysconfig.get_path("platstdlib")
    dl = os.path.join(dynload, "lib-dynload") if dynload else None
    candidates = [p for p in sys.path if p.endswith("lib-dynload")]
    if dl:
        candidates.append(dl)
    seen = set()
    for d in candidates:
        real = os.path.realpath(d)
        if real in seen or not os.path.isdir(real):
            continue
        seen.add(real)
        try:
            with os.scandir(real) as it:
                out.extend(e.path for e in it if _is_so(e.name))
        except OSError:
            pass
    return out


class Resolver:
    """Finds a needed soname like ld.so: RPATH, LD_LIBRARY_PATH, RUNPATH, cache, default dirs."""

    def __init__(self, bits, machine):
        self.bits, self.machine = bits, machine
        self.cache = None
        self.exists = {}
        self.headers = {}
        self.env_dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
        if bits == 64:
            self.defaults = ["/lib64", "/usr/lib64", "/lib", "/usr/lib"]
        else:
            self.defaults = ["/lib32", "/usr/lib32", "/lib", "/usr/lib"]

    def _matches(self, path):
        """True when path is an ELF object for the same class and machine as the consumer."""
        hit = self.headers.get(path)
        if hit is None:
            try:
                with _open_file(path) as f:
                    ident = f.read(20)
                if ident[:4] != b"\x7fELF" or len(ident) < 20:
                    hit = (None, None)
                else:
                    end = "<" if ident[5] == 1 else ">"
                    hit = ({1: 32, 2: 64}.get(ident[4]), struct.unpack(end + "H", ident[18:20])[0])
            except OSError:
                hit = (None, None)
            self.headers[path] = hit
        return hit[0] == self.bits and (self.machine is None or hit[1] == self.machine)

    def _in_dir(self, d, soname):
        key = (d, soname)
        hit = self.exists.get(key)
        if hit is None:
            path = os.path.join(d, soname)
            hit = path if os.path.exists(path) and self._matches(path) else ""
            self.exists[key] = hit
        return hit or None

    def search_dirs(self, info, origin):
        def expand(spec):
            out = []
            for d in (spec or "").split(":"):
                if not d:
                    continue
                d = d.replace("$ORIGIN", origin).replace("${ORIGIN}", origin)
                d = d.replace("$LIB", "lib64" if self.bits == 64 else "lib")
                out.append(os.path.normpath(d))
            return out

        if info.get("runpath"):
            return [], self.env_dirs + expand(info["runpath"])
        return expand(info.get("rpath")), self.env_dirs

    def resolve(self, soname, info, origin):
        """(path, how) for a needed soname, or (None, None).

        ``how``: rpath, ld_library_path, runpath, cache or default, in the loader's order.
        """
        if "/" in soname:
            return (soname if os.path.exists(soname) else None), "path"
        first, then = self.search_dirs(info, origin)
        for d in first:
            hit = self._in_dir(d, soname)
            if hit:
                return hit, "rpath"
        for d in then:
            hit = self._in_dir(d, soname)
            if hit:
                return hit, "ld_library_path" if d in self.env_dirs else "runpath"
        if self.cache is None:
            self.cache = read_ld_cache()
            if self.cache is None:
                self.cache = ldconfig_p() if sys.platform.startswith("linux") else {}
        for path in self.cache.get(soname, ()):
            if self._matches(path):
                return path, "cache"
        for d in self.defaults:
            hit = self._in_dir(d, soname)
            if hit:
                return hit, "default"
        return None, None


def _under(path, roots):
    return any(path == r or path.startswith(r + os.sep) for r in roots)


def _classify(resolver, soname, info, origin, bundled, roots, prefixes, real_of):
    """(path, realpath, how, provider) for one needed soname; provider ``bundled`` = drop it.

    A library the consumer's own RPATH/RUNPATH finds inside site-packages (torch reaching the
    ``nvidia-*`` wheels through ``$ORIGIN/../../nvidia/*/lib``) is that wheel's, even where
    ``LD_LIBRARY_PATH`` on this machine points the loader at a system copy (a CUDA toolkit):
    the rebuilt environment has the wheel, not this machine's LD_LIBRARY_PATH.
    """
    if "/" not in soname and (info.get("rpath") or info.get("runpath")):
        first, then = resolver.search_dirs(info, origin)
        for d in first + then:
            if d not in resolver.env_dirs and _under(d, roots) and resolver._in_dir(d, soname):
                return os.path.join(d, soname), None, "runpath", "bundled"
    found, how = resolver.resolve(soname, info, origin)
    if found is None:
        if soname in bundled:
            return None, None, None, "bundled"  # preloaded by its package from a bundled copy
        return None, None, None, "missing"
    if _under(found, roots):
        return found, None, how, "bundled"  # shipped inside a wheel
    real = real_of.get(found)
    if real is None:
        real = real_of[found] = os.path.realpath(found)
    if _under(real, roots):
        return found, real, how, "bundled"
    return found, real, how, "python" if _under(real, prefixes) else "system"


def native_libraries(dists, sites, cache):
    """Needed sonames that neither the wheels nor the interpreter provide, and who needs them.

    Every extension module (and every library bundled next to them) is a consumer; a needed
    soname is dropped when it resolves inside a site-packages folder (auditwheel's ``.libs``,
    ``nvidia-*`` wheels reached through ``$ORIGIN``) or when a bundled file carries that name
    (packages that preload their own copy). What remains is resolved like ld.so would.
    """
    consumers = extension_files(dists, sites, cache)
    consumers.extend((p, PYTHON_USER, False) for p in python_own_files(sites))
    roots = set(sites)
    roots.update(os.path.realpath(s) for s in sites)
    roots = sorted(roots)
    bundled = set()
    parsed = []
    for path, owner, inside in consumers:
        try:
            st = os.stat(path)
        except OSError:
            continue
        info = cache.get("elf", path, st, read_elf)
        if not info:
            continue
        parsed.append((path, owner, info))
        if inside:
            bundled.add(os.path.basename(path))
            if info.get("soname"):
                bundled.add(info["soname"])
    exe = next((i for p, o, i in parsed if o == PYTHON_USER), None) or (
        parsed[0][2] if parsed else None
    )
    bits = exe["bits"] if exe else struct.calcsize("P") * 8
    machine = exe["machine"] if exe else None
    resolver = Resolver(bits, machine)
    libs = {}
    prefixes = [os.path.realpath(p) for p in {sys.prefix, sys.base_prefix}]
    prefixes = [p for p in prefixes if p not in ("/usr", "/")]
    real_of = {}
    memo = {}  # most modules share needs and search paths: resolve each combination once
    for path, owner, info in parsed:
        if info["bits"] != bits or (machine is not None and info["machine"] != machine):
            continue
        origin = os.path.dirname(path)
        spec = (info.get("rpath"), info.get("runpath"))
        keyed_origin = origin if "ORIGIN" in f"{spec[0]}{spec[1]}" else None
        for soname in info["needed"]:
            key = (soname, spec, keyed_origin)
            hit = memo.get(key)
            if hit is None:
                hit = memo[key] = _classify(
                    resolver, soname, info, origin, bundled, roots, prefixes, real_of
                )
            found, real, how, provider = hit
            if provider == "bundled":
                continue
            rec = libs.get(soname)
            if rec is None:
                rec = libs[soname] = {
                    "path": found,
                    "realpath": real,
                    "how": how,
                    "provider": provider,
                    "users": [],
                    "files": [],
                }
            elif real is not None and rec["realpath"] not in (None, real):
                warn(f"{soname} resolves to {real} for {path} but to {rec['realpath']} elsewhere")
            elif rec["realpath"] is None and real is not None:
                rec.update(path=found, realpath=real, how=how, provider=provider)
            if owner not in rec["users"]:
                rec["users"].append(owner)
            if len(rec["files"]) < 5:  # a few of the needing files, to explain a missing one
                rec["files"].append(path)
    for rec in libs.values():
        rec["users"].sort()
    return {
        "libraries": libs,
        "scanned": len(parsed),
        "cache_hits": cache.hits,
        "cache_misses": cache.misses,
    }


# --------------------------------------------------------------------------- installed files


#: Files whose content the capture may carry (to re-apply a post-install change): small text.
CARRY_CAP = 65536
#: At most this many changed files are listed per distribution (the count says the rest).
CHANGES_CAP = 200
#: A file is "touched after install" when its mtime is newer than its RECORD's (installers write
#: RECORD last; timestamps are kept to the nanosecond on the filesystems environments live on).
_MTIME_SLACK_NS = 0


def _record_fields(path):
    """[(path as written, hash field, size or None), ...] of the rows of one RECORD; none for a
    RECORD that cannot be read, or is not CSV (with a warning that names it)."""
    try:
        with _open_file(path) as f:
            data = f.read()
    except OSError:
        return []
    text = data.decode("utf-8", "surrogateescape")
    if '"' in text or "\r" in text or "\0" in text:
        # newline="": csv's own reading of "\r\n" and "\r" line ends, as it documents
        rows = csv.reader(io.StringIO(text, newline=""))
    else:  # no quoting, one line per row: exactly csv's rows, split ~2x faster
        rows = (line.split(",") for line in text.split("\n"))
    out = []
    try:
        for fields in rows:
            if not fields or not fields[0]:
                continue
            size = None
            if len(fields) > 2:
                digits = fields[2].strip()
                # ASCII digits only: str.isdigit() also admits '²', which int() refuses
                if digits.isascii() and digits.isdigit():
                    size = int(digits)
            out.append((fields[0], fields[1] if len(fields) > 1 else "", size))
    except csv.Error as exc:
        warn(f"{path} is not a CSV file ({exc}): its files were not checked")
        return []
    return out


def _sha256_hex(field):
    """The sha256 hex digest a RECORD hash field names, or None (another algorithm, or a value
    that is not base64)."""
    if not field.startswith("sha256="):
        return None
    b64 = field[7:]
    try:
        return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex() or None
    except (ValueError, TypeError):
        return None


#: The usual form of a RECORD's sha256 field: 32 bytes as unpadded URL-safe base64, which always
#: decodes; any other value is decoded to find out.
_SHA256_FIELD = re.compile(r"sha256=[A-Za-z0-9_-]{43}\Z")


def parse_record_rows(path):
    """[[path, size or None, sha256 hex or None], ...] of one RECORD (paths as written)."""
    return [[rel, size, _sha256_hex(field)] for rel, field, size in _record_fields(path)]


def record_sizes(path):
    """[[path, size or None, 1 when hashed else 0], ...]: what the probe cache keeps of a RECORD
    (the digests are read again only for a file that has to be hashed, so the usual field is
    not even decoded here: ~58,000 of them in a 250-package environment)."""
    match = _SHA256_FIELD.match
    return [
        [rel, size, 1 if match(field) or _sha256_hex(field) else 0]
        for rel, field, size in _record_fields(path)
    ]


def record_columns(path):
    """:func:`record_sizes` as three columns, [[paths], [sizes], [hashed flags]]: the form the
    probe cache keeps. As JSON, rows took ~13 ms to write and ~13 ms to read back on a
    120-package environment; columns ~9 ms and ~5 ms."""
    rows = record_sizes(path)
    return [[r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]]


def _record_rows(cache, record, st):
    """(path, size, hashed) of each row of ``record`` (stat ``st``), from the probe cache or
    read; a cached entry that is not three columns of one length is read again."""
    cols = cache.get("columns", record, st, record_columns)
    if not (
        isinstance(cols, list)
        and len(cols) == 3
        and all(isinstance(c, list) for c in cols)
        and len(cols[0]) == len(cols[1]) == len(cols[2])
    ):
        cols = record_columns(record)
        cache.put("columns", record, st, cols)
    return zip(*cols)


def _rows(cache, record):
    try:
        st = os.stat(record)
    except OSError:
        return []
    return _record_rows(cache, record, st)


def _sha256_file(path):
    # lazy: hashlib costs 2.5 ms to import, and only changed files are hashed
    import hashlib

    h = hashlib.sha256()
    try:
        with _open_file(path) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def _skip_rel(rel):
    parts = rel.split("/")
    return (
        "__pycache__" in parts or rel.endswith((".pyc", ".pyo")) or parts[0].endswith(".dist-info")
    )


def _changed_entry(full, rel, st, change):
    """One changed file: its path, size, sha256 and, when small UTF-8 text, its content."""
    entry = {"path": rel, "change": change, "size": st.st_size, "sha256": None}
    if st.st_size <= CARRY_CAP:
        try:
            with _open_file(full) as f:
                data = f.read(CARRY_CAP + 1)
        except OSError:
            return entry
        # lazy: hashlib costs 2.5 ms to import, and only changed files are hashed
        import hashlib

        entry["sha256"] = hashlib.sha256(data).hexdigest()
        if b"\0" not in data:
            try:
                entry["text"] = data.decode("utf-8")
            except UnicodeDecodeError:
                pass
    else:
        entry["sha256"] = _sha256_file(full)
    return entry


def installed_file_changes(dists, sites, cache, hash_all=False):
    """Files of each distribution changed after install, and files added in its package folders.

    Every file a RECORD lists (inside site-packages; bytecode and the metadata folder aside) is
    stat-ed: a missing file or a different size is a change. A file of the recorded size is
    hashed only when its mtime is newer than its RECORD's (installers write RECORD last, so a
    file touched later was changed after install), or for every file with ``hash_all``. Then each
    top-level package folder that a RECORD names is walked once: a file no RECORD lists (and not
    bytecode) was added. Returns {metadata_dir: {"changes": [...], "more": N}}.
    """
    out = {}
    claimed = {}  # real site -> set of paths listed by some RECORD
    dirs = {}  # (site, folder with installed files) -> (newest RECORD mtime there, its owner)
    site_fds = {}  # site -> descriptor of its folder, or None (the full path is stat-ed then)
    try:
        _check_records(dists, cache, hash_all, out, claimed, dirs, site_fds)
    finally:
        for fd in site_fds.values():
            if fd is not None:
                os.close(fd)
    _check_folders(dirs, claimed, hash_all, out)
    for rec in out.values():
        rec["changes"].sort(key=lambda c: (c["path"], c["change"]))
    return out


def _site_fd(site):
    """A descriptor of the folder ``site`` for :func:`os.stat`'s ``dir_fd``, or None where that
    is not to be had. A file is looked up from it by its path in the RECORD: the kernel walks
    two or three names instead of the ten or more of the full path (the stat loop of a
    120-package environment: 60 ms -> 50 ms). The names resolve exactly as the full path's
    would (the site's own path is resolved once, when it is opened)."""
    if os.stat not in os.supports_dir_fd:
        return None
    try:
        return os.open(site, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    except (OSError, AttributeError):
        return None


def _check_records(dists, cache, hash_all, out, claimed, dirs, site_fds):
    """The first half of :func:`installed_file_changes`: every file each RECORD lists."""
    for d in dists:
        if d.get("format") != "dist-info" or not d.get("has_record"):
            continue
        site = d["site"]
        real_site = os.path.realpath(site)
        record = os.path.join(d["metadata_dir"], "RECORD")
        if (d.get("installer") or "").lower() == "conda":
            # conda rewrites its install prefix into files after the RECORD was made: those are
            # checked through conda-meta, not here; their files are not "added" either
            claimed.setdefault(real_site, set()).update(
                os.path.normpath(r[0]).replace(os.sep, "/") for r in _rows(cache, record)
            )
            continue
        try:
            rst = os.stat(record)
        except OSError:
            continue
        rows = _record_rows(cache, record, rst)
        digests = None  # read from the RECORD only when a file has to be hashed
        seen = claimed.setdefault(real_site, set())
        dirs_done = set()
        changes = []
        more = 0
        newer_than = rst.st_mtime_ns + _MTIME_SLACK_NS
        prefix = site.rstrip("/") + "/"
        if site not in site_fds:
            site_fds[site] = _site_fd(site)
        site_fd = site_fds[site]
        for rel, size, hashed in rows:
            if rel[:1] in ("/", ".") and (rel[:1] == "/" or rel.startswith("..")):
                continue
            listed = rel
            if "./" in rel or "//" in rel or "\\" in rel:
                rel = os.path.normpath(rel).replace(os.sep, "/")
            seen.add(rel)
            top, sep, _rest = rel.partition("/")
            if sep and not top.endswith((".dist-info", ".data")):
                parent = rel.rpartition("/")[0]
                while parent and parent not in dirs_done:
                    dirs_done.add(parent)
                    key = (site, parent)
                    if dirs.get(key, (0, None))[0] < rst.st_mtime_ns:
                        dirs[key] = (rst.st_mtime_ns, d["metadata_dir"])
                    parent = parent.rpartition("/")[0]
            if (
                not hashed
                or rel.endswith((".pyc", ".pyo"))
                or "__pycache__" in rel
                or top.endswith(".dist-info")
            ):
                continue
            try:
                st = os.stat(prefix + rel) if site_fd is None else os.stat(rel, dir_fd=site_fd)
            except OSError:
                change = {"path": rel, "change": "missing", "size": None, "sha256": None}
                if len(changes) < CHANGES_CAP:
                    changes.append(change)
                else:
                    more += 1
                continue
            if size is not None and st.st_size != size:
                differs = True
            elif hash_all or st.st_mtime_ns > newer_than:
                if digests is None:
                    digests = {r[0]: r[2] for r in parse_record_rows(record)}
                differs = _sha256_file(prefix + rel) != digests.get(listed)
            else:
                differs = False
            if differs:
                if len(changes) < CHANGES_CAP:
                    changes.append(_changed_entry(prefix + rel, rel, st, "modified"))
                else:
                    more += 1
        if changes or more:
            out[d["metadata_dir"]] = {"changes": changes, "more": more}


def _check_folders(dirs, claimed, hash_all, out):
    """The second half of :func:`installed_file_changes`: files added to the package folders."""
    # Adding (or removing) a file changes its folder's mtime: a folder no newer than the RECORDs
    # installing into it holds exactly what was installed, and is not listed. A changed folder is
    # listed; a subfolder no RECORD names is new, and walked whole.
    real_sites = {}
    for (site_dir, rel_dir), (mtime, owner) in sorted(dirs.items()):
        if site_dir not in real_sites:
            real_sites[site_dir] = os.path.realpath(site_dir)
        seen = claimed.get(real_sites[site_dir], set())
        full_dir = f"{site_dir}/{rel_dir}"
        if not hash_all:
            try:
                if os.stat(full_dir).st_mtime_ns <= mtime + _MTIME_SLACK_NS:
                    continue
            except OSError:
                continue
        stack = [(rel_dir, False)]
        while stack:
            current, new = stack.pop()
            try:
                it = os.scandir(os.path.join(site_dir, current))
            except OSError:
                continue
            with it:
                for e in it:
                    rel = f"{current}/{e.name}"
                    try:
                        if e.is_dir(follow_symlinks=False):
                            if e.name != "__pycache__" and (new or (site_dir, rel) not in dirs):
                                stack.append((rel, True))
                            continue
                    except OSError:
                        continue
                    if rel in seen or _skip_rel(rel):
                        continue
                    rec = out.setdefault(owner, {"changes": [], "more": 0})
                    if len(rec["changes"]) >= CHANGES_CAP:
                        rec["more"] += 1
                        continue
                    try:
                        st = os.stat(e.path)
                    except OSError:
                        continue
                    rec["changes"].append(_changed_entry(e.path, rel, st, "added"))


# --------------------------------------------------------------------------- OS & files


def os_release(paths=("/etc/os-release", "/usr/lib/os-release")):
    """Fields of the first os-release file found (shell-style KEY=value, quotes removed)."""
    fields = {}
    for path in paths:
        text = _read_small(path)
        if text is None:
            continue
        for line in text.splitlines():
            key, sep, value = line.strip().partition("=")
            if not sep or key.startswith("#"):
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
                value = re.sub(r"\\([\\$\"'`])", r"\1", value)
            fields[key] = value
        break
    return fields


def os_info():
    uname = os.uname() if hasattr(os, "uname") else None
    rel = os_release()
    wanted = (
        "ID",
        "VERSION_ID",
        "VERSION_CODENAME",
        "PRETTY_NAME",
        "ID_LIKE",
        "NAME",
        "UBUNTU_CODENAME",
    )
    return {
        "release": {k: rel[k] for k in wanted if k in rel},
        "system": uname.sysname if uname else sys.platform,
        "kernel": uname.release if uname else None,
        "machine": uname.machine if uname else None,
        "glibc": _glibc_version(),
    }


def version_files(dists):
    out = {}
    sites = []
    for d in dists:
        if d["site"] not in sites:
            sites.append(d["site"])
    for rel in VERSION_FILES:
        for folder in sites:
            text = _read_small(os.path.join(folder, rel), VERSION_FILE_CAP)
            if text is not None:
                out[rel] = text
                break
    return out


# --------------------------------------------------------------------------- ctypes names

_CTYPES_NEEDLES = (b"find_library", b"CDLL", b"LoadLibrary", b"PyDLL")
_FIND_LIBRARY = re.compile(rb"""find_library\(\s*['"]([A-Za-z0-9_.+-]{1,64})['"]\s*\)""")
_CDLL = re.compile(
    rb"""(?:CDLL|PyDLL|LoadLibrary)\(\s*['"](lib[A-Za-z0-9_.+-]{1,64}"""
    rb"""\.so(?:\.[0-9]+)*)['"]"""
)
_TEST_PARTS = (b"/tests/", b"/test/", b"/testing/")


def scan_ctypes(record_path, site):
    """Library names one distribution's sources hand to ctypes, sorted: ``find_library('x')``
    gives ``x``, ``CDLL('libx.so.N')`` gives ``libx.so.N``.

    Cheap on purpose (it runs on every capture that misses the cache): only a pure-Python
    distribution is read (one with compiled extensions links its native libraries through
    NEEDED entries, which the ELF scan follows), only the ``.py`` files its RECORD lists, test
    modules left out, and a byte search for ``ctypes`` and a loader name comes before the two
    patterns.
    """
    try:
        with _open_file(record_path) as f:
            record = f.read()
    except OSError:
        return []
    if b".py," not in record or b".so," in record or b".so." in record:
        return []
    found = set()
    base = os.fsencode(site)
    buf = _source_buffer()
    for line in record.split(b"\n"):
        rel = line.split(b",", 1)[0]
        if not rel.endswith(b".py") or rel.startswith(b"/") or b".." in rel.split(b"/"):
            continue  # only files inside the site folder
        if any(t in b"/" + rel for t in _TEST_PARTS) or rel.rsplit(b"/", 1)[-1].startswith(
            b"test_"
        ):
            continue
        try:
            fd = _open_fd(os.path.join(base, rel))
        except OSError:
            continue
        try:
            size = _read_into(fd, buf)
        except OSError:
            continue
        finally:
            os.close(fd)
        if buf.find(b"ctypes", 0, size) < 0 or all(
            buf.find(n, 0, size) < 0 for n in _CTYPES_NEEDLES
        ):
            continue
        for m in _FIND_LIBRARY.finditer(buf, 0, size):
            found.add(m.group(1).decode())
        for m in _CDLL.finditer(buf, 0, size):
            found.add(m.group(1).decode())
    return sorted(found)


#: The most of one source file :func:`scan_ctypes` reads.
_SCAN_LIMIT = 1 << 22
_scan_buffer: "list[bytearray]" = []  # one buffer, made on first use, for every file the scan reads


def _source_buffer():
    if not _scan_buffer:
        _scan_buffer.append(bytearray(_SCAN_LIMIT))
    return _scan_buffer[0]


def _read_into(fd, buf):
    """Read up to ``len(buf)`` bytes of ``fd`` into ``buf``; their count. Reading into one
    buffer, not a new bytes object per file: a 250-package environment's scan reads ~17,000
    files (~200 MB), and a new 4 MiB object for each took a third more time (half of it in
    the kernel, mapping and unmapping it)."""
    readv = getattr(os, "readv", None)
    if readv is not None:
        return readv(fd, [buf])
    data = os.read(fd, len(buf))
    buf[: len(data)] = data
    return len(data)


class CtypesScan:
    """:func:`scan_ctypes` of every distribution, beside the rest of the probe's work; with
    ``native_sites``, :func:`native_libraries` too, by whichever process is free first.

    Answers come from the probe cache by RECORD (installed files do not change without their
    RECORD being rewritten); the others are read by a forked child process while this one goes
    on with the installed-file check, so the two use both of a machine's cores. The ELF scan
    of the extension modules (``native_sites``) goes to the process that finishes its own part
    first: the child after its ctypes scan (then it sends back what it found, its cache entries
    and its warnings), or this one after the file check (a torch environment's ctypes scan is
    the longer). Where there is no ``fork`` (or it fails, or the child's answer is unreadable),
    everything is read here. :meth:`result` returns {metadata_dir: [names]} for the
    distributions naming any; :meth:`native` what :func:`native_libraries` returns (None
    without ``native_sites``).
    """

    def __init__(self, dists, cache, native_sites=None):
        self.cache = cache
        self.dists = dists
        self.native_sites = native_sites
        self.found = {}
        self.todo = []  # (metadata_dir, RECORD path, site, stat of the RECORD)
        self.child = None
        self.token = None  # a pipe holding one byte: who reads it does the ELF scan
        self.answers = None  # the child's, once read
        self.native_answer = None
        self.warn_at = 0
        self.counts_at = (0, 0)
        for d in dists:
            if not d.get("has_record"):
                continue
            record = os.path.join(d["metadata_dir"], "RECORD")
            try:
                st = os.stat(record)
            except OSError:
                continue
            hit, names = cache.lookup("ctypes", record, st)
            if hit:
                self.found[d["metadata_dir"]] = names
            else:
                self.todo.append((d["metadata_dir"], record, d.get("site") or "", st))

    def _claim_native(self):
        """True for the one process that takes the ELF scan (the byte is read only once)."""
        if self.token is None:
            return True
        try:
            return os.read(self.token, 1) == b"N"
        except OSError:
            return False

    def start(self):
        self.warn_at = len(_warnings)
        self.counts_at = (self.cache.hits, self.cache.misses)
        if not self.todo or not hasattr(os, "fork"):
            return self
        try:
            r, w = os.pipe()
        except OSError:
            return self
        if self.native_sites is not None:
            try:
                tr, tw = os.pipe()
                os.write(tw, b"N")
                os.close(tw)  # then a read gets the byte once, and end-of-file after
                self.token = tr
            except OSError:
                self.token = None
        hits, misses = self.cache.hits, self.cache.misses
        try:
            pid = os.fork()
        except OSError:
            os.close(r)
            os.close(w)
            if self.token is not None:
                os.close(self.token)
                self.token = None
            return self
        if pid == 0:  # the child: answer through the pipe, nothing else (no stdout, no cache)
            try:
                os.close(r)
                # off the probe's stdout and stderr: whoever reads them waits for every holder
                devnull = os.open(os.devnull, os.O_RDWR)
                for std in (0, 1, 2):
                    os.dup2(devnull, std)
                answer = {
                    "ctypes": {rec: scan_ctypes(rec, folder) for _m, rec, folder, _st in self.todo}
                }
                if self.token is not None and self._claim_native():
                    answer["native"] = native_libraries(self.dists, self.native_sites, self.cache)
                    answer["elf"] = self.cache.new["elf"]
                    answer["record"] = self.cache.new["record"]
                    answer["hits"] = self.cache.hits - hits
                    answer["misses"] = self.cache.misses - misses
                    answer["warnings"] = _warnings[self.warn_at :]
                data = json.dumps(answer)
                view = memoryview(data.encode("utf-8", "surrogateescape"))
                while view:
                    view = view[os.write(w, view) :]
            finally:
                os._exit(0)
        os.close(w)
        self.child = (pid, r)
        return self

    def _collect(self):
        """The child's answer (once), with its native part taken in: cache entries, counts,
        warnings (where they would have been, had this process found them)."""
        if self.answers is not None:
            return self.answers
        answers = {}
        if self.child is not None:
            pid, r = self.child
            self.child = None
            chunks = []
            try:
                while True:
                    chunk = os.read(r, 1 << 16)
                    if not chunk:
                        break
                    chunks.append(chunk)
            finally:
                os.close(r)
                os.waitpid(pid, 0)
            try:
                answers = json.loads(b"".join(chunks).decode("utf-8", "surrogateescape"))
            except ValueError:
                answers = {}
            if not isinstance(answers, dict):
                answers = {}
        native = answers.get("native")
        parts = [answers.get(k) for k in ("elf", "record", "hits", "misses", "warnings")]
        if (
            self.native_answer is None
            and isinstance(native, dict)
            and all(isinstance(p, dict) for p in parts[:2])
            and all(isinstance(p, int) for p in parts[2:4])
            and isinstance(parts[4], list)
            and all(isinstance(m, str) for m in parts[4])
        ):
            self.native_answer = native
            self.cache.new["elf"].update(parts[0])
            self.cache.new["record"].update(parts[1])
            self.cache.hits += parts[2]
            self.cache.misses += parts[3]
            _warnings[self.warn_at : self.warn_at] = parts[4]
        ctypes = answers.get("ctypes")
        self.answers = ctypes if isinstance(ctypes, dict) else {}
        return self.answers

    def result(self):
        answers = self._collect()
        for meta, record, folder, st in self.todo:
            names = answers.get(record)
            if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                names = scan_ctypes(record, folder)  # the child could not say: read here
            self.cache.put("ctypes", record, st, names)
            self.found[meta] = names
        self.todo = []
        return {meta: names for meta, names in self.found.items() if names}

    def native(self):
        """Call before :meth:`result`: this process takes the ELF scan if the child has not."""
        if self.native_sites is None:
            return None
        if self.native_answer is None and self.answers is None and self._claim_native():
            self._native_here()
        self._collect()
        if self.native_answer is None:  # the child took it but could not say: read here
            self._native_here()
        if self.token is not None:
            os.close(self.token)
            self.token = None
        return self.native_answer

    def _native_here(self):
        said = len(_warnings)
        hits, misses = self.cache.hits, self.cache.misses
        self.native_answer = native_libraries(self.dists, self.native_sites, self.cache)
        # its cache counts as the child would give them: its own, on top of those at the start
        self.native_answer["cache_hits"] = self.counts_at[0] + self.cache.hits - hits
        self.native_answer["cache_misses"] = self.counts_at[1] + self.cache.misses - misses
        # its warnings go where they would have been, had it run before the file check
        new = _warnings[said:]
        del _warnings[said:]
        _warnings[self.warn_at : self.warn_at] = new


# --------------------------------------------------------------------------- main


def main(argv):
    # The probe keeps what it reads until it answers and makes almost no cyclic garbage: at
    # Python's default threshold (700) the collector ran ~54 times per probe (5-9 ms on a
    # 120-package environment) to free a dozen objects.
    gc.set_threshold(100000, *gc.get_threshold()[1:])
    cache_path = None
    want_user_site = False
    skip_native = False
    check_files = True
    hash_all = False
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--cache" and args:
            cache_path = args.pop(0)
        elif a == "--user-site":
            want_user_site = True
        elif a == "--no-native":
            skip_native = True
        elif a == "--no-files":
            check_files = False
        elif a == "--hash-all":
            hash_all = True
        else:
            sys.stderr.write(f"probe: unknown argument {a!r}\n")
            return 2
    user_site = user_site_dir(want_user_site)
    sites = site_dirs(user_site)
    dists, shadowed = find_distributions(sites)
    cache = ProbeCache(cache_path)
    native_sites = sites if not skip_native and sys.platform.startswith("linux") else None
    ctypes_scan = CtypesScan(dists, cache, native_sites).start()
    if check_files:
        changed = installed_file_changes(dists, sites, cache, hash_all)
        for d in dists:
            rec = changed.get(d["metadata_dir"])
            if rec:
                d["installed_changes"] = rec["changes"]
                if rec["more"]:
                    d["installed_changes_more"] = rec["more"]
    native = ctypes_scan.native()
    ctypes = ctypes_scan.result()
    cache.save()
    out = {
        "probe_version": PROBE_VERSION,
        "interpreter": interpreter_info(),
        "sys_path": [p for p in sys.path if p],
        "site_dirs": sites,
        "user_site": user_site,
        "distributions": dists,
        "shadowed": shadowed,
        "native": native,
        "os": os_info(),
        "files": version_files(dists),
        "ctypes": ctypes,
        "warnings": _warnings,
    }
    sys.stdout.write(json.dumps(out))
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0


def _leave(status):
    """Exit with ``status`` once the answer is out, without the interpreter's teardown: freeing
    every object the probe read (~22,000 RECORD rows on a 120-package environment) took ~8 ms
    that the capture waited for. Nothing is left to do: the cache is written, the child waited
    for. A stream that cannot be flushed takes the usual way out, which reports it."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(status)
    os._exit(status)


if __name__ == "__main__":
    _leave(main(sys.argv[1:]))
