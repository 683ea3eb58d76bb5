"""Run inside a guest: an RFB handshake with the VNC server, printed as JSON.

``python3 rfb_probe.py HOST PORT [PASSWORD]``: the server's banner and its
security types; with a password, the outcome of VNC authentication with it.
The guest's python3 has no DES, so openssl's (legacy provider) does the
challenge response.
"""

import json
import socket
import subprocess
import sys


def des(password: bytes, challenge: bytes) -> bytes:
    # VNC's DES key is the password, 8 bytes, each byte's bits reversed.
    key = bytes(int(f"{b:08b}"[::-1], 2) for b in password.ljust(8, b"\0")[:8])
    argv = ["openssl", "enc", "-des-ecb", "-nopad", "-provider", "legacy", "-K", key.hex()]
    return subprocess.run(argv, input=challenge, capture_output=True, check=True).stdout


def recv(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"server closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    report: dict[str, object] = {}
    with socket.create_connection((host, port), timeout=10) as sock:
        report["banner"] = recv(sock, 12).decode().strip()
        sock.sendall(b"RFB 003.008\n")
        report["types"] = list(recv(sock, recv(sock, 1)[0]))
        if len(sys.argv) > 3:
            sock.sendall(bytes([2]))  # VncAuth
            sock.sendall(des(sys.argv[3].encode(), recv(sock, 16)))
            report["auth"] = "ok" if int.from_bytes(recv(sock, 4), "big") == 0 else "failed"
    print(json.dumps(report))


if __name__ == "__main__":
    main()
