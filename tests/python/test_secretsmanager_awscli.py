"""The aws CLI (awscli, the real one from the test venv) and arca's own `arca secrets` CLI
against a development server's Secrets Manager API, with nothing but the endpoint (and dummy
credentials) configured."""

import json
import os
import re
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
    return aws_cli(server.addr, env, "secretsmanager", *args, check=check)


def aws_error(server, env, *args) -> str:
    """Runs a command that must fail; returns the AWS error code the CLI printed."""
    run = aws(server, env, *args, check=False)
    assert run.returncode != 0, run.stdout
    found = re.search(r"An error occurred \((\w+)\)", run.stderr)
    assert found, run.stderr
    return found.group(1)


def arca(env, *args, input_bytes=None):
    return subprocess.run(
        [os.environ["ARCA_BIN"], "secrets", *args],
        env=env,
        capture_output=True,
        input=input_bytes,
        timeout=TIMEOUT,
    )


def test_aws_cli_lifecycle(server, env, tmp_path):
    created = aws(server, env, "create-secret", "--name", "cli/db", "--secret-string", "first",
                  "--description", "from the cli", "--tags", "Key=team,Value=a")
    assert created["Name"] == "cli/db"
    got = aws(server, env, "get-secret-value", "--secret-id", created["ARN"])
    assert got["SecretString"] == "first" and got["VersionStages"] == ["AWSCURRENT"]
    put = aws(server, env, "put-secret-value", "--secret-id", "cli/db", "--secret-string", "second")
    assert aws(server, env, "get-secret-value", "--secret-id", "cli/db")["SecretString"] == "second"
    previous = aws(server, env, "get-secret-value", "--secret-id", "cli/db",
                   "--version-stage", "AWSPREVIOUS")
    assert previous["SecretString"] == "first"
    described = aws(server, env, "describe-secret", "--secret-id", "cli/db")
    assert described["Description"] == "from the cli"
    assert described["VersionIdsToStages"][put["VersionId"]] == ["AWSCURRENT"]
    listed = aws(server, env, "list-secrets", "--filters", "Key=name,Values=cli/")
    assert [s["Name"] for s in listed["SecretList"]] == ["cli/db"]
    versions = aws(server, env, "list-secret-version-ids", "--secret-id", "cli/db")["Versions"]
    assert len(versions) == 2
    aws(server, env, "update-secret-version-stage", "--secret-id", "cli/db",
        "--version-stage", "AWSCURRENT", "--move-to-version-id", created["VersionId"],
        "--remove-from-version-id", put["VersionId"])
    assert aws(server, env, "get-secret-value", "--secret-id", "cli/db")["SecretString"] == "first"
    aws(server, env, "update-secret", "--secret-id", "cli/db", "--description", "changed")
    aws(server, env, "tag-resource", "--secret-id", "cli/db", "--tags", "Key=env,Value=prod")
    aws(server, env, "untag-resource", "--secret-id", "cli/db", "--tag-keys", "team")
    tags = aws(server, env, "describe-secret", "--secret-id", "cli/db")["Tags"]
    assert tags == [{"Key": "env", "Value": "prod"}]
    binary = tmp_path / "secret.bin"
    binary.write_bytes(b"\x00\x01binary\xff")
    aws(server, env, "create-secret", "--name", "cli/bin", "--secret-binary", f"fileb://{binary}")
    out = aws(server, env, "get-secret-value", "--secret-id", "cli/bin")
    import base64

    assert base64.b64decode(out["SecretBinary"]) == b"\x00\x01binary\xff"
    batch = aws(server, env, "batch-get-secret-value", "--secret-id-list", "cli/db", "cli/bin", "nope")
    assert len(batch["SecretValues"]) == 2
    assert batch["Errors"][0]["ErrorCode"] == "ResourceNotFoundException"
    password = aws(server, env, "get-random-password", "--password-length", "40",
                   "--exclude-punctuation")["RandomPassword"]
    assert len(password) == 40 and password.isalnum()
    aws(server, env, "put-resource-policy", "--secret-id", "cli/db",
        "--resource-policy", json.dumps({"allowed_cidrs": ["127.0.0.0/8", "::1/128"]}))
    policy = json.loads(aws(server, env, "get-resource-policy", "--secret-id", "cli/db")["ResourcePolicy"])
    assert policy["allowed_cidrs"] == ["127.0.0.0/8", "::1/128"]
    aws(server, env, "delete-resource-policy", "--secret-id", "cli/db")
    rotated = aws(server, env, "rotate-secret", "--secret-id", "cli/db")
    assert aws(server, env, "get-secret-value", "--secret-id", "cli/db")["VersionId"] == rotated["VersionId"]
    aws(server, env, "rotate-secret", "--secret-id", "cli/db", "--rotation-rules",
        "AutomaticallyAfterDays=30", "--no-rotate-immediately")
    assert aws(server, env, "describe-secret", "--secret-id", "cli/db")["RotationEnabled"] is True
    aws(server, env, "cancel-rotate-secret", "--secret-id", "cli/db")
    assert aws(server, env, "describe-secret", "--secret-id", "cli/db")["RotationEnabled"] is False
    deleted = aws(server, env, "delete-secret", "--secret-id", "cli/db", "--recovery-window-in-days", "7")
    assert "DeletionDate" in deleted
    assert aws_error(server, env, "get-secret-value", "--secret-id", "cli/db") == "InvalidRequestException"
    aws(server, env, "restore-secret", "--secret-id", "cli/db")
    aws(server, env, "delete-secret", "--secret-id", "cli/db", "--force-delete-without-recovery")
    assert aws_error(server, env, "describe-secret", "--secret-id", "cli/db") == "ResourceNotFoundException"


