"""relay: privacy-preserving infrastructure telemetry relay."""

__version__ = "0.1.0"
