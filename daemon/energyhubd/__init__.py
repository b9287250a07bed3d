"""energyhubd: management daemon of the internal router in a Ferroamp EnergyHub installation."""

__version__ = "0.1.0"
