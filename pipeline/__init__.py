"""Lockstep: find networks that push the same narratives in sync."""

__version__ = "0.1.0"