def test_aws_cli_errors(server, env, tmp_path):
    aws(server, env, "create-secret", "--name", "e", "--secret-string", "x")
    big = tmp_path / "big.txt"
    big.write_text("x" * 65537)
    cases = [
        (("get-secret-value", "--secret-id", "missing"), "ResourceNotFoundException"),
        (("get-secret-value", "--secret-id", "e", "--version-id", "0" * 32), "ResourceNotFoundException"),
        (("get-secret-value", "--secret-id", "e", "--version-stage", "NOPE"), "ResourceNotFoundException"),
        (("create-secret", "--name", "e2", "--secret-string", "a", "--secret-binary", "Yg=="),
         "InvalidParameterException"),
        (("create-secret", "--name", "e3", "--secret-string", f"file://{big}"), "ValidationException"),
        (("put-secret-value", "--secret-id", "e", "--secret-string", f"file://{big}"), "ValidationException"),
        (("create-secret", "--name", "e", "--secret-string", "y"), "ResourceExistsException"),
        (("delete-secret", "--secret-id", "e", "--recovery-window-in-days", "3"), "InvalidParameterException"),
        (("delete-secret", "--secret-id", "e", "--recovery-window-in-days", "31"), "InvalidParameterException"),
        (("delete-secret", "--secret-id", "e", "--recovery-window-in-days", "10",
          "--force-delete-without-recovery"), "InvalidParameterException"),
        (("update-secret-version-stage", "--secret-id", "e", "--version-stage", "AWSCURRENT",
          "--move-to-version-id", "1" * 32), "InvalidParameterException"),
        (("put-resource-policy", "--secret-id", "e", "--resource-policy", "not json"),
         "MalformedPolicyDocumentException"),
    ]
    for args, code in cases:
        assert aws_error(server, env, *args) == code, args
    listed = aws(server, env, "list-secrets")["SecretList"]
    assert [s["Name"] for s in listed] == ["e"], "nothing was created"
    assert aws(server, env, "get-secret-value", "--secret-id", "e")["SecretString"] == "x"
    assert len(aws(server, env, "list-secret-version-ids", "--secret-id", "e")["Versions"]) == 1


