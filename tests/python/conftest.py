"""Fixtures of the client tests: each test gets its own real arca server.

`tests/python_clients.rs` runs pytest here with ARCA_BIN set to the binary cargo built. Every
server listens on 127.0.0.1:0 in its own temporary folder, reports its address on stdout,
and is stopped by its PID (SIGTERM, then SIGKILL if it does not exit) when the test ends.
"""

import json
import os
import tempfile
import uuid
from pathlib import Path

import pytest
import requests

from arca_process import ArcaProcess



class ArcaServer(ArcaProcess):
    """A running `arca server --data-dir DIR` (or `--config FILE`) on 127.0.0.1:0."""

    def __init__(self, data_dir: Path, config: Path | None = None):
        store = ["--config", str(config)] if config else ["--data-dir", str(data_dir)]
        super().__init__(store, data_dir.parent / (data_dir.name + ".log"))


# The AWS back-end tests (tests/aws_backend.rs) run these same files over DynamoDB on moto's
# server: ARCA_TEST_STORAGE is then the body of the `[storage]` table, in which `$NS` stands
# for a namespace of each server's own, and ARCA_TEST_SEAL the `[seal]` body of servers that
# ask for no seal of their own.
TEST_STORAGE = os.environ.get("ARCA_TEST_STORAGE")
TEST_SEAL = os.environ.get("ARCA_TEST_SEAL")


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
            seal = seal if seal is not None else TEST_SEAL
            if seal is not None or TEST_STORAGE:
                config = Path(tmp) / f"arca-{len(servers)}.toml"
                storage = f"path = {json.dumps(str(data))}"
                if TEST_STORAGE:
                    storage = TEST_STORAGE.replace("$NS", f"ns-{uuid.uuid4().hex[:16]}")
                text = f"[storage]\n{storage}\n"
                if seal is not None:
                    text += f"\n[seal]\n{seal.replace('$DIR', tmp)}\n"
                config.write_text(text)
            server = ArcaServer(data, config)
            servers.append(server)
            if TEST_STORAGE:
                # The run over another store must really be on it.
                status = requests.get(f"{server.addr}/v1/sys/seal-status", timeout=30).json()
                assert status["storage_type"] == "dynamodb", status
                if TEST_SEAL and seal == TEST_SEAL and "awskms" in TEST_SEAL:
                    assert status["type"] == "awskms", status
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
