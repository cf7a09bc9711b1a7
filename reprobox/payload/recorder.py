"""What a run really used, recorded from inside the run (standard library only).

``reprobox record`` copies this file as ``sitecustomize.py`` into a private folder put first on
``PYTHONPATH``; the interpreter imports it at start-up. It:

* adds an audit hook (PEP 578) that notes ``import`` events (module names) and
  ``ctypes.dlopen`` events (the names given to ``CDLL``/``LoadLibrary``, loaded or not);
* at exit (``atexit``), reads the shared objects mapped into the process (``/proc/self/maps``),
  the files of the modules in ``sys.modules`` and the peak resident memory (``VmHWM``), and
  writes one JSON file per process into the folder named by ``REPROBOX_RECORD_DIR``.

It must not change what the program does: it removes its folder from ``sys.path`` and then
imports the ``sitecustomize`` the interpreter would have imported without it (a site's or a
venv's own), so that one still runs. ``PYTHONPATH`` keeps the folder, so Python child
processes (``subprocess``, ``multiprocessing`` spawn) are recorded too. A forked child that
leaves through ``os._exit`` (multiprocessing's fork and forkserver workers, PyTorch's
DataLoader workers) runs no ``atexit``: after a fork the child's ``os._exit`` writes its report
first, when the child imported or dlopened anything since the fork (what it inherited is its
parent's, which reports it), so a child that loads nothing new costs nothing. A process ended
by a signal (the workers of a ``multiprocessing.Pool`` that ``terminate()``, which its ``with``
block calls, ends) writes nothing. Failures here are swallowed: recording must never break the
run.
"""

import os
import sys

_OUT = os.environ.get("REPROBOX_RECORD_DIR")
_HERE = os.path.dirname(os.path.abspath(__file__))
try:
    _CWD = os.getcwd()
except OSError:
    _CWD = "/"
# sys.argv is set before site runs; the program may rewrite it later
_SCRIPT = sys.argv[0] if getattr(sys, "argv", None) else ""
_imports: set = set()
_dlopen: list = []


def _hook(event, args):
    # Called for every audit event of the process: keep the common path to two comparisons.
    if event == "import":
        _imports.add(args[0])
    elif event == "ctypes.dlopen":
        name = args[0]
        if name is not None and len(_dlopen) < 10000:
            _dlopen.append(name if isinstance(name, str) else os.fsdecode(name))


def mapped_objects(maps_path="/proc/self/maps"):
    """Paths of the shared objects mapped into this process (file-backed, ``.so`` in the name)."""
    out = set()
    try:
        with open(maps_path, "rb") as f:
            data = f.read()
    except OSError:
        return []
    for line in data.split(b"\n"):
        i = line.find(b" /")
        if i < 0 or b".so" not in line:
            continue
        path = line[i + 1 :].strip()
        if path.endswith(b" (deleted)"):
            continue
        name = path.rsplit(b"/", 1)[-1]
        if name.endswith(b".so") or b".so." in name:
            out.add(os.fsdecode(path))
    return sorted(out)


def peak_kib(status_path="/proc/self/status"):
    try:
        with open(status_path, "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def module_files():
    """name -> file of every module loaded from a file (stdlib and packages alike).

    The interpreter removes ``__file__`` from ``__main__`` once a script has run, so the script
    is taken from ``sys.argv[0]``, made absolute against the directory the process started in.
    """
    out = {}
    for name, mod in list(sys.modules.items()):
        try:
            f = getattr(mod, "__file__", None)
        except Exception:  # noqa: BLE001 - a lazy module whose attribute access fails
            continue
        if isinstance(f, str) and f:
            out[name] = f if os.path.isabs(f) else os.path.join(_CWD, f)
    script = _SCRIPT
    if "__main__" not in out and script and script not in ("-c", "-m", "-"):
        full = os.path.join(_CWD, script)
        if os.path.isfile(full):
            out["__main__"] = full
    return out


def _write():
    if not _OUT:
        return
    try:
        # lazy: inside the user's program, import nothing at start it did not ask for
        import json

        doc = {
            "version": 1,
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "executable": sys.executable,
            "prefix": sys.prefix,
            "argv": [str(a) for a in sys.argv[:1]],
            "imports": sorted(_imports),
            "modules": module_files(),
            "dlopen": _dlopen,
            "maps": mapped_objects(),
            "peak_kib": peak_kib(),
        }
        path = os.path.join(_OUT, "run-%d.json" % os.getpid())
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
            json.dump(doc, f)
        os.replace(tmp, path)
    except Exception:  # noqa: BLE001 - never break the program at exit
        pass


def _after_fork_in_child():
    """Give the child an ``os._exit`` that reports what it loaded since the fork, first."""
    real = getattr(os._exit, "__wrapped_exit__", os._exit)
    loaded_at_fork = (len(_imports), len(_dlopen))

    def _exit(*args, **kwargs):
        if (len(_imports), len(_dlopen)) != loaded_at_fork:
            _write()
        real(*args, **kwargs)

    _exit.__wrapped_exit__ = real
    os._exit = _exit


def _chain():
    """Import the sitecustomize the interpreter would have found without this one."""
    me = sys.modules.get("sitecustomize")
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
    sys.modules.pop("sitecustomize", None)
    try:
        # lazy: imported only when chaining, for the same reason as json above
        import importlib

        importlib.import_module("sitecustomize")
    except ImportError as exc:
        if getattr(exc, "name", None) != "sitecustomize":
            raise
        if me is not None:
            sys.modules["sitecustomize"] = me


def _install():
    if _OUT and hasattr(sys, "addaudithook"):
        sys.addaudithook(_hook)
        # lazy: only when recording, for the same reason as json above
        import atexit

        atexit.register(_write)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)


_install()
_chain()
