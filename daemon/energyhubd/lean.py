"""Load only the parts of the libraries the daemon uses (memory and start-up on the router).

Two library habits cost a router several MiB of RSS and tens of ms of start-up for code the
daemon never runs:

- ``pyroute2/__init__.py`` imports every public class of the library: NDB (with sqlite3),
  IPDB, the netns helpers, the wireless, ipset, ipvs and devlink sockets. The daemon uses
  ``IPRoute``, ``NetlinkError`` and ``ndmsg``. ``bare_package("pyroute2")`` registers the
  package *without* running its ``__init__``, so ``import pyroute2.iproute.linux`` loads that
  submodule and what it imports, nothing else (about 6 MiB less on 0.9.7, 7 MiB on 0.7.9).
  Anything that still asks the package for a public name (``from pyroute2 import IPRoute``,
  e.g. a test) gets it: the first such lookup runs the real ``__init__`` after all.
- paho-mqtt imports ``urllib.request`` (and through it ``http.client`` and ``email``) only to
  read proxy settings, and reads them only when PySocks is installed. pyroute2 0.7.9's
  ``lab`` module imports ``unittest.mock`` (and through it ``asyncio``) for its test mode.
  ``lazy_module`` puts a stand-in there that loads the real module on first attribute
  access, so a process that never uses it never pays for it.

Both are done once, before the libraries are imported (``install()``); importing a module
that is already loaded is left alone. Not thread-safe: call at start-up, before threads.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

# Loaded on first use only; see the module docstring for who imports them and why unused.
LAZY_STDLIB = ("urllib.request", "unittest.mock")


def bare_package(name: str) -> ModuleType:
    """Register package ``name`` with its ``__path__`` but without executing its ``__init__``."""
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not an installed package")
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def __getattr__(attr: str) -> object:
        # ``from pkg import sub`` asks the package first: a submodule is imported on its own.
        if importlib.util.find_spec(f"{name}.{attr}") is not None:
            return importlib.import_module(f"{name}.{attr}")
        # A public name of the package itself: now run the real __init__, once.
        del module.__dict__["__getattr__"]
        loader.exec_module(module)
        return getattr(module, attr)

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[name] = module
    return module


class _Deferred(ModuleType):
    """Stands in for a module until its first attribute is read, then becomes it.

    Not ``importlib.util.LazyLoader``: on Python 3.11 the import system itself reads
    ``__spec__`` of a module it finds in ``sys.modules``, which makes a LazyLoader module load
    at the very ``import`` it was meant to defer.
    """

    def __getattr__(self, attr: str) -> object:
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        real = importlib.import_module(name)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def lazy_module(name: str) -> None:
    """Stand in for ``name`` until something reads an attribute of it."""
    if name in sys.modules:
        return
    parent_name, _, child = name.rpartition(".")
    parent = importlib.import_module(parent_name) if parent_name else None
    spec = importlib.util.find_spec(name)
    if spec is None:
        return
    module = _Deferred(name)
    module.__spec__ = spec
    module.__file__ = spec.origin
    sys.modules[name] = module
    if parent is not None:
        # ``import a.b`` then ``a.b.x`` reads the attribute of the parent package.
        setattr(parent, child, module)


def install() -> None:
    """Before the daemon imports its libraries: lean pyroute2, lazy unused stdlib modules."""
    for name in LAZY_STDLIB:
        lazy_module(name)
    bare_package("pyroute2")
