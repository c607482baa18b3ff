"""Pallet: a container engine and OCI runtime in Python (see DESIGN.md in the shared notes)."""

__version__ = "0.1.0"
