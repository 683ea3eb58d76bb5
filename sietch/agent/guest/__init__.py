"""The guest agent: PID 1 of every sandbox VM, serving the host over one port.

It runs from the read-only tools disk with its own Python, so it may import
only the standard library and :mod:`sietch.agent.protocol`. Start it with
``python3 -m sietch.agent.guest`` (see :mod:`sietch.agent.guest.__main__`).

Modules, each with one job:

``transport``  finds and drives the byte stream (virtio-serial port or, for
               development, a unix socket) and notices the host come and go.
``mux``        framing, dispatch of frames to streams, the one writer queue.
``stream``     one stream: inbox, send queue, credits both ways.
``ops``        the operation table and the light operations (hello, shutdown).
``process``    one command the agent started: output rings, stdin, signals.
``table``      spawning commands, and the table of agent-started processes.
``execops``    the exec/attach/signal/wait/processes operations.
``files``      file operations.
``reaper``     the single SIGCHLD reaper that hands exit statuses out.
``users``      /etc/passwd and /etc/group lookups (no NSS in a foreign rootfs).
``init``       PID-1 duties: mounts, hostname, network, power off.
``errors``     the error codes operations report.
"""

AGENT_VERSION = "0.1.0"

__all__ = ["AGENT_VERSION"]
