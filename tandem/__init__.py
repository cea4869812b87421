"""Tandem: a cloud-device collaborative sequential recommender (CLI and settings live here)."""

__version__ = "0.1.0"
