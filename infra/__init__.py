"""Local stack, service supervision and the end-to-end demo (no Docker needed)."""
