"""One place for every setting; each is read from a ``SIETCH_*`` environment variable."""

from __future__ import annotations

import ipaddress
import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, FilePath, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024
GiB = 1024 * MiB


def _default_dir(root_path: str, user_env: str, user_default: str) -> Path:
    if os.geteuid() == 0:
        return Path(root_path)
    return Path(os.environ.get(user_env, Path.home() / user_default)) / "sietch"


class Settings(BaseSettings):
    """Sietch's configuration; defaults suit one machine run by root."""

    model_config = SettingsConfigDict(env_prefix="SIETCH_", extra="ignore")

    state_dir: Path = Field(
        default_factory=lambda: _default_dir("/var/lib/sietch", "XDG_STATE_HOME", ".local/state")
    )
    cache_dir: Path = Field(
        default_factory=lambda: _default_dir("/var/cache/sietch", "XDG_CACHE_HOME", ".cache")
    )
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    qemu_binary: str = "qemu-system-x86_64"
    qemu_user: str | None = "sietch-vm"
    """Unprivileged user QEMU runs as when Sietch runs as root (skipped if absent)."""

    default_image: str = "default"
    default_vcpus: int = 1
    default_memory_mib: int = 512
    default_disk_mib: int = 2048
    max_vcpus: int = Field(default_factory=lambda: os.cpu_count() or 1)
    max_memory_mib: int = 8192
    min_memory_mib: int = 128
    max_disk_mib: int = 64 * 1024
    max_sandboxes: int = 64

    cow_image_gib: int = Field(default=64, ge=0)
    """Size of the sparse XFS (reflink) image made, as root, where the state dir can't
    reflink; 0 keeps plain copies."""
    templates: bool = True
    """Create sandboxes by restoring a snapshot of a booted VM (made on first use)."""
    template_cache: bool = True
    """Share the templates of built-in images with every Sietch on this machine: the first
    to boot one publishes it to ``template_cache_dir``, the others import it instead of
    booting (see sietch.images.templates). Off: each state dir boots its own."""
    template_cache_dir: Path | None = None
    """Where shared templates live; default ``<cache_dir>/templates``."""
    pool_size: int = Field(default=1, ge=0)
    """Sandboxes per template kept restored and warm, so a create only hands one out."""
    restore_concurrency: int = Field(default_factory=lambda: 4 * (os.cpu_count() or 1), ge=1)
    """Restores a fork runs at once (the warm pool: at most one per core as well). Much of
    a restore's wall time is waiting: a fork of 10 on 2 cores returned in 2.0-2.1 s with
    10 at once, 2.6-3.2 s with 2 (all ten answered an exec at 4.1 vs 4.3-4.5 s)."""
    boot_timeout_s: float = 60.0
    """Cold boot under TCG takes seconds; a loaded CI machine can take far longer."""
    exec_timeout_s: float | None = None
    lock_wait_s: float = Field(default=30.0, gt=0)
    """How long a snapshot, pause, resume or port/network change waits for the commands
    and file transfers in flight in its sandbox before it gives up as busy (409)."""

    # -- host limits and protection (see sietch.vmm.cgroups, sietch.core.hostmem) -------
    cgroups: Literal["auto", "v1", "v2", "off"] = "auto"
    """Each sandbox's QEMU and helpers in a cgroup of their own (root only): v2 where
    /sys/fs/cgroup is unified, else the v1 controllers."""
    cgroup_memory_overhead_mib: int | None = Field(default=None, ge=0)
    """Host memory a sandbox may use beyond its guest RAM: QEMU itself and slirp4netns (an
    idle restored guest ~150 MiB over what its guest touched), plus under TCG the buffer of
    translated code, which QEMU lets grow to 1 GiB. Unset: 384 MiB, +1024 under TCG."""
    cgroup_cpus_per_vcpu: float = Field(default=1.0, ge=0)
    """CPU time per vCPU, in cores (a CFS quota); 0: no cap."""
    cgroup_cpu_weight: int | None = Field(default=None, ge=1, le=10000)
    """CPU share of every sandbox under contention (100 = a host process's); unset: default."""
    cgroup_pids_max: int = Field(default=512, ge=16)
    """Tasks (processes and threads) a sandbox's host side may have; QEMU runs ~10-70."""
    cgroup_io_weight: int | None = Field(default=100, ge=1, le=1000)
    """Block I/O weight (where the I/O scheduler has one, e.g. BFQ); unset: untouched."""
    jail: bool = True
    """Run each QEMU in a root (only its own files), PID and IPC namespace of its own, with
    no capabilities (as root, where namespaces may be made: else unjailed, and the log and
    ``/api/v1/info`` say why; see sietch.vmm.jail)."""
    agent_fastpath: bool = True
    """Run the guest agent's compiled hot path (sietch-front) in front of its Python; off
    (for A/B measurements) it is left out of VMs booted from then on (a template is booted
    once: a restore keeps what its template ran)."""
    metrics_interval_s: float = Field(default=5.0, gt=0)
    """How often each sandbox's host-side use is sampled (``GET .../metrics`` history)."""
    metrics_history: int = Field(default=120, ge=1)
    """Samples kept per sandbox (120 x 5 s: the last ten minutes)."""
    metrics_max_sandboxes: int = Field(default=100, ge=0)
    """Sandboxes with Prometheus series of their own; the rest are summed as ``_other``."""
    memory_reserve_mib: int = Field(default=512, ge=0)
    """Creates and resumes are refused (503) when they would leave the host less
    MemAvailable than this; 0 turns the check off."""

    # -- sandbox networks (see sietch.network) ---------------------------------------
    internet: bool = True
    """Default egress of a new sandbox: the public internet (never the host, its private
    networks or other sandboxes), unless a create or a later policy change says otherwise."""
    dns_servers: list[str] = Field(default_factory=list)
    """Upstream resolvers for the sandboxes' DNS; default: the host's /etc/resolv.conf."""

    # -- image builds (see sietch.builder) ---------------------------------------------
    build_ca_bundle: FilePath | None = None
    """A PEM bundle the RUN steps of builds trust (``SSL_CERT_FILE``, ``PIP_CERT``,
    ``CURL_CA_BUNDLE``, ...), e.g. the host's /etc/ssl/certs/ca-certificates.crt behind a
    TLS re-signing proxy. Handed to the step in RAM (``/dev/shm``), never baked into the image."""
    build_proxy_env: bool = False
    """Hand this process's ``http_proxy``/``https_proxy``/``no_proxy`` to RUN steps."""
    sandbox_ca_bundle: FilePath | None = None
    """The same for every new sandbox: written to its disk (``/etc/sietch/ca-bundle.pem``)
    at create, with the variables above pointing at it in its environment."""
    sandbox_proxy_env: bool = False
    """Hand this process's proxy variables to every new sandbox's environment."""

    # -- API server (``sietch serve``) ---------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=7000, ge=1, le=65535)
    auth: bool = True
    """Require an API key; switching it off is refused unless ``host`` is loopback."""
    tls_cert: FilePath | None = None
    tls_key: FilePath | None = None
    """Serve HTTPS (API, port proxy, WebSockets) with this PEM certificate and key."""
    api_key_file: Path | None = None
    """The key hashes of a server from before tenants, one per line (default
    ``<state_dir>/api_keys``): imported once into ``tenants.db`` as admin keys of
    tenant ``default``."""
    max_request_bytes: int = Field(default=1 * MiB, ge=1024)
    """Largest JSON request body."""
    max_upload_bytes: int = Field(default=16 * GiB, ge=1)
    """Largest file upload (uploads stream through; this only bounds the guest's disk use)."""
    max_exec_output_bytes: int = Field(default=16 * MiB, ge=1024)
    """Output kept per stream by a blocking exec; beyond it the result says ``truncated``."""
    create_rate_per_min: float = Field(default=60.0, gt=0)
    create_burst: int = Field(default=10, ge=1)
    """Creates allowed back to back before ``create_rate_per_min`` applies."""
    proxy_domain: str | None = None
    """Serve ``{port}-{sandbox id}.{proxy_domain}`` as the port proxy (wildcard DNS to us)."""
    tenant_quota: dict[str, float | None] = Field(default_factory=dict)
    """Every tenant's limits, e.g. ``{"max_sandboxes": 20, "create_rate_per_min": 60}``
    (fields of :class:`sietch.core.quotas.Quota`); ``sietch tenants set`` overrides them
    for one tenant, limit by limit. Default: unlimited."""

    # -- scale-out (see sietch.cluster; README "Scale out") ----------------------------
    role: Literal["standalone", "node", "gateway"] = "standalone"
    """standalone: one machine, as ever. node: the same server, registered in the cluster's
    catalog and serving only its internal port. gateway: no VMs; the public API, forwarded
    to the node holding each sandbox (``sietch serve --node`` / ``--gateway``)."""
    catalog_url: str | None = None
    """The cluster's catalog, ``postgresql://user:password@host/db`` (node and gateway)."""
    cluster_secret: SecretStr | None = None
    """What nodes and gateways authenticate to each other with (node and gateway)."""
    node_name: str = Field(default_factory=socket.gethostname)
    node_url: str | None = None
    """Where gateways reach this node's internal API, e.g. ``http://10.0.0.5:7001``;
    default: ``http://<host>:<internal_port>``."""
    internal_port: int = Field(default=7001, ge=1, le=65535)
    """A node's internal API: accepts only the cluster secret, refuses public API keys."""
    heartbeat_s: float = Field(default=2.0, gt=0)
    node_timeout_s: float = Field(default=10.0, gt=0)
    """A node silent this long is unreachable: its sandboxes are ``lost`` until it returns."""
    placement_candidates: int = Field(default=2, ge=1)
    """Nodes drawn at random for a create; the least allocated of them (memory, vCPUs,
    slots) wins."""

    @property
    def advertised_node_url(self) -> str:
        return self.node_url or f"http://{self.host}:{self.internal_port}"

    @property
    def api_keys_path(self) -> Path:
        return self.api_key_file or self.state_dir / "api_keys"

    @property
    def template_cache_path(self) -> Path:
        return self.template_cache_dir or self.cache_dir / "templates"

    @property
    def tenants_path(self) -> Path:
        """Tenants, their API keys (hashed) and quotas: ``sietch keys`` / ``sietch tenants``."""
        return self.state_dir / "tenants.db"

    @model_validator(mode="after")
    def _check_limits(self) -> Settings:
        if not self.auth and not is_loopback(self.host):
            raise ValueError(
                f"refusing to serve without authentication on {self.host!r}: "
                "auth may only be switched off on a loopback address"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("HTTPS needs both a certificate (tls_cert) and its key (tls_key)")
        if not 0 < self.default_vcpus <= self.max_vcpus:
            raise ValueError("default_vcpus must be between 1 and max_vcpus")
        if not self.min_memory_mib <= self.default_memory_mib <= self.max_memory_mib:
            raise ValueError("default_memory_mib must be within min/max_memory_mib")
        if not 0 < self.default_disk_mib <= self.max_disk_mib:
            raise ValueError("default_disk_mib must be between 1 and max_disk_mib")
        if self.role != "standalone":
            if not self.catalog_url:
                raise ValueError(f"a {self.role} needs the cluster's catalog (catalog_url)")
            if self.cluster_secret is None or len(self.cluster_secret.get_secret_value()) < 16:
                raise ValueError(f"a {self.role} needs a cluster_secret of 16 characters or more")
        return self


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
