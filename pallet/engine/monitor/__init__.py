"""The per-container monitor (conmon's role); see main.py."""
