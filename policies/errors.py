"""Errors raised by the pure policies.

    PolicyError                          root of every error a policy raises
    ├── EmptySplit(ValueError)           a traffic split with no cluster of positive weight
    ├── UnknownCondition(ValueError)     a ``retry_on`` condition the retry policy lacks
    ├── InvalidSetting(ValueError)       one field of a policy's config out of range; names
    │                                    the field (``policies.settings``)
    └── ImpossibleTransition(RuntimeError)  a state machine was fed an input its table has
                                         no row for: a bug in the caller or the policy

A policy's own errors subclass ``PolicyError`` and, where they resemble a builtin,
that builtin too (``SomethingInvalid(PolicyError, ValueError)``). The balancers' errors
(``HostError``, ``BalancerConfigError``) are drawn in ``policies.balancing``.
"""

from __future__ import annotations

from typing import Any


class PolicyError(Exception):
    """Root of the policies' errors."""


class InvalidSetting(PolicyError, ValueError):
    """A config field out of range: ``field`` names it, ``reason`` says what is wrong.

    ``str()`` reads ``"window must be > 0, not 0"``; a config loader that knows the
    path of the config object reports ``f"{path}.{error.field}: {error.reason}"``.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field} {reason}")


class ImpossibleTransition(PolicyError, RuntimeError):
    """A state machine got an input that its transition table does not allow."""

    def __init__(self, machine: str, state: Any, event: Any) -> None:
        self.state = state
        self.event = event
        super().__init__(f"{machine}: no transition from {state} on {event}")
