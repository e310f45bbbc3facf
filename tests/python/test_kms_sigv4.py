"""SigV4 outside development mode: arca's own access keys, and every way a signature can be
wrong, against a production-mode (Shamir-sealed, then initialised) server."""

import datetime
import os
import subprocess

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

import botocore.auth
from kms_harness import Servers, error_code, initialise, kms_client


@pytest.fixture(scope="module")
def prod():
    group = Servers()
    server = group.sealed()
    token = initialise(server)
    yield server, token
    group.close()


def create_access_key(server, token):
    response = requests.post(
        f"{server.addr}/v1/sys/aws/access-keys",
        headers={"X-Vault-Token": token},
        json={"display_name": "ci"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    return data["access_key_id"], data["secret_access_key"]


def signed_post(addr, key_id, secret, body=b"{}", target="TrentService.ListKeys", region="us-east-1"):
    request = AWSRequest(
        method="POST",
        url=f"{addr}/",
        data=body,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target},
    )
    SigV4Auth(Credentials(key_id, secret), "kms", region).add_auth(request)
    return requests.post(f"{addr}/", data=body, headers=dict(request.headers.items()), timeout=30)


def test_access_keys_sign_requests(prod):
    server, token = prod
    key_id, secret = create_access_key(server, token)
    assert key_id.startswith("AKIA") and len(secret) == 40
    kms = kms_client(server.addr, key_id=key_id, secret=secret)
    key = kms.create_key(Description="signed")["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"v")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"v"
    # The region comes from the credential scope.
    west = kms_client(server.addr, region="ap-south-1", key_id=key_id, secret=secret)
    assert west.list_keys()["Keys"] == []
    listed = requests.get(
        f"{server.addr}/v1/sys/aws/access-keys", headers={"X-Vault-Token": token}, timeout=30
    ).json()["data"]
    assert key_id in listed["keys"]
    assert secret not in str(listed)


def test_access_key_policies_authorise_operations(prod):
    server, token = prod
    policy = 'path "aws/kms/ListKeys" { capabilities = ["update"] }\n' \
             'path "aws/kms/Describe*" { capabilities = ["update"] }'
    written = requests.put(
        f"{server.addr}/v1/sys/policies/acl/kms-read",
        headers={"X-Vault-Token": token},
        json={"policy": policy},
        timeout=30,
    )
    assert written.status_code in (200, 204), written.text
    response = requests.post(
        f"{server.addr}/v1/sys/aws/access-keys",
        headers={"X-Vault-Token": token},
        json={"display_name": "reader", "policies": ["kms-read"]},
        timeout=30,
    )
    data = response.json()["data"]
    assert data["policies"] == ["kms-read"]
    reader = kms_client(server.addr, key_id=data["access_key_id"], secret=data["secret_access_key"])
    keys = reader.list_keys()["Keys"]
    if keys:
        reader.describe_key(KeyId=keys[0]["KeyId"])
    for call in [lambda: reader.create_key(), lambda: reader.generate_random(NumberOfBytes=8)]:
        with pytest.raises(ClientError) as err:
            call()
        assert error_code(err) == "AccessDeniedException"
        assert "user/reader" in err.value.response["Error"]["Message"]


def test_bad_signatures_are_rejected(prod):
    server, token = prod
    key_id, secret = create_access_key(server, token)
    # A wrong secret: the signature does not match.
    wrong = kms_client(server.addr, key_id=key_id, secret=secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    with pytest.raises(ClientError) as err:
        wrong.list_keys()
    assert error_code(err) == "InvalidSignatureException"
    # An unknown access key.
    stranger = kms_client(server.addr, key_id="AKIAUNKNOWNUNKNOWN00", secret=secret)
    with pytest.raises(ClientError) as err:
        stranger.list_keys()
    assert error_code(err) == "UnrecognizedClientException"
    # "test"/"test" is accepted only by development servers.
    with pytest.raises(ClientError) as err:
        kms_client(server.addr).list_keys()
    assert error_code(err) == "UnrecognizedClientException"
    # A body changed after signing.
    request = AWSRequest(
        method="POST",
        url=f"{server.addr}/",
        data=b"{}",
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.ListKeys"},
    )
    SigV4Auth(Credentials(key_id, secret), "kms", "us-east-1").add_auth(request)
    tampered = requests.post(
        f"{server.addr}/", data=b'{"Limit": 1}', headers=dict(request.headers.items()), timeout=30
    )
    assert tampered.status_code == 400
    assert tampered.json()["__type"] == "InvalidSignatureException"
    # Signed for another service.
    request = AWSRequest(method="POST", url=f"{server.addr}/", data=b"{}",
                         headers={"X-Amz-Target": "TrentService.ListKeys"})
    SigV4Auth(Credentials(key_id, secret), "s3", "us-east-1").add_auth(request)
    other = requests.post(f"{server.addr}/", data=b"{}", headers=dict(request.headers.items()), timeout=30)
    assert other.json()["__type"] == "InvalidSignatureException"
    # No signature at all.
    bare = requests.post(
        f"{server.addr}/", data=b"{}", headers={"X-Amz-Target": "TrentService.ListKeys"}, timeout=30
    )
    assert bare.status_code == 400
    assert bare.headers["X-Amzn-ErrorType"] == "MissingAuthenticationTokenException"
    # The good key still works.
    assert signed_post(server.addr, key_id, secret).status_code == 200


def test_stale_dates_are_rejected(prod, monkeypatch):
    server, token = prod
    key_id, secret = create_access_key(server, token)
    now = datetime.datetime.now(datetime.timezone.utc)
    for skew in [datetime.timedelta(minutes=-20), datetime.timedelta(minutes=20)]:
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: now + skew)
        response = signed_post(server.addr, key_id, secret)
        assert response.status_code == 400
        body = response.json()
        assert body["__type"] == "InvalidSignatureException"
        assert "expired" in body["message"]
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: now + datetime.timedelta(minutes=5))
    assert signed_post(server.addr, key_id, secret).status_code == 200


def test_deleted_keys_stop_working(prod):
    server, token = prod
    key_id, secret = create_access_key(server, token)
    assert signed_post(server.addr, key_id, secret).status_code == 200
    deleted = requests.delete(
        f"{server.addr}/v1/sys/aws/access-keys/{key_id}", headers={"X-Vault-Token": token}, timeout=30
    )
    assert deleted.status_code == 204
    response = signed_post(server.addr, key_id, secret)
    assert response.json()["__type"] == "UnrecognizedClientException"


def test_access_key_endpoint_needs_the_root_token(prod):
    server, _ = prod
    for headers in [{}, {"X-Vault-Token": "not-a-token"}]:
        response = requests.post(
            f"{server.addr}/v1/sys/aws/access-keys", headers=headers, json={}, timeout=30
        )
        assert response.status_code == 403
        assert response.json() == {"errors": ["permission denied"]}


def test_reset_exists_only_in_development_mode(prod):
    server, _ = prod
    response = requests.post(f"{server.addr}/moto-api/reset", timeout=30)
    assert response.status_code == 404


def test_access_key_cli(prod, tmp_path):
    server, token = prod
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ARCA_"))}
    env.update({"ARCA_ADDR": server.addr, "ARCA_TOKEN": token})
    binary = os.environ["ARCA_BIN"]

    def run(*args, extra=None):
        return subprocess.run(
            [binary, "kms", *args], env={**env, **(extra or {})}, capture_output=True,
            text=True, timeout=60, stdin=subprocess.DEVNULL,
        )

    created = run("access-key", "create", "--display-name", "cli")
    assert created.returncode == 0, created.stderr
    pairs = dict(line.split("=", 1) for line in created.stdout.split())
    key_id, secret = pairs["AWS_ACCESS_KEY_ID"], pairs["AWS_SECRET_ACCESS_KEY"]
    listed = run("access-key", "list")
    assert listed.returncode == 0 and key_id in listed.stdout and secret not in listed.stdout
    creds = {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
    made = run("create-key", "--format", "json", extra=creds)
    assert made.returncode == 0, made.stderr
    bad = run("list-keys", extra={**creds, "AWS_SECRET_ACCESS_KEY": "x" * 40})
    assert bad.returncode == 1 and "InvalidSignatureException" in bad.stderr
    deleted = run("access-key", "delete", key_id)
    assert deleted.returncode == 0, deleted.stderr
    gone = run("list-keys", extra=creds)
    assert gone.returncode == 1 and "UnrecognizedClientException" in gone.stderr
    no_token = run("access-key", "list", extra={"ARCA_TOKEN": ""})
    assert no_token.returncode != 0
