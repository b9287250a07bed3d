"""Traffic endpoints for the lab, run inside a namespace with ``ip netns exec``.

``serve`` answers every TCP connection with ``<name> <peer-address>`` so the client learns
both who it reached and how it was seen (proving DNAT and masquerade). ``connect`` exits 0
when it got an answer and 1 otherwise, printing why (refused, no answer).
"""

from __future__ import annotations

import argparse
import contextlib
import selectors
import socket
import sys


def serve(name: str, ports: list[int], host: str) -> int:
    selector = selectors.DefaultSelector()
    for port in ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(16)
        selector.register(sock, selectors.EVENT_READ)
    print(f"{name} listening on {ports}", flush=True)
    while True:
        for key, _ in selector.select():
            listener = key.fileobj
            assert isinstance(listener, socket.socket)
            conn, peer = listener.accept()
            with conn, contextlib.suppress(OSError):
                conn.sendall(f"{name} {peer[0]}\n".encode())


def connect(host: str, port: int, timeout: float, source: str | None) -> int:
    try:
        with socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0) if source else None
        ) as sock:
            sock.settimeout(timeout)
            data = sock.recv(256)
    except TimeoutError:
        print(f"no answer within {timeout:g} s (filtered)")
        return 1
    except ConnectionRefusedError:
        print("refused")
        return 1
    except OSError as exc:
        print(f"error: {exc.strerror or exc}")
        return 1
    print(data.decode(errors="replace").strip())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="energyhub_lab.probe")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--name", required=True)
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--port", type=int, action="append", required=True)
    c = sub.add_parser("connect")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("--timeout", type=float, default=2.0)
    c.add_argument("--source")
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        return serve(args.name, args.port, args.host)
    return connect(args.host, args.port, args.timeout, args.source)


if __name__ == "__main__":
    sys.exit(main())
