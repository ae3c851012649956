"""Out of file descriptors: the listener logs, backs off and keeps accepting once there is room.

The daemon runs with RLIMIT_NOFILE lowered to a few dozen, and is flooded with more connections
than it can open files for (trio's ``serve_listeners`` does the same for EMFILE).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from security_harness import Rpc, running

NOFILE = 48


def test_the_listener_survives_running_out_of_file_descriptors(tmp_path: Path) -> None:
    with running(tmp_path, nofile=NOFILE) as daemon:
        normal = Rpc(daemon.port)
        assert normal.code("hello") == "ok"
        flood = []
        try:
            for _ in range(NOFILE * 2):
                # The kernel completes these handshakes in the backlog, accepted or not.
                sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
                sock.sendall(b"\x91")  # the start of a message, never finished
                flood.append(sock)
            record = daemon.wait_for("accept failed; retrying")
            assert "Too many open files" in record["error"]
            # Meanwhile the connections it has keep working.
            assert normal.code("ping") == "ok"
            assert daemon.open_fds() <= NOFILE
            time.sleep(0.3)
            assert daemon.alive()
        finally:
            for sock in flood:
                sock.close()
        # Once the flood is gone the backlog drains, and new clients get in.
        deadline = time.monotonic() + 10
        while True:
            try:
                fresh = Rpc(daemon.port, timeout=1)
                assert fresh.code("ping") == "ok"
                break
            except (ConnectionError, OSError):
                assert time.monotonic() < deadline, "no new connection was accepted"
                time.sleep(0.1)
        assert normal.code("ping") == "ok"
        # Backing off: about ten log lines a second, not a busy loop.
        failures = daemon.records("accept failed; retrying")
        assert len(failures) < 200
        assert daemon.alive()
