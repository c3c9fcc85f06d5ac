"""Errors raised by the pure policies.

    PolicyError                          root of every error a policy raises
    ├── EmptySplit(ValueError)           a traffic split with no cluster of positive weight
    └── UnknownCondition(ValueError)     a ``retry_on`` condition the retry policy lacks

A policy's own errors subclass ``PolicyError`` and, where they resemble a builtin,
that builtin too (``SomethingInvalid(PolicyError, ValueError)``).
"""

from __future__ import annotations


class PolicyError(Exception):
    """Root of the policies' errors."""
