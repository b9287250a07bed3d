"""Typed sections of the configuration owned by one subsystem each (portal, outbound, inventory).

Each module holds the section's frozen dataclass (defaults are the production values) and its
option table, read through the one :class:`energyhubd.config.check.Checker`. They live under
``config/`` so that the model is complete without importing the subsystems that use it.
"""
