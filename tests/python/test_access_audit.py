"""The audit log's guarantees against the real binary: a log that verifies, then fails at the
edited line after one byte changes; and a device that cannot write stops every request.
"""

import os
import shutil
import subprocess

import pytest
import requests
from hvac import exceptions

from access_harness import Audited


def verify(path):
    done = subprocess.run(
        [os.environ["ARCA_BIN"], "audit", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


def test_one_edited_byte_is_found_at_its_line(start_arca, tmp_path):
    vault = Audited(start_arca)
    client = vault.client
    client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    for i in range(5):
        value = vault.remember(f"tamper-test-value-{i}")
        client.secrets.kv.v2.create_or_update_secret(f"s{i}", {"v": value})
        client.secrets.kv.v2.read_secret_version(f"s{i}", raise_on_deleted_version=True)
    text = vault.check_audit_log()
    lines = text.splitlines(keepends=True)
    assert len(lines) >= 20

    code, out, _ = verify(vault.audit_file)
    assert code == 0 and f"{len(lines)} lines" in out

    # One byte of line 7 changed: a digit of its remote address, inside a value.
    edited = tmp_path / "edited.log"
    target = lines[6]
    pos = target.index("127.0.0.1")
    lines_edited = lines[:6] + [target[:pos] + "128" + target[pos + 3:]] + lines[7:]
    edited.write_text("".join(lines_edited))
    code, _, err = verify(edited)
    assert code == 1
    assert "line 7" in err

    # A line removed: the next one no longer chains.
    removed = tmp_path / "removed.log"
    removed.write_text("".join(lines[:3] + lines[4:]))
    code, _, err = verify(removed)
    assert code == 1 and "line 4" in err and "chain" in err

    # Every single-byte change of one line is caught at that line.
    for pos in range(0, len(lines[2]) - 1, 7):
        line = lines[2]
        flipped = line[:pos] + ("x" if line[pos] != "x" else "y") + line[pos + 1:]
        edited.write_text("".join(lines[:2] + [flipped] + lines[3:]))
        code, _, err = verify(edited)
        assert code == 1 and "line 3" in err, (pos, err)

    code, _, err = verify(tmp_path / "missing.log")
    assert code == 2


def test_a_device_that_cannot_write_stops_every_request(start_arca):
    # /dev/full accepts the open and fails every write (ENOSPC). The seal ceremony runs while
    # sealed (not audited); after it, nothing is served.
    vault = Audited(start_arca, audit_path="/dev/full")
    with pytest.raises(exceptions.InternalServerError):
        vault.client.auth.token.lookup_self()
    r = vault.raw("POST", "auth/token/create", {"policies": ["x"]})
    assert r.status_code == 500
    assert r.json() == {"errors": ["internal error"]}
    # The token was not created: nothing ran behind the failed audit line.
    r = vault.raw("POST", "sys/policies/acl/x", {"policy": 'path "x" { capabilities = ["read"] }'})
    assert r.status_code == 500
    # Unauthenticated status endpoints still answer (health checks must see the outage).
    health = requests.get(f"{vault.url}/v1/sys/health", timeout=30)
    assert health.status_code == 200 and health.json()["sealed"] is False
