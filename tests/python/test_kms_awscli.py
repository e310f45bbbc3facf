"""The aws CLI (awscli, the real one from the test venv) and arca's own `arca kms` CLI against
a development server, with nothing but the endpoint (and dummy credentials) configured."""

import base64
import json
import os
import subprocess

import pytest

from kms_harness import Servers, aws_cli, aws_cli_env, reset

TIMEOUT = 120


@pytest.fixture(scope="module")
def server():
    group = Servers()
    yield group.dev()
    group.close()


@pytest.fixture
def env(server, tmp_path):
    reset(server.addr)
    yield aws_cli_env(server.addr, tmp_path)
    reset(server.addr)


def aws(server, env, *args, check=True):
    return aws_cli(server.addr, env, "kms", *args, check=check)


def arca(env, *args, input_bytes=None):
    run = subprocess.run(
        [os.environ["ARCA_BIN"], "kms", *args],
        env=env,
        capture_output=True,
        input=input_bytes,
        timeout=TIMEOUT,
    )
    return run


def test_aws_cli_round_trip(server, env, tmp_path):
    key = aws(server, env, "create-key", "--description", "cli")["KeyMetadata"]
    aws(server, env, "create-alias", "--alias-name", "alias/cli", "--target-key-id", key["KeyId"])
    assert aws(server, env, "describe-key", "--key-id", "alias/cli")["KeyMetadata"]["KeyId"] == key["KeyId"]
    listed = aws(server, env, "list-keys")["Keys"]
    assert [k["KeyId"] for k in listed] == [key["KeyId"]]
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x00binary secret\xff")
    out = aws(
        server, env, "encrypt", "--key-id", "alias/cli",
        "--plaintext", f"fileb://{secret}",
        "--encryption-context", "app=cli",
    )
    assert out["KeyId"] == key["Arn"]
    blob = tmp_path / "blob.bin"
    blob.write_bytes(base64.b64decode(out["CiphertextBlob"]))
    back = aws(
        server, env, "decrypt", "--ciphertext-blob", f"fileb://{blob}",
        "--encryption-context", "app=cli",
    )
    assert base64.b64decode(back["Plaintext"]) == b"\x00binary secret\xff"
    data_key = aws(server, env, "generate-data-key", "--key-id", key["KeyId"], "--key-spec", "AES_256")
    assert len(base64.b64decode(data_key["Plaintext"])) == 32
    aws(server, env, "enable-key-rotation", "--key-id", key["KeyId"])
    assert aws(server, env, "get-key-rotation-status", "--key-id", key["KeyId"])["KeyRotationEnabled"] is True
    aws(server, env, "rotate-key-on-demand", "--key-id", key["KeyId"])
    # The blob made before the rotation still decrypts.
    again = aws(server, env, "decrypt", "--ciphertext-blob", f"fileb://{blob}", "--encryption-context", "app=cli")
    assert base64.b64decode(again["Plaintext"]) == b"\x00binary secret\xff"
    random = aws(server, env, "generate-random", "--number-of-bytes", "16")
    assert len(base64.b64decode(random["Plaintext"])) == 16


def test_aws_cli_reports_aws_errors(server, env, tmp_path):
    key = aws(server, env, "create-key")["KeyMetadata"]["KeyId"]
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"this is not a ciphertext blob")
    run = aws(server, env, "decrypt", "--ciphertext-blob", f"fileb://{junk}", check=False)
    assert run.returncode != 0 and "InvalidCiphertextException" in run.stderr
    run = aws(server, env, "describe-key", "--key-id", "alias/nope", check=False)
    assert run.returncode != 0 and "NotFoundException" in run.stderr
    aws(server, env, "disable-key", "--key-id", key)
    run = aws(server, env, "encrypt", "--key-id", key, "--plaintext", "fileb:///dev/null", check=False)
    # An empty plaintext is refused before the key state matters.
    assert run.returncode != 0
    run = aws(
        server, env, "generate-data-key", "--key-id", key, "--key-spec", "AES_256", check=False
    )
    assert run.returncode != 0 and "DisabledException" in run.stderr
    run = aws(server, env, "schedule-key-deletion", "--key-id", key, "--pending-window-in-days", "3", check=False)
    assert run.returncode != 0 and "ValidationException" in run.stderr


def test_arca_kms_cli(server, env):
    created = arca(env, "create-key", "--description", "from arca", "--alias", "alias/arca-cli")
    assert created.returncode == 0, created.stderr
    lines = dict(line.split(None, 1) for line in created.stdout.decode().splitlines())
    key_id = lines["KeyId"].strip()
    listed = arca(env, "list-keys")
    assert listed.returncode == 0 and key_id in listed.stdout.decode()
    described = arca(env, "describe-key", "--key-id", "alias/arca-cli", "--format", "json")
    assert json.loads(described.stdout)["KeyMetadata"]["KeyId"] == key_id
    encrypted = arca(
        env, "encrypt", "--key-id", "alias/arca-cli", "--encryption-context", "a=b",
        input_bytes=b"from stdin",
    )
    assert encrypted.returncode == 0, encrypted.stderr
    blob = encrypted.stdout.decode().strip()
    decrypted = arca(env, "decrypt", "--ciphertext-blob", blob, "--encryption-context", "a=b")
    assert decrypted.returncode == 0, decrypted.stderr
    assert decrypted.stdout == b"from stdin"
    wrong = arca(env, "decrypt", "--ciphertext-blob", blob)
    assert wrong.returncode == 1 and b"InvalidCiphertextException" in wrong.stderr
    data_key = arca(env, "generate-data-key", "--key-id", key_id, "--format", "json")
    out = json.loads(data_key.stdout)
    assert len(base64.b64decode(out["Plaintext"])) == 32
    unwrapped = arca(env, "decrypt", "--ciphertext-blob", out["CiphertextBlob"], "--base64")
    assert unwrapped.stdout.decode().strip() == out["Plaintext"]
    missing_creds = {k: v for k, v in env.items() if not k.startswith("AWS_ACCESS")}
    run = arca(missing_creds, "list-keys")
    assert run.returncode == 1 and b"AWS_ACCESS_KEY_ID" in run.stderr
