"""Device inventory: find the display and the EnergyHub units, notice what does not belong.

Pure parts (settings, lease parsing, sanitising, classification, the registry and the event
stream) live here; the kernel adapters are ``energyhubd.kernel.neighbours`` (netlink) and
``energyhubd.kernel.filewatch`` (inotify).
"""

from energyhubd.config.sections.inventory import InventorySettings, parse_inventory_section

from .classify import ROLE_DISPLAY, ROLE_UNIT, ROLE_UNKNOWN, Classification, classify
from .events import Event, EventStream
from .leases import Lease, LeaseSnapshot, parse_leases, read_lease_file
from .neighbour import NeighbourUpdate
from .registry import DeviceRegistry
from .sanitize import safe_text

__all__ = [
    "ROLE_DISPLAY",
    "ROLE_UNIT",
    "ROLE_UNKNOWN",
    "Classification",
    "DeviceRegistry",
    "Event",
    "EventStream",
    "InventorySettings",
    "Lease",
    "LeaseSnapshot",
    "NeighbourUpdate",
    "classify",
    "parse_inventory_section",
    "parse_leases",
    "read_lease_file",
    "safe_text",
]
