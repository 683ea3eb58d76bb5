"""Scale-out: one Sietch API over many machines (``sietch serve --node`` / ``--gateway``).

- :mod:`.catalog`: the cluster's source of truth in PostgreSQL (nodes, which node holds
  which sandbox, snapshot and image), its schema migrated by Alembic (:mod:`.migrate`);
  :mod:`.tenants`: tenants, keys and quotas there, behind the interface of
  :class:`sietch.core.tenants.TenantStore`.
- :mod:`.membership`: a node's registration and heartbeat; who is reachable.
- :mod:`.placement`: which node gets a new sandbox (best of K by free memory and CPU,
  tenant quotas cluster-wide, ``prefer_node``).

The gateway app that forwards the public API to nodes is :mod:`sietch.server.gateway`.
"""
