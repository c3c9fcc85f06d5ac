"""RetryRules against Envoy's definitions of ``retry_on``, over every outcome and try.

The oracle restates each condition's meaning directly (which outcomes it names), and
the tests walk every failure, every status 100-599 and every attempt of a request.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from policies.retry import (
    CONDITIONS,
    IDEMPOTENT,
    Decision,
    Failure,
    RetryRules,
    retry_stale,
)

conditions = st.frozensets(st.sampled_from(sorted(CONDITIONS)))
status_codes = st.frozensets(st.integers(100, 599), max_size=5)
attempts = st.integers(0, 10)
STATUSES = range(100, 600)


def named(on: frozenset[str], codes: frozenset[int], outcome: Failure | int) -> bool:
    """Whether ``retry_on`` names ``outcome``, by Envoy's documentation of each condition."""
    for condition in on:
        if condition == "connect-failure" and outcome is Failure.CONNECT:
            return True
        if condition == "reset" and outcome in (Failure.RESET, Failure.TIMEOUT):
            return True
        if condition == "gateway-error" and (
            outcome in (Failure.CONNECT, Failure.RESET, Failure.TIMEOUT)
            or outcome in (502, 503, 504)
        ):
            return True
        if condition == "5xx" and (
            outcome in (Failure.CONNECT, Failure.RESET, Failure.TIMEOUT)
            or (isinstance(outcome, int) and 500 <= outcome <= 599)
        ):
            return True
        if condition == "retriable-status-codes" and outcome in codes:
            return True
    return False


def expected(covered: bool, attempt: int, tries: int) -> Decision:
    if covered and attempt + 1 < tries:
        return Decision.RETRY
    if covered and attempt > 0:
        return Decision.EXHAUSTED
    return Decision.FINAL


@given(retries=attempts, on=conditions, codes=status_codes, replayable=st.booleans())
def test_every_decision_matches_the_definitions(
    retries: int, on: frozenset[str], codes: frozenset[int], replayable: bool
) -> None:
    rules = RetryRules.compile(retries, on, codes)
    tries = rules.tries_for(replayable)
    assert tries == (1 + retries if replayable else 1)
    for attempt in range(tries):
        for failure in Failure:
            want = expected(named(on, codes, failure), attempt, tries)
            assert rules.after_failure(failure, attempt, tries) is want, (failure, attempt)
        retried = rules.statuses_to_retry(attempt, tries)
        for status in STATUSES:
            want = expected(named(on, codes, status), attempt, tries)
            assert rules.after_response(status, attempt, tries) is want, (status, attempt)
            # the set the data path checks says RETRY exactly when the decision does
            assert (status in retried) == (want is Decision.RETRY), (status, attempt)


@given(retries=attempts, on=conditions, codes=status_codes)
def test_a_request_with_a_body_is_tried_once_and_never_exhausts(
    retries: int, on: frozenset[str], codes: frozenset[int]
) -> None:
    rules = RetryRules.compile(retries, on, codes)
    tries = rules.tries_for(replayable=False)
    assert tries == 1
    outcomes: list[Failure | int] = [*Failure, *STATUSES]
    for outcome in outcomes:
        decision = (
            rules.after_failure(outcome, 0, tries)
            if isinstance(outcome, Failure)
            else rules.after_response(outcome, 0, tries)
        )
        assert decision is Decision.FINAL
    assert not rules.statuses_to_retry(0, tries)


@given(
    retries=attempts,
    on=conditions,
    outcomes=st.lists(st.sampled_from([*Failure, 200, 404, 502, 503, 504, 500]), min_size=11),
)
def test_a_request_takes_at_most_its_tries_and_stops_at_the_first_final_outcome(
    retries: int, on: frozenset[str], outcomes: list[Failure | int]
) -> None:
    rules = RetryRules.compile(retries, on)
    tries = rules.tries_for(replayable=True)
    taken = 0
    for attempt, outcome in enumerate(outcomes):
        taken += 1
        decision = (
            rules.after_failure(outcome, attempt, tries)
            if isinstance(outcome, Failure)
            else rules.after_response(outcome, attempt, tries)
        )
        if decision is not Decision.RETRY:
            break
    assert taken <= tries
    # exhausted means: every try was used and the last outcome was one retries are for
    if decision is Decision.EXHAUSTED:
        assert taken == tries > 1 and named(on, frozenset(), outcomes[taken - 1])


@given(
    method=st.sampled_from([*sorted(IDEMPOTENT), b"POST", b"PATCH", b"CONNECT"]),
    reused=st.booleans(),
)
def test_only_an_idempotent_request_on_a_reused_connection_is_resent(
    method: bytes, reused: bool
) -> None:
    assert retry_stale(method, reused) == (reused and method not in (b"POST", b"PATCH", b"CONNECT"))


@given(
    retries=attempts,
    method=st.sampled_from([*sorted(IDEMPOTENT), b"POST", b"PATCH"]),
    length=st.none() | st.integers(0, 1 << 20),
    limit=st.integers(0, 1 << 20),
)
def test_a_body_is_held_only_for_a_retrying_route_an_idempotent_method_and_a_fitting_size(
    retries: int, method: bytes, length: int | None, limit: int
) -> None:
    rules = RetryRules.compile(retries, ["5xx"], buffer_limit=limit)
    fits = length is None or length <= limit  # a chunked body's size is known at its end
    assert rules.may_hold_body(method, length) == (retries > 0 and method in IDEMPOTENT and fits)


@given(conditions, attempts, st.integers(1, 12))
def test_grpc_statuses_are_retried_iff_named(on: frozenset[str], attempt: int, tries: int) -> None:
    """The oracle: each gRPC name retries its one status (``policies.grpc.RETRY_ON``)."""
    from policies.grpc import RETRY_ON

    rules = RetryRules.compile(tries - 1, on)
    for grpc_status in range(17):
        covered = any(RETRY_ON.get(name) == grpc_status for name in on)
        decision = rules.after_grpc_status(grpc_status, attempt, tries)
        if not covered or attempt + 1 > tries:
            continue
        want = (
            Decision.RETRY
            if attempt + 1 < tries
            else (Decision.EXHAUSTED if attempt else Decision.FINAL)
        )
        assert decision is want
        assert (-grpc_status in rules.relay_statuses) is covered or grpc_status == 0
