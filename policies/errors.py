"""Errors raised by the pure policies.

    PolicyError        root of every error a policy raises

A policy's own errors subclass ``PolicyError`` and, where they resemble a builtin,
that builtin too (``SomethingInvalid(PolicyError, ValueError)``).
"""

from __future__ import annotations


class PolicyError(Exception):
    """Root of the policies' errors."""
