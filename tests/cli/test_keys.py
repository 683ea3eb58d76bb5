"""``sietch keys`` and ``sietch tenants`` on a state dir, as an admin runs them (no server)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from sietch.core.tenants import Tenants
from tests.cli.conftest import SIETCH


def sietch(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIETCH_STATE_DIR": str(state)}
    return subprocess.run(
        [str(SIETCH), *args], env=env, capture_output=True, text=True, check=False, timeout=60
    )


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    """create prints a key of the tenant (admin if asked), ls lists it, revoke ends it."""
    made = sietch(tmp_path, "keys", "create", "--tenant", "acme", "--name", "ci", "--admin")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    catalog = Tenants(tmp_path / "tenants.db")
    try:
        caller = catalog.lookup(key)
        assert caller is not None and (caller.tenant, caller.key, caller.admin) == (
            "acme",
            "ci",
            True,
        )
        listed = json.loads(sietch(tmp_path, "keys", "ls", "--json").stdout)
        assert [(k["tenant"], k["name"], k["admin"]) for k in listed] == [("acme", "ci", True)]
        again = sietch(tmp_path, "keys", "create", "--tenant", "acme", "--name", "ci")
        assert again.returncode == 1 and "already has a key" in again.stderr
        assert sietch(tmp_path, "keys", "revoke", "ci").returncode == 0
        assert catalog.lookup(key) is None
    finally:
        catalog.close()


def test_tenants_set_and_ls(tmp_path: Path) -> None:
    """set changes only the limits named ('unlimited' clears one); ls shows the quota."""
    assert sietch(tmp_path, "tenants", "set", "acme", "--max-sandboxes", "3").returncode == 0
    done = sietch(
        tmp_path, "tenants", "set", "acme", "--max-vcpus", "4", "--create-rate-per-min", "6"
    )
    assert done.returncode == 0, done.stderr
    cleared = sietch(tmp_path, "tenants", "set", "acme", "--max-vcpus", "unlimited", "--json")
    assert json.loads(cleared.stdout)["max_vcpus"] is None
    images = sietch(tmp_path, "tenants", "set", "acme", "--max-image-disk-mib", "64", "--json")
    assert json.loads(images.stdout)["max_image_disk_mib"] == 64
    listed = json.loads(sietch(tmp_path, "tenants", "ls", "--json").stdout)
    assert listed[0]["name"] == "acme"
    assert listed[0]["quota"]["max_sandboxes"] == 3
    assert listed[0]["quota"]["create_rate_per_min"] == 6
    bad = sietch(tmp_path, "tenants", "set", "acme", "--max-sandboxes", "many")
    assert bad.returncode == 2 and "max_sandboxes" in bad.stderr
    assert "max_sandboxes=3" in sietch(tmp_path, "tenants", "ls").stdout
