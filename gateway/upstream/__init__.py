"""Connections to upstream endpoints: per-endpoint pools."""
