"""Examples of the retry policy: Envoy's conditions on a few routes."""

from __future__ import annotations

import pytest

from policies.retry import NO_RETRIES, Decision, Failure, RetryRules, UnknownCondition, retry_stale

RETRY, FINAL, EXHAUSTED = Decision.RETRY, Decision.FINAL, Decision.EXHAUSTED


def test_the_default_route_retries_nothing() -> None:
    assert NO_RETRIES.tries_for(replayable=True) == 1
    assert NO_RETRIES.after_failure(Failure.CONNECT, 0, 1) is FINAL
    assert NO_RETRIES.after_response(503, 0, 1) is FINAL


def test_connect_failure_retries_connect_failures_only() -> None:
    rules = RetryRules.compile(2, ["connect-failure"])
    assert rules.tries_for(replayable=True) == 3
    assert rules.after_failure(Failure.CONNECT, 0, 3) is RETRY
    assert rules.after_failure(Failure.CONNECT, 1, 3) is RETRY
    assert rules.after_failure(Failure.CONNECT, 2, 3) is EXHAUSTED
    assert rules.after_failure(Failure.RESET, 0, 3) is FINAL
    assert rules.after_response(503, 0, 3) is FINAL


def test_gateway_error_covers_both_failures_and_502_to_504() -> None:
    rules = RetryRules.compile(1, ["gateway-error"])
    assert rules.after_failure(Failure.RESET, 0, 2) is RETRY
    assert rules.after_failure(Failure.CONNECT, 0, 2) is RETRY
    assert rules.after_failure(Failure.OTHER, 0, 2) is FINAL
    assert [rules.after_response(s, 0, 2) for s in (500, 502, 503, 504)] == [
        FINAL,
        RETRY,
        RETRY,
        RETRY,
    ]
    assert rules.statuses_to_retry(0, 2) == {502, 503, 504}
    assert rules.statuses_to_retry(1, 2) == frozenset()  # the last try's answer stands


def test_5xx_and_retriable_status_codes() -> None:
    assert RetryRules.compile(1, ["5xx"]).statuses == frozenset(range(500, 600))
    rules = RetryRules.compile(1, ["retriable-status-codes"], [409, 429])
    assert rules.statuses == {409, 429}
    assert rules.after_response(429, 0, 2) is RETRY
    assert rules.after_response(429, 1, 2) is EXHAUSTED
    assert rules.after_failure(Failure.CONNECT, 0, 2) is FINAL
    # status codes listed without the condition retry nothing
    assert RetryRules.compile(1, ["reset"], [429]).statuses == frozenset()


def test_a_request_with_a_body_gets_one_try() -> None:
    rules = RetryRules.compile(3, ["5xx"])
    assert rules.tries_for(replayable=False) == 1
    assert rules.after_failure(Failure.RESET, 0, 1) is FINAL  # not EXHAUSTED: no retry was made


def test_an_unknown_condition_is_refused() -> None:
    with pytest.raises(UnknownCondition, match="retry-on-tuesdays"):
        RetryRules.compile(1, ["retry-on-tuesdays"])


def test_a_stale_pooled_connection_resends_idempotent_requests_only() -> None:
    assert retry_stale(b"GET", reused=True)
    assert retry_stale(b"PUT", reused=True)
    assert not retry_stale(b"GET", reused=False)  # a fresh connection's close is an answer
    assert not retry_stale(b"POST", reused=True)


def test_grpc_conditions_retry_grpc_statuses_in_response_headers() -> None:
    rules = RetryRules.compile(2, ["unavailable", "resource-exhausted"])
    assert rules.grpc == {14, 8}
    assert rules.statuses == frozenset()  # no HTTP status is retried
    assert rules.relay_statuses == {200, -14, -8}
    assert rules.after_grpc_status(14, 0, 3) is RETRY
    assert rules.after_grpc_status(14, 2, 3) is EXHAUSTED
    assert rules.after_grpc_status(13, 0, 3) is FINAL  # internal is not named
    assert rules.after_grpc_status(0, 0, 3) is FINAL
    assert rules.after_response(200, 1, 3) is FINAL  # an OK call after a retry stands
    assert rules.after_failure(Failure.RESET, 0, 3) is FINAL


def test_a_route_without_grpc_conditions_relays_its_http_statuses_only() -> None:
    rules = RetryRules.compile(1, ["5xx"])
    assert rules.relay_statuses is rules.statuses


def test_a_retried_http_200_stays_retried_beside_grpc_statuses() -> None:
    from policies.retry import RETRY_200

    rules = RetryRules.compile(1, ["retriable-status-codes", "unavailable"], [200])
    assert rules.relay_statuses == {200, -14, RETRY_200}
    alone = RetryRules.compile(1, ["retriable-status-codes"], [200])
    assert alone.relay_statuses == {200, RETRY_200}
