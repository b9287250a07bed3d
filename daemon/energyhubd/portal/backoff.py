"""The portal link's reconnect delays: the package-wide helper (``energyhubd.backoff``)."""

from energyhubd.backoff import Backoff

__all__ = ["Backoff"]
