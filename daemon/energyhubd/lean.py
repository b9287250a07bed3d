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
- pyroute2 0.9's ``iprsocket`` builds a ``unittest.mock.Mock()`` in a class body, at
  import: the message sink of its synchronous ``IPRSocket``, which the daemon never opens.
  That one call would load ``unittest.mock`` (0.4 MiB of RSS). ``LATE_OBJECTS`` names such
  constructors: the stand-in module hands out an object that builds the real one on its
  first use, so only a process that uses it loads the module.

Both are done once, before the libraries are imported (``install()``); importing a module
that is already loaded is left alone. Not thread-safe: call at start-up, before threads.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

# Loaded on first use only; see the module docstring for who imports them and why unused.
LAZY_STDLIB = ("urllib.request", "unittest.mock")
# (module, name): objects a library builds at import time but the daemon never uses.
LATE_OBJECTS = frozenset({("unittest.mock", "Mock")})


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
        if (self.__name__, attr) in LATE_OBJECTS:
            return functools.partial(_LateObject.of, self, attr)
        return getattr(self.load(), attr)

    def load(self) -> ModuleType:
        """Import the real module (once) and take over its names."""
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        real = importlib.import_module(name)
        # Submodules loaded through the stand-in are attributes of it, not of the real
        # package (its __init__ did not import them): hand them over.
        for attr, value in self.__dict__.items():
            if isinstance(value, ModuleType) and sys.modules.get(f"{name}.{attr}") is value:
                real.__dict__.setdefault(attr, value)
        self.__dict__.update(real.__dict__)
        return real


class _LateObject:
    """What ``module.attr(*args, **kwargs)`` returns, built on first use (attribute read or
    write, or a call) instead of at the call; see ``LATE_OBJECTS``."""

    __slots__ = ("_build", "_real")

    def __init__(self, build: Callable[[], Any]) -> None:
        object.__setattr__(self, "_build", build)
        object.__setattr__(self, "_real", None)

    @classmethod
    def of(cls, module: _Deferred, attr: str, *args: Any, **kwargs: Any) -> _LateObject:
        return cls(lambda: getattr(module.load(), attr)(*args, **kwargs))

    def _get(self) -> Any:
        real = object.__getattribute__(self, "_real")
        if real is None:
            real = object.__getattribute__(self, "_build")()
            object.__setattr__(self, "_real", real)
        return real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._get(), name, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._get()(*args, **kwargs)


def lazy_module(name: str) -> None:
    """Stand in for ``name`` until something reads an attribute of it.

    A parent package that is not loaded yet gets a stand-in too (``unittest`` for
    ``unittest.mock``: its ``__init__`` alone loads the test runner, ``difflib`` and ``pprint``,
    0.8 MiB); its ``__path__`` is set, so its submodules load without running it.
    """
    if name in sys.modules:
        return
    parent_name, _, child = name.rpartition(".")
    if parent_name:
        lazy_module(parent_name)
    parent = sys.modules.get(parent_name) if parent_name else None
    spec = importlib.util.find_spec(name)
    if spec is None:
        return
    module = _Deferred(name)
    module.__spec__ = spec
    module.__file__ = spec.origin
    if spec.submodule_search_locations is not None:
        module.__path__ = list(spec.submodule_search_locations)
        module.__package__ = name
    sys.modules[name] = module
    if parent is not None:
        # ``import a.b`` then ``a.b.x`` reads the attribute of the parent package.
        setattr(parent, child, module)


def install() -> None:
    """Before the daemon imports its libraries: lean pyroute2, lazy unused stdlib modules."""
    for name in LAZY_STDLIB:
        lazy_module(name)
    bare_package("pyroute2")
