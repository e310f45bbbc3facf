"""Shared pieces of the access-layer tests (tokens, AppRole, policies, wrapping, audit).

Every server these tests start has an audit device writing to a file. A test registers each
secret value it writes or receives (`vault.remember(value)`); when the test ends, the audit
log must contain none of them, and `arca audit verify` must find its hash chain intact. So
the redaction is checked over everything the tests do, not over one hand-picked request.
"""

import json
import os
import subprocess
from pathlib import Path

import hvac
import requests


class Audited:
    """An initialised, unsealed server with an audit log, and an hvac client holding its
    root token."""

    def __init__(self, start_arca, audit_path: str = "$DIR/audit-{n}.log"):
        Audited.count = getattr(Audited, "count", 0) + 1
        self.audit_spec = audit_path.replace("{n}", str(Audited.count))
        self.server = start_arca(
            seal=f'kind = "shamir"\n\n[audit]\nfile_path = {json.dumps(self.audit_spec)}'
        )
        self.secrets: list[str] = []
        self.url = self.server.addr
        client = hvac.Client(url=self.url)
        init = client.sys.initialize(secret_shares=1, secret_threshold=1)
        client.sys.submit_unseal_key(init["keys"][0])
        self.root = init["root_token"]
        self.remember(self.root)
        self.remember(init["keys"][0])
        client.token = self.root
        self.client = client

    @property
    def audit_file(self) -> Path:
        # The fixture wrote $DIR into the configuration; find the file beside the data.
        return Path(self.server.log_path).parent / Path(self.audit_spec).name

    def remember(self, value):
        """Registers a secret value that must never appear in the audit log."""
        if value:
            self.secrets.append(str(value))
        return value

    def as_token(self, token: str) -> hvac.Client:
        return hvac.Client(url=self.url, token=token)

    def raw(self, method, path, body=None, token=None, headers=None, data=None):
        """One request as curl would send it; returns the requests.Response."""
        sent = {"X-Vault-Token": token if token is not None else self.root}
        sent.update(headers or {})
        if body is not None:
            data = json.dumps(body)
        return requests.request(method, f"{self.url}/v1/{path}", headers=sent, data=data, timeout=30)

    def check_audit_log(self):
        """No registered secret in the log; the chain verifies; returns the log text."""
        text = self.audit_file.read_text()
        assert text, "the audit log is empty"
        for secret in self.secrets:
            assert secret not in text, f"a secret value appears in the audit log: {secret[:4]}..."
        done = subprocess.run(
            [os.environ["ARCA_BIN"], "audit", "verify", str(self.audit_file)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "hash chain intact" in done.stdout
        return text
