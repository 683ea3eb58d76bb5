"""The suite's own set-up: under ``./bootstrap.sh test`` (xdist, ``--dist loadgroup``)
each test directory runs whole on one worker, so that its package-scoped server, its
templates, and the run's PostgreSQL, bridge and Ray cluster are each made once."""

from __future__ import annotations

import pytest


def test_every_test_carries_its_group_to_xdist(request: pytest.FixtureRequest) -> None:
    """Each collected test's node id names its group (xdist reads the marks into node ids
    when it collects: a mark added after that is ignored, and the tests of one directory
    would be spread over both workers)."""
    if not getattr(request.config.option, "loadgroup", False):  # set on xdist's workers
        pytest.skip("only under xdist's --dist loadgroup (./bootstrap.sh test)")
    ungrouped = [item.nodeid for item in request.session.items if "@" not in item.nodeid]
    assert not ungrouped, ungrouped[:5]
    assert request.node.nodeid.endswith("@test_groups")
