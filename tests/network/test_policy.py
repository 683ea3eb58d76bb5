"""The egress policy on its own: entry normalisation, host addresses, and the nftables ruleset.

No VM here; the last test loads the rulesets into a namespace of its own to
prove nftables accepts what :func:`ruleset` writes.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import ValidationError

from sietch.network import netns, nft
from sietch.network.policy import (
    TABLE,
    NetworkPolicy,
    domain_listed,
    host_addresses,
    normalise_entry,
    ruleset,
)

# The shape of /proc/net/fib_trie: a 127/8 and a /24 with their LOCAL, BROADCAST and
# link (MAIN) entries, in both the Main and the Local trie, as the kernel prints them.
_TRIE = """\
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.0.2.0/24 2 0 2
        +-- 192.0.2.0/30 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
     |-- 198.51.100.9
        /32 host LOCAL
"""
FIB_TRIE = "Main:\n" + _TRIE + "Local:\n" + _TRIE


def chain(rules: str, name: str) -> list[str]:
    """The non-empty lines of one chain of a ruleset ``ruleset()`` wrote."""
    body = re.search(rf"chain {name} {{\n(.*?)\n  }}", rules, re.DOTALL)
    assert body is not None, rules
    return [line.strip() for line in body.group(1).splitlines() if line.strip()]


def set_elements(rules: str, name: str) -> str:
    """The one line that declares set ``name``."""
    found = re.search(rf"^ *set {name} {{.*$", rules, re.MULTILINE)
    assert found is not None, rules
    return found.group(0)


# -- entries --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("203.0.113.0/24", "203.0.113.0/24"),
        (" 203.0.113.77/24 ", "203.0.113.0/24"),
        ("203.0.113.7", "203.0.113.7/32"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("PyPI.org", "pypi.org"),
        ("example.com.", "example.com"),
        ("*.Example.com", "example.com"),
        ("*.example.com.", "example.com"),
        ("localhost", "localhost"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("a-b.c0.test", "a-b.c0.test"),
    ],
)
def test_entries_are_canonicalised(entry: str, expected: str) -> None:
    """CIDRs lose their host bits, a bare address is a /32, names are lower-case and bare."""
    assert normalise_entry(entry) == expected


@pytest.mark.parametrize(
    "entry",
    [
        "::1",
        "2001:db8::/32",
        "",
        " ",
        ".",
        "*.",
        "not a domain!",
        "under_score.test",
        "-leading.test",
        "trailing-.test",
        "a..b",
        "x" * 64 + ".test",
        ".".join(["a" * 60] * 5),
        "10.0.0.256",
        "1.2.3",
        "10.0.0.0/33",
        "http://example.com",
        "example.com/path",
    ],
)
def test_bad_entries_are_refused(entry: str) -> None:
    """IPv6, malformed addresses and anything not a host name raise ValueError."""
    with pytest.raises(ValueError):
        normalise_entry(entry)


def test_policy_dedups_and_splits_networks_from_domains() -> None:
    """Entries are normalised, duplicates (after normalising) dropped, order kept."""
    policy = NetworkPolicy(
        internet=False,
        allow=["Good.test", "10.1.2.3/8", "good.test.", "*.good.test", "10.0.0.0/8", "1.2.3.4"],
    )
    assert policy.allow == ["good.test", "10.0.0.0/8", "1.2.3.4/32"]
    assert policy.networks == [
        ipaddress.IPv4Network("10.0.0.0/8"),
        ipaddress.IPv4Network("1.2.3.4/32"),
    ]
    assert policy.domains == ["good.test"]
    assert NetworkPolicy() == NetworkPolicy(internet=True, allow=[])


def test_policy_refuses_a_bad_entry() -> None:
    """One bad entry makes the whole policy invalid (the API's 422)."""
    with pytest.raises(ValidationError, match="neither a CIDR nor a domain name"):
        NetworkPolicy(allow=["good.test", "not a domain!"])
    with pytest.raises(ValidationError, match="IPv4"):
        NetworkPolicy(allow=["fd00::/8"])


def test_allows_name() -> None:
    """With the internet on any name resolves; off, only listed domains and their subdomains."""
    assert NetworkPolicy().allows_name("anything.example")
    closed = NetworkPolicy(internet=False, allow=["good.test", "10.0.0.0/8"])
    assert closed.allows_name("good.test")
    assert closed.allows_name("WWW.Good.Test.")
    assert not closed.allows_name("evilgood.test")
    assert not closed.allows_name("other.test")
    assert not closed.allows_name("10.0.0.0/8")
    assert not NetworkPolicy(internet=False).allows_name("good.test")


@pytest.mark.parametrize(
    ("name", "listed"),
    [
        ("good.test", True),
        ("www.good.test", True),
        ("a.b.good.test", True),
        ("GOOD.TEST.", True),
        ("evilgood.test", False),
        ("good.test.evil", False),
        ("test", False),
        ("other.test", False),
    ],
)
def test_domain_listed(name: str, listed: bool) -> None:
    """A listed domain covers itself and its subdomains, never a name that merely ends alike."""
    assert domain_listed(name, ["good.test", "pypi.org"]) is listed


def test_domain_listed_with_nothing_listed() -> None:
    assert not domain_listed("good.test", [])


# -- host addresses -----------------------------------------------------------------


def test_host_addresses_are_the_local_32s(tmp_path: Path) -> None:
    """Only LOCAL /32 leaves count: not the 127/8 LOCAL, BROADCAST or link routes; sorted."""
    fib = tmp_path / "fib_trie"
    fib.write_text(FIB_TRIE)
    assert host_addresses(fib) == ["127.0.0.1", "192.0.2.2", "198.51.100.9"]


def test_host_addresses_without_the_file(tmp_path: Path) -> None:
    """No fib_trie (no /proc): no addresses rather than an error."""
    assert host_addresses(tmp_path / "missing") == []


def test_host_addresses_of_this_machine() -> None:
    """This host's own view has loopback and only valid IPv4 addresses."""
    found = host_addresses()
    assert "127.0.0.1" in found
    assert all(isinstance(ipaddress.IPv4Address(a), ipaddress.IPv4Address) for a in found)


# -- the ruleset --------------------------------------------------------------------

HOST = ["127.0.0.1", "192.0.2.2"]


def test_internet_on_accepts_public_after_the_non_public_check() -> None:
    """Host first, then allow and learned, then private space denied, then the rest accepted."""
    rules = ruleset(NetworkPolicy(internet=True), HOST)
    egress = chain(rules, "egress")
    assert egress[-1] == "goto deny"
    assert "accept" in egress
    assert egress.index("ip daddr @host goto deny") < egress.index("ip daddr @allow accept")
    assert egress.index("ip daddr @non_public goto deny") < egress.index("accept")
    assert egress.index("ip daddr @learned accept") < egress.index("ip daddr @non_public goto deny")


def test_internet_off_has_no_plain_accept() -> None:
    """With the internet off only allow, learned, local and established traffic gets out."""
    egress = chain(ruleset(NetworkPolicy(internet=False), HOST), "egress")
    assert "accept" not in egress
    assert not any("non_public" in rule for rule in egress)
    assert egress[-1] == "goto deny"
    assert "ip daddr @allow accept" in egress and "ip daddr @learned accept" in egress


def test_allow_cidrs_and_host_addresses_land_in_their_sets() -> None:
    """allow's CIDRs fill the allow set (its domains do not); host addresses the host set."""
    policy = NetworkPolicy(internet=False, allow=["203.0.113.7", "10.1.2.3/8", "good.test"])
    rules = ruleset(policy, HOST)
    assert "elements = { 203.0.113.7/32, 10.0.0.0/8 }" in set_elements(rules, "allow")
    assert "elements = { 127.0.0.1, 192.0.2.2 }" in set_elements(rules, "host")
    assert "good.test" not in rules
    assert "10.0.0.0/8" in set_elements(rules, "non_public")
    # Empty sets are written without an elements clause, which nft would refuse.
    empty = ruleset(NetworkPolicy(), [])
    assert "elements" not in set_elements(empty, "allow")
    assert "elements" not in set_elements(empty, "host")


@pytest.fixture
def namespace() -> Iterator[int]:
    """A fresh network namespace (root only), gone when its fd is closed."""
    fd = netns.create()
    try:
        yield fd
    finally:
        os.close(fd)


def test_rulesets_load_into_a_namespace(namespace: int) -> None:
    """nftables takes both policies' rulesets, and one replaces the other atomically."""
    closed = NetworkPolicy(internet=False, allow=["203.0.113.0/24", "good.test"])
    for policy in (NetworkPolicy(), closed, NetworkPolicy(internet=True, allow=["10.1.2.3"])):
        nft.run_sync(namespace, ruleset(policy, host_addresses()))
        listed = nft.run_sync(namespace, "list ruleset")
        assert f"table inet {TABLE}" in listed
        assert listed.count(f"table inet {TABLE}") == 1
    nft.run_sync(namespace, ruleset(closed, []))
    assert "203.0.113.0/24" in nft.run_sync(namespace, f"list set inet {TABLE} allow")


def test_rulesets_load_at_once_into_many_namespaces() -> None:
    """Sandboxes created together load their rules from many threads: each load succeeds
    (libnftables' process-wide interface cache once failed some, or crashed the process:
    this test failed 5 times in 6 runs on that code)."""
    for policy in (NetworkPolicy(), NetworkPolicy(internet=False, allow=["10.1.2.3"])):
        assert not re.search(r"\b[io]if\b", ruleset(policy, HOST)), "interfaces by name only"
    spaces = [netns.create() for _ in range(16)]
    try:

        def load(namespace: int) -> None:
            for _ in range(100):
                nft.run_sync(namespace, ruleset(NetworkPolicy(), [], replace=False))

        with ThreadPoolExecutor(len(spaces)) as pool:
            list(pool.map(load, spaces))
        for namespace in spaces:
            assert nft.run_sync(namespace, "list ruleset").count(f"table inet {TABLE}") == 1
    finally:
        for namespace in spaces:
            os.close(namespace)
