"""Per-tenant quotas: what a tenant may hold at once and how fast it may create.

Pure logic, no I/O: the manager says what a tenant uses (:class:`Usage`), the
tenants' catalog (:mod:`sietch.core.tenants`) what it may (:class:`Quota`), and
:class:`QuotaGate` admits a new sandbox or refuses it with
:class:`~sietch.errors.QuotaExceeded` (429, ``Retry-After``). A gate counts what
is being made as used until it is made, so concurrent creates cannot all slip
under a limit that only one of them fits.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields

from pydantic import BaseModel, ConfigDict, Field

from sietch.config import MiB
from sietch.errors import QuotaExceeded

RESOURCE_RETRY_AFTER_S = 5.0
"""What a refusal for held resources suggests to wait: nobody knows when one is freed,
and a polite client (the SDK) retries within its own bound."""


class Quota(BaseModel):
    """A tenant's limits; None is unlimited (the default for every field)."""

    model_config = ConfigDict(extra="forbid")

    max_sandboxes: int | None = Field(default=None, ge=0)
    """Sandboxes live at once (running or paused)."""
    max_vcpus: int | None = Field(default=None, ge=0)
    """vCPUs of those sandboxes, together."""
    max_memory_mib: int | None = Field(default=None, ge=0)
    """Guest RAM of those sandboxes, together."""
    max_snapshot_disk_mib: int | None = Field(default=None, ge=0)
    """Host disk its snapshots take; a snapshot is refused once they take this much."""
    max_image_disk_mib: int | None = Field(default=None, ge=0)
    """Host disk its user images take; a build or import is refused once they take this
    much (what one will take is known only once it has run)."""
    create_rate_per_min: float | None = Field(default=None, gt=0)
    """Creates, restores and forks per minute on average."""
    create_burst: int = Field(default=10, ge=1)
    """Creates allowed back to back before ``create_rate_per_min`` applies."""


@dataclass(frozen=True)
class Usage:
    """What a tenant holds (or asks for): sandboxes and their vCPUs and memory."""

    sandboxes: int = 0
    vcpus: int = 0
    memory_mib: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    def times(self, count: int) -> Usage:
        return Usage(self.sandboxes * count, self.vcpus * count, self.memory_mib * count)


_LIMITS = (
    ("sandboxes", "max_sandboxes", "sandboxes"),
    ("vcpus", "max_vcpus", "vCPUs"),
    ("memory_mib", "max_memory_mib", "MiB of memory"),
)


def _option(quota_field: str) -> str:
    return "--" + quota_field.replace("_", "-")


def check(tenant: str, quota: Quota, used: Usage, adding: Usage) -> None:
    """Refuse ``adding`` when it would take ``tenant`` over one of its limits."""
    for used_field, quota_field, unit in _LIMITS:
        limit = getattr(quota, quota_field)
        now, more = getattr(used, used_field), getattr(adding, used_field)
        if limit is not None and more and now + more > limit:
            raise QuotaExceeded(
                f"tenant {tenant!r} may hold {limit} {unit}; it holds {now} and asked for "
                f"{more} more: delete some, or have an admin raise it "
                f"(sietch tenants set {tenant} {_option(quota_field)} N)",
                tenant=tenant,
                quota=quota_field,
                limit=limit,
                used=now,
                requested=more,
                retry_after=RESOURCE_RETRY_AFTER_S,
            )


def check_snapshot_disk(tenant: str, quota: Quota, used_bytes: int) -> None:
    """Refuse a new snapshot once the tenant's snapshots take its whole allowance."""
    _check_disk(
        tenant, "max_snapshot_disk_mib", quota.max_snapshot_disk_mib, used_bytes, "snapshots"
    )


def check_image_disk(tenant: str, quota: Quota, used_bytes: int) -> None:
    """Refuse a new build or import once the tenant's images take its whole allowance."""
    _check_disk(tenant, "max_image_disk_mib", quota.max_image_disk_mib, used_bytes, "images")


def _check_disk(
    tenant: str, quota_field: str, limit: int | None, used_bytes: int, what: str
) -> None:
    if limit is not None and used_bytes >= limit * MiB:
        raise QuotaExceeded(
            f"tenant {tenant!r}'s {what} take {used_bytes / MiB:.0f} MiB, its quota is "
            f"{limit} MiB: delete some, or have an admin raise it "
            f"(sietch tenants set {tenant} {_option(quota_field)} N)",
            tenant=tenant,
            quota=quota_field,
            limit=limit,
            used=math.ceil(used_bytes / MiB),
            retry_after=RESOURCE_RETRY_AFTER_S,
        )


class TokenBucket:
    """Allows ``burst`` events at once and ``rate`` per second on average."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def take(self) -> float:
        """Take a token; returns 0, or the seconds to wait when none is left."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate


class QuotaGate:
    """Admits new sandboxes tenant by tenant: held resources, those being made, the rate.

    ``quota_of`` and ``usage_of`` are asked on every admission (a quota changed by
    ``sietch tenants set`` applies to the next create).
    """

    def __init__(
        self,
        quota_of: Callable[[str], Quota],
        usage_of: Callable[[str], Usage],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.quota_of = quota_of
        self.usage_of = usage_of
        self._clock = clock
        self._pending: dict[str, Usage] = defaultdict(Usage)
        self._buckets: dict[str, tuple[tuple[float, int], TokenBucket]] = {}

    def pending(self, tenant: str) -> Usage:
        """What is being made for ``tenant`` right now."""
        return self._pending.get(tenant, Usage())

    @contextmanager
    def admit(self, tenant: str, adding: Usage) -> Iterator[None]:
        """Hold ``adding`` as used while the block makes it; QuotaExceeded if it can't be."""
        quota = self.quota_of(tenant)
        check(tenant, quota, self.usage_of(tenant) + self.pending(tenant), adding)
        self._take_token(tenant, quota)
        self._pending[tenant] += adding
        try:
            yield
        finally:
            self._pending[tenant] -= adding
            if self._pending[tenant] == Usage():
                del self._pending[tenant]

    def _take_token(self, tenant: str, quota: Quota) -> None:
        if quota.create_rate_per_min is None:
            self._buckets.pop(tenant, None)
            return
        shape = (quota.create_rate_per_min, quota.create_burst)
        known = self._buckets.get(tenant)
        if known is None or known[0] != shape:  # new, or its quota changed
            known = (shape, TokenBucket(shape[0] / 60.0, shape[1], self._clock))
            self._buckets[tenant] = known
        wait = known[1].take()
        if wait:
            raise QuotaExceeded(
                f"tenant {tenant!r} creates too fast: at most {quota.create_burst} at once and "
                f"{quota.create_rate_per_min:g} per minute "
                f"(sietch tenants set {tenant} --create-rate-per-min N --create-burst N)",
                tenant=tenant,
                quota="create_rate_per_min",
                limit=quota.create_rate_per_min,
                retry_after=round(wait, 2),
            )
