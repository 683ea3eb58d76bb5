"""The SDK's retry policy, as pure logic: which refusals it retries, how long it waits."""

from __future__ import annotations

import httpx
import pytest

from sietch import errors
from sietch.client._core import Backoff, ClientConfig, RetryPolicy


def answer(status: int, code: str, retry_after: str | None = None) -> httpx.Response:
    headers = {"retry-after": retry_after} if retry_after else {}
    body = {"error": {"code": code, "message": "refused"}}
    return httpx.Response(status, json=body, headers=headers)


def test_honours_retry_after() -> None:
    """A 429 with Retry-After waits at least that long (a little more: jitter)."""
    wait = Backoff(RetryPolicy()).after(answer(429, "limit_exceeded", "3"))
    assert wait is not None and 3.0 <= wait <= 3.75


def test_details_retry_after_is_more_precise() -> None:
    """The error's own retry_after (fractions of a second) wins over the rounded header."""
    response = httpx.Response(
        429,
        json={"error": {"code": "quota_exceeded", "message": "x", "details": {"retry_after": 0.2}}},
        headers={"retry-after": "1"},
    )
    wait = Backoff(RetryPolicy(backoff_s=0.1)).after(response)
    assert wait is not None and 0.2 <= wait <= 0.25


def test_backs_off_exponentially_then_gives_up() -> None:
    """Without a hint the waits double; after max_retries it stops."""
    backoff = Backoff(RetryPolicy(max_retries=3, max_wait_s=1000, backoff_s=1, cap_s=100))
    waits = [backoff.after(answer(503, "unavailable")) for _ in range(4)]
    for wait, base in zip(waits[:3], (1, 2, 4), strict=True):
        assert wait is not None and base <= wait <= base * 1.25
    assert waits[3] is None


def test_total_wait_is_bounded() -> None:
    """A call never waits more than max_wait_s in all: a Retry-After beyond it gives up."""
    backoff = Backoff(RetryPolicy(max_wait_s=10))
    assert backoff.after(answer(429, "limit_exceeded", "6")) is not None
    assert backoff.after(answer(429, "limit_exceeded", "6")) is None


@pytest.mark.parametrize(
    ("status", "code"),
    [(404, "sandbox_not_found"), (409, "conflict"), (500, "internal"), (503, "agent_unavailable")],
)
def test_does_not_retry_what_will_not_change(status: int, code: str) -> None:
    """Only 429 and a 503 of the server itself are retried, never a guest agent's 503."""
    assert Backoff(RetryPolicy()).after(answer(status, code)) is None


def test_zero_retries_never_waits() -> None:
    """max_retries=0 turns retrying off."""
    assert Backoff(RetryPolicy(max_retries=0)).delay(errors.LimitExceeded("x")) is None


def test_settings_from_arguments_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Arguments win over SIETCH_MAX_RETRIES / SIETCH_RETRY_MAX_WAIT_S, which win over defaults."""
    monkeypatch.setenv("SIETCH_MAX_RETRIES", "2")
    monkeypatch.setenv("SIETCH_RETRY_MAX_WAIT_S", "7.5")
    assert ClientConfig.resolve().retry == RetryPolicy(max_retries=2, max_wait_s=7.5)
    assert ClientConfig.resolve(max_retries=4).retry.max_retries == 4
    monkeypatch.delenv("SIETCH_MAX_RETRIES")
    assert ClientConfig.resolve().retry.max_retries == RetryPolicy().max_retries
