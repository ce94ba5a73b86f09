"""Real-time wearable capture of dexterous-manipulation demonstrations."""

__version__ = "0.1.0"
