"""The pyroute2 names the daemon uses, imported without the rest of pyroute2.

``import pyroute2`` runs a package ``__init__`` that loads NDB, IPDB, sqlite3 and every
netlink family the library supports; ``energyhubd.lean`` registers the package without it, so
only these submodules (and what they import) are loaded. Both pyroute2 0.7.9 (OpenWrt feed)
and 0.9.x keep ``IPRoute`` in ``pyroute2.iproute.linux``.
"""

from __future__ import annotations

from energyhubd import lean

lean.install()

from pyroute2.iproute.linux import IPRoute  # noqa: E402
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402
from pyroute2.netlink.rtnl.ndmsg import ndmsg  # noqa: E402

__all__ = ["IPRoute", "NetlinkError", "ndmsg"]
