"""Fixtures of the client tests: each test gets its own real arca server.

`tests/python_clients.rs` runs pytest here with ARCA_BIN set to the binary cargo built. Every
server listens on 127.0.0.1:0 in its own temporary folder, reports its address on stdout,
and is stopped by its PID (SIGTERM, then SIGKILL if it does not exit) when the test ends.
"""

import json
import os
import queue
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

START_TIMEOUT = 60
STOP_TIMEOUT = 20


class ArcaServer:
    """A running `arca server --data-dir DIR --listen 127.0.0.1:0`."""

    def __init__(self, data_dir: Path, config: Path | None = None):
        binary = os.environ.get("ARCA_BIN")
        if not binary:
            raise RuntimeError("ARCA_BIN must name the arca binary (tests/python_clients.rs sets it)")
        self.log_path = data_dir.parent / (data_dir.name + ".log")
        self._log = open(self.log_path, "wb")
        store = ["--config", str(config)] if config else ["--data-dir", str(data_dir)]
        self.proc = subprocess.Popen(
            [binary, "server", *store, "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        lines: queue.Queue = queue.Queue()

        def read_stdout():
            # Keep draining stdout so the server never blocks on a full pipe.
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read_stdout, daemon=True).start()
        try:
            while True:
                line = lines.get(timeout=START_TIMEOUT)
                if line is None:
                    raise RuntimeError(f"arca server exited before listening:\n{self.logs()}")
                if line.startswith("arca listening on "):
                    self.addr = line.removeprefix("arca listening on ").strip()
                    break
        except BaseException:
            self.stop()
            raise

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM by PID, wait, SIGKILL if needed; returns the exit code."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_arca():
    """A factory: each call starts one more server (Shamir over a data folder, or with
    `seal`, the body of a `[seal]` table in which `$DIR` stands for the test's temporary
    folder, from a configuration file); all are stopped after the test, and each must have
    shut down cleanly on SIGTERM."""
    servers = []
    with tempfile.TemporaryDirectory(prefix="arca-client-test-") as tmp:

        def start(seal: str | None = None) -> ArcaServer:
            data = Path(tmp) / f"data-{len(servers)}"
            config = None
            if seal is not None:
                config = Path(tmp) / f"arca-{len(servers)}.toml"
                seal = seal.replace("$DIR", tmp)
                config.write_text(f"[storage]\npath = {json.dumps(str(data))}\n\n[seal]\n{seal}\n")
            server = ArcaServer(data, config)
            servers.append(server)
            return server

        try:
            yield start
        finally:
            codes = [server.stop() for server in servers]
        assert codes == [0] * len(servers), f"unclean shutdown: {codes}"


@pytest.fixture
def arca(start_arca) -> ArcaServer:
    """One server for the test."""
    return start_arca()
