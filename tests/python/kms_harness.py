"""Servers and clients for the KMS and transit client tests (imported by test_kms_*.py and
test_transit_hvac.py; kept apart from conftest.py, which belongs to the seal tests).

`tests/kms_clients.rs` runs pytest with ARCA_BIN set to the binary cargo built. Every server
listens on 127.0.0.1:0 in its own temporary folder, reports its address on stdout, and is
stopped by its PID (SIGTERM, then SIGKILL if it does not exit) when its fixture ends.
"""

import json
import os
import subprocess
import tempfile
from pathlib import Path

import boto3
import botocore.config
import requests

from arca_process import ArcaProcess

ROOT_TOKEN = "root-token-for-kms-tests"


class Server(ArcaProcess):
    """A running `arca server ... --listen 127.0.0.1:0`, started in its own folder."""

    def __init__(self, args: list[str], folder: Path):
        self.folder = folder
        super().__init__(args, folder / "server.log", cwd=folder)


class Servers:
    """Starts servers in one temporary folder and stops them all, checking clean exits."""

    def __init__(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="arca-kms-test-")
        self.root = Path(self._tmp.name)
        self.servers: list[Server] = []

    def dev(self) -> Server:
        """A development server: self-unsealed, root token ROOT_TOKEN, any AWS key accepted."""
        folder = self.root / f"s{len(self.servers)}"
        folder.mkdir()
        server = Server(
            ["--dev", "--data-dir", str(folder / "data"), "--dev-root-token", ROOT_TOKEN],
            folder,
        )
        self.servers.append(server)
        return server

    def sealed(self) -> Server:
        """A production-mode server over a fresh data folder (to be initialised)."""
        folder = self.root / f"s{len(self.servers)}"
        folder.mkdir()
        server = Server(["--data-dir", str(folder / "data")], folder)
        self.servers.append(server)
        return server

    def close(self):
        codes = [server.stop() for server in self.servers]
        self._tmp.cleanup()
        assert codes == [0] * len(codes), f"unclean shutdown: {codes}"


def kms_client(addr: str, region: str = "us-east-1", key_id: str = "test", secret: str = "test"):
    """boto3's KMS client pointed at arca, retries off so errors surface at once."""
    return boto3.client(
        "kms",
        endpoint_url=addr,
        region_name=region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def reset(addr: str):
    """moto's reset endpoint, which arca serves in development mode."""
    response = requests.post(f"{addr}/moto-api/reset", timeout=30)
    assert response.status_code == 200, response.text


def raw_kms(addr: str, operation: str, body: bytes, headers: dict | None = None):
    """POST / with a raw body (dev servers accept any signature)."""
    all_headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": f"TrentService.{operation}",
        "Authorization": "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/kms/aws4_request, "
        "SignedHeaders=host, Signature=" + "0" * 64,
    }
    all_headers.update(headers or {})
    return requests.post(f"{addr}/", data=body, headers=all_headers, timeout=30)


def initialise(server: Server) -> str:
    """Initialises and unseals a sealed server with one share; returns the root token."""
    init = requests.put(
        f"{server.addr}/v1/sys/init",
        json={"secret_shares": 1, "secret_threshold": 1},
        timeout=60,
    ).json()
    unseal = requests.put(
        f"{server.addr}/v1/sys/unseal", json={"key": init["keys"][0]}, timeout=60
    ).json()
    assert unseal["sealed"] is False, unseal
    return init["root_token"]


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def state_of(kms) -> str:
    """Everything a client can see of a region's KMS state, to check that nothing changed."""
    keys = kms.list_keys()["Keys"]
    described = [kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"] for k in keys]
    for d in described:
        d.pop("CreationDate", None)
        d.pop("DeletionDate", None)
    aliases = kms.list_aliases()["Aliases"]
    for a in aliases:
        a.pop("CreationDate", None)
        a.pop("LastUpdatedDate", None)
    return json.dumps([described, aliases], sort_keys=True, default=str)


# How long one aws CLI command may take (a debug server on a loaded machine).
AWS_CLI_TIMEOUT = 120


def aws_cli_env(addr: str, tmp_path: Path) -> dict:
    """The environment of an aws CLI (or `arca kms` / `arca secrets`) run against `addr`: the
    caller's environment without any AWS_ or ARCA_ variable, dummy credentials, config files
    of the test's own (so a developer's ~/.aws never leaks in), and one attempt per request."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ARCA_"))}
    environment.update(
        {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(tmp_path / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
            "AWS_MAX_ATTEMPTS": "1",
            "ARCA_ADDR": addr,
        }
    )
    return environment


def aws_cli(addr: str, env: dict, service: str, *args, check: bool = True):
    """Runs `aws --endpoint-url addr --output json <service> args...`. With `check`, asserts
    success and returns the parsed JSON answer ({} when empty); otherwise the completed run."""
    run = subprocess.run(
        ["aws", "--endpoint-url", addr, "--output", "json", service, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=AWS_CLI_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    if check:
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout) if run.stdout.strip() else {}
    return run
