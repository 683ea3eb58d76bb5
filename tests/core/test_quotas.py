"""Quota logic, without VMs: limits, what is being made, the create rate per tenant."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sietch.core.quotas import (
    Quota,
    QuotaGate,
    TokenBucket,
    Usage,
    check,
    check_image_disk,
    check_snapshot_disk,
)
from sietch.errors import LimitExceeded, QuotaExceeded


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_unlimited_by_default() -> None:
    """A tenant without a quota may hold anything."""
    check("t", Quota(), Usage(10_000, 10_000, 10**9), Usage(1, 64, 65536))
    check_snapshot_disk("t", Quota(), 10**15)


@pytest.mark.parametrize(
    ("quota", "adding", "which"),
    [
        (Quota(max_sandboxes=2), Usage(1, 1, 512), "max_sandboxes"),
        (Quota(max_vcpus=3), Usage(1, 2, 512), "max_vcpus"),
        (Quota(max_memory_mib=1024), Usage(1, 1, 1024), "max_memory_mib"),
    ],
)
def test_each_limit_refuses_with_its_name(quota: Quota, adding: Usage, which: str) -> None:
    """Crossing a limit is a 429 naming the quota and the command that raises it."""
    with pytest.raises(QuotaExceeded) as caught:
        check("acme", quota, Usage(2, 2, 512), adding)
    err = caught.value
    assert isinstance(err, LimitExceeded) and err.status == 429 and err.code == "quota_exceeded"
    assert err.details["quota"] == which and err.details["tenant"] == "acme"
    assert err.details["retry_after"] > 0
    assert "sietch tenants set acme --" + which.replace("_", "-") in err.message


def test_exactly_at_the_limit_is_allowed() -> None:
    """The limit is what may be held: reaching it is fine, passing it is not."""
    check("t", Quota(max_sandboxes=3, max_vcpus=3), Usage(2, 2, 0), Usage(1, 1, 0))


@pytest.mark.parametrize(
    ("check_disk", "field"),
    [(check_snapshot_disk, "max_snapshot_disk_mib"), (check_image_disk, "max_image_disk_mib")],
)
def test_disk_quota_refuses_once_full(
    check_disk: Callable[[str, Quota, int], None], field: str
) -> None:
    """A snapshot (an image build) is refused once the tenant's snapshots (images) take
    their whole allowance, and the message names the option that raises it."""
    quota = Quota(**{field: 10})
    check_disk("t", quota, 10 * 1024 * 1024 - 1)
    with pytest.raises(QuotaExceeded) as caught:
        check_disk("t", quota, 10 * 1024 * 1024)
    assert caught.value.details["quota"] == field
    assert "--" + field.replace("_", "-") in caught.value.message


def test_gate_counts_what_is_being_made() -> None:
    """Two creates at once under a limit of one: the second is refused while the first runs,
    and admitted once it failed (its reservation is given back)."""
    gate = QuotaGate(lambda _t: Quota(max_sandboxes=1), lambda _t: Usage())
    with gate.admit("t", Usage(1, 1, 512)):
        assert gate.pending("t") == Usage(1, 1, 512)
        with pytest.raises(QuotaExceeded), gate.admit("t", Usage(1, 1, 512)):
            pass
    assert gate.pending("t") == Usage()
    with gate.admit("t", Usage(1, 1, 512)):
        pass


def test_gate_keeps_tenants_apart() -> None:
    """One tenant at its limit does not hold back another."""
    held = {"a": Usage(1, 1, 512), "b": Usage()}
    gate = QuotaGate(lambda _t: Quota(max_sandboxes=1), held.__getitem__)
    with pytest.raises(QuotaExceeded), gate.admit("a", Usage(1, 1, 512)):
        pass
    with gate.admit("b", Usage(1, 1, 512)):
        pass


def test_create_rate_per_tenant() -> None:
    """``create_burst`` creates pass at once, the next waits 60/rate s; Retry-After says so."""
    clock = Clock()
    quota = Quota(create_rate_per_min=30, create_burst=2)
    gate = QuotaGate(lambda t: quota if t == "slow" else Quota(), lambda _t: Usage(), clock)
    for _ in range(2):
        with gate.admit("slow", Usage(1, 1, 1)):
            pass
    with pytest.raises(QuotaExceeded) as caught, gate.admit("slow", Usage(1, 1, 1)):
        pass
    assert caught.value.details["retry_after"] == pytest.approx(2.0)
    for _ in range(20):  # other tenants are not rate-limited
        with gate.admit("fast", Usage(1, 1, 1)):
            pass
    clock.now += 2.0
    with gate.admit("slow", Usage(1, 1, 1)):
        pass


def test_refused_for_resources_takes_no_token() -> None:
    """A create refused for its resources does not use up the tenant's rate."""
    clock = Clock()
    quota = Quota(max_sandboxes=0, create_rate_per_min=1, create_burst=1)
    gate = QuotaGate(lambda _t: quota, lambda _t: Usage(), clock)
    with pytest.raises(QuotaExceeded) as caught, gate.admit("t", Usage(1, 1, 1)):
        pass
    assert caught.value.details["quota"] == "max_sandboxes"
    quota.max_sandboxes = None
    with gate.admit("t", Usage(1, 1, 1)):
        pass


def test_token_bucket_refills_at_its_rate() -> None:
    """Empty, a bucket says how long until the next token; that long later, it has one."""
    clock = Clock()
    bucket = TokenBucket(rate=0.5, burst=1, clock=clock)
    assert bucket.take() == 0
    assert bucket.take() == pytest.approx(2.0)
    clock.now += 2.0
    assert bucket.take() == 0