def test_arca_secrets_cli(server, env, tmp_path):
    made = arca(env, "create", "app/one", "--value-file", "-", "--tag", "team=a", input_bytes=b"hello")
    assert made.returncode == 0, made.stderr
    assert b"arn:aws:secretsmanager:us-east-1:123456789012:secret:app/one-" in made.stdout
    got = arca(env, "get", "app/one")
    assert got.returncode == 0 and got.stdout == b"hello"
    value_file = tmp_path / "v.txt"
    value_file.write_text("second")
    assert arca(env, "put", "app/one", "--value-file", str(value_file)).returncode == 0
    assert arca(env, "get", "app/one").stdout == b"second"
    assert arca(env, "get", "app/one", "--version-stage", "AWSPREVIOUS").stdout == b"hello"
    staged = arca(env, "put", "app/one", "--value", "third", "--stage", "AWSPENDING", "--format", "json")
    assert json.loads(staged.stdout)["VersionStages"] == ["AWSPENDING"]
    assert arca(env, "get", "app/one").stdout == b"second"
    binary = tmp_path / "b.bin"
    binary.write_bytes(b"\x00\xffraw")
    assert arca(env, "create", "app/bin", "--binary-file", str(binary)).returncode == 0
    assert arca(env, "get", "app/bin").stdout == b"\x00\xffraw"
    assert arca(env, "get", "app/bin", "--base64").stdout.strip() == b"AP9yYXc="
    # Typed generation.
    key = arca(env, "create", "app/key", "--type", "api_key")
    assert key.returncode == 0, key.stderr
    api_key = json.loads(arca(env, "get", "app/key").stdout)["api_key"]
    assert re.fullmatch(r"ak_[0-9A-Za-z]{32}_[0-9a-f]{8}", api_key)
    db = arca(env, "create", "app/db", "--type", "database_credentials", "--param", "host=db.internal",
              "--param", "port=6543", "--param", "username=app", "--param", "dbname=app")
    assert db.returncode == 0, db.stderr
    creds = json.loads(arca(env, "get", "app/db").stdout)
    assert creds["host"] == "db.internal" and creds["port"] == 6543 and len(creds["password"]) == 32
    described = arca(env, "describe", "app/db")
    assert b"database_credentials" in described.stdout and creds["password"].encode() not in described.stdout
    as_json = json.loads(arca(env, "describe", "app/db", "--format", "json").stdout)
    assert as_json["ArcaGeneration"]["host"] == "db.internal"
    listed = arca(env, "list", "--filter", "name=app/")
    assert listed.stdout.decode().split() == [
        "app/bin", "generic", "app/db", "database_credentials", "app/key", "api_key", "app/one", "generic"
    ]
    rotated = arca(env, "rotate", "app/key", "--every-days", "30")
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(arca(env, "get", "app/key").stdout)["api_key"] != api_key
    assert b"enabled" in arca(env, "describe", "app/key").stdout
    assert arca(env, "tag", "app/one", "env=prod").returncode == 0
    assert arca(env, "untag", "app/one", "team").returncode == 0
    tags = json.loads(arca(env, "describe", "app/one", "--format", "json").stdout)["Tags"]
    assert tags == [{"Key": "env", "Value": "prod"}]
    password = arca(env, "random-password", "--length", "24", "--exclude-punctuation")
    assert len(password.stdout.strip()) == 24 and password.stdout.strip().isalnum()
    # Deletion, the error on access, restore, forced deletion.
    assert arca(env, "delete", "app/one", "--recovery-window-days", "7").returncode == 0
    refused = arca(env, "get", "app/one")
    assert refused.returncode == 1 and b"InvalidRequestException" in refused.stderr
    assert arca(env, "list", "--include-planned-deletion").stdout.count(b"app/one") == 1
    assert b"app/one" not in arca(env, "list").stdout
    assert arca(env, "restore", "app/one").returncode == 0
    assert arca(env, "get", "app/one").stdout == b"second"
    bad_window = arca(env, "delete", "app/one", "--recovery-window-days", "3")
    assert bad_window.returncode == 1 and b"InvalidParameterException" in bad_window.stderr
    assert arca(env, "delete", "app/one", "--force").returncode == 0
    missing = arca(env, "get", "app/one")
    assert missing.returncode == 1 and b"ResourceNotFoundException" in missing.stderr
    # A value never appears in an error or on the command line it was not asked for.
    both = arca(env, "put", "app/bin", "--value", "x", "--binary-file", str(binary))
    assert both.returncode != 0
