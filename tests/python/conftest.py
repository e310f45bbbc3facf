"""Fixtures of the client tests: each test gets its own real arca server.

`tests/python_clients.rs` runs pytest here with ARCA_BIN set to the binary cargo built. Every
server listens on 127.0.0.1:0 in its own temporary folder, reports its address on stdout,
and is stopped by its PID (SIGTERM, then SIGKILL if it does not exit) when the test ends.
"""

import json
import tempfile
from pathlib import Path

import pytest

from arca_process import ArcaProcess



class ArcaServer(ArcaProcess):
    """A running `arca server --data-dir DIR` (or `--config FILE`) on 127.0.0.1:0."""

    def __init__(self, data_dir: Path, config: Path | None = None):
        store = ["--config", str(config)] if config else ["--data-dir", str(data_dir)]
        super().__init__(store, data_dir.parent / (data_dir.name + ".log"))


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
