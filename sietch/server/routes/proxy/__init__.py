"""The port proxy: a web server in a sandbox, reached through the API's own address.

A user who can reach only the API port (same API key) talks to an exposed guest
port at ``/api/v1/sandboxes/{id}/ports/{port}/proxy/{path}``; the API key is not
passed on to the guest. One module per job:

- :mod:`.http_proxy` forwards an HTTP request and streams the answer back;
- :mod:`.ws_relay` relays a WebSocket on the same path, message by message;
- :mod:`.host_routes` serves ``{port}-{id}.{proxy_domain}`` as either, whatever its path;
- :mod:`.upstream` says where a proxied request goes and with which headers.
"""
