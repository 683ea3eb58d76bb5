"""E2B compatibility: the ``e2b`` SDK works against ``sietch serve`` unchanged.

Two front doors on the main port:

- :mod:`.rest`, E2B's control plane (``/sandboxes``, ``/v2/sandboxes``), keyed by a Sietch
  API key in ``X-API-KEY``;
- :mod:`.envd`, the in-sandbox daemon's API (Connect RPC and ``/files``), reached by the
  requests that name a sandbox in ``E2b-Sandbox-Id`` (:class:`.routing.SandboxTraffic`
  re-addresses them), each carrying the sandbox's envd access token;
- :mod:`.services`, the ports of the image's own services (the code interpreter's).
"""

from sietch.server.e2b.envd import router as envd_router
from sietch.server.e2b.rest import router
from sietch.server.e2b.routing import SandboxTraffic
from sietch.server.e2b.services import router as service_router

__all__ = ["SandboxTraffic", "envd_router", "router", "service_router"]
