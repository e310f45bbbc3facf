"""boto3 (the real AWS SDK for Python) against arca's KMS API, with only the endpoint changed.

One development server for the module; each test starts from `POST /moto-api/reset`, as test
suites written for moto's server do. Every KMS operation arca implements is called here, and
every bad input of the issue gets its exact AWS error code, with nothing changed after it.
"""

import base64
import hashlib
import json
import uuid

import pytest
import requests
from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from kms_harness import Servers, error_code, kms_client, raw_kms, reset, state_of

ACCOUNT = "123456789012"


@pytest.fixture(scope="module")
def servers():
    group = Servers()
    yield group
    group.close()


@pytest.fixture(scope="module")
def server(servers):
    return servers.dev()


@pytest.fixture
def kms(server):
    reset(server.addr)
    yield kms_client(server.addr)
    reset(server.addr)


def new_key(kms, **kwargs):
    return kms.create_key(**kwargs)["KeyMetadata"]


def test_create_describe_list_and_update(kms):
    meta = new_key(kms, Description="orders", Tags=[{"TagKey": "team", "TagValue": "a"}])
    assert meta["Arn"] == f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{meta['KeyId']}"
    assert meta["AWSAccountId"] == ACCOUNT
    assert meta["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert meta["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert meta["KeyState"] == "Enabled" and meta["Enabled"] is True
    assert meta["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    uuid.UUID(meta["KeyId"])
    described = kms.describe_key(KeyId=meta["Arn"])["KeyMetadata"]
    assert described["KeyId"] == meta["KeyId"] and described["Description"] == "orders"
    kms.update_key_description(KeyId=meta["KeyId"], Description="renamed")
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["Description"] == "renamed"
    ids = {meta["KeyId"]} | {new_key(kms)["KeyId"] for _ in range(4)}
    # Pages of two, following the markers.
    seen, marker = [], None
    while True:
        page = kms.list_keys(Limit=2, **({"Marker": marker} if marker else {}))
        seen += [k["KeyId"] for k in page["Keys"]]
        assert all(k["KeyArn"].endswith(k["KeyId"]) for k in page["Keys"])
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert set(seen) == ids and len(seen) == 5
    paginated = [
        k["KeyId"] for p in kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 3}) for k in p["Keys"]
    ]
    assert set(paginated) == ids


def test_key_specs_and_usages(kms):
    for spec, usage in [
        ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"),
        ("HMAC_256", "GENERATE_VERIFY_MAC"),
        ("ECC_NIST_P256", "SIGN_VERIFY"),
        ("ECC_NIST_EDWARDS25519", "SIGN_VERIFY"),
    ]:
        meta = new_key(kms, KeySpec=spec, KeyUsage=usage)
        assert meta["KeySpec"] == spec and meta["KeyUsage"] == usage
    with pytest.raises(ClientError) as err:
        kms.create_key(KeySpec="RSA_2048")
    assert error_code(err) == "ValidationException"
    with pytest.raises(ClientError) as err:
        kms.create_key(KeySpec="HMAC_256", KeyUsage="ENCRYPT_DECRYPT")
    assert error_code(err) == "ValidationException"


def test_encrypt_decrypt_with_context(kms):
    key = new_key(kms)["KeyId"]
    context = {"tenant": "acme", "purpose": "test"}
    out = kms.encrypt(KeyId=key, Plaintext=b"attack at dawn", EncryptionContext=context)
    assert out["KeyId"].endswith(key) and out["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    blob = out["CiphertextBlob"]
    back = kms.decrypt(CiphertextBlob=blob, EncryptionContext=dict(reversed(list(context.items()))))
    assert back["Plaintext"] == b"attack at dawn"
    assert back["KeyId"] == f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{key}"
    # Context mismatch: another value, a missing pair, no context.
    for wrong in [{"tenant": "other", "purpose": "test"}, {"tenant": "acme"}, {}]:
        with pytest.raises(ClientError) as err:
            kms.decrypt(CiphertextBlob=blob, EncryptionContext=wrong)
        assert error_code(err) == "InvalidCiphertextException"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # The 4096-byte limit.
    assert kms.decrypt(
        CiphertextBlob=kms.encrypt(KeyId=key, Plaintext=b"x" * 4096)["CiphertextBlob"]
    )["Plaintext"] == b"x" * 4096


def test_alias_resolution_everywhere(kms):
    key = new_key(kms)
    kms.create_alias(AliasName="alias/app/orders", TargetKeyId=key["KeyId"])
    alias_arn = f"arn:aws:kms:us-east-1:{ACCOUNT}:alias/app/orders"
    for key_id in [key["KeyId"], key["Arn"], "alias/app/orders", alias_arn]:
        blob = kms.encrypt(KeyId=key_id, Plaintext=b"v")["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob)["KeyId"] == key["Arn"]
        assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyId"] == key["KeyId"]
    aliases = kms.list_aliases()["Aliases"]
    assert [(a["AliasName"], a["AliasArn"], a["TargetKeyId"]) for a in aliases] == [
        ("alias/app/orders", alias_arn, key["KeyId"])
    ]
    assert kms.list_aliases(KeyId=key["KeyId"])["Aliases"][0]["AliasName"] == "alias/app/orders"
    other = new_key(kms)
    kms.update_alias(AliasName="alias/app/orders", TargetKeyId=other["KeyId"])
    assert kms.describe_key(KeyId="alias/app/orders")["KeyMetadata"]["KeyId"] == other["KeyId"]
    with pytest.raises(ClientError) as err:
        kms.create_alias(AliasName="alias/app/orders", TargetKeyId=key["KeyId"])
    assert error_code(err) == "AlreadyExistsException"
    with pytest.raises(ClientError) as err:
        kms.create_alias(AliasName="alias/aws/s3", TargetKeyId=key["KeyId"])
    assert error_code(err) == "NotAuthorizedException"
    kms.delete_alias(AliasName="alias/app/orders")
    with pytest.raises(ClientError) as err:
        kms.encrypt(KeyId="alias/app/orders", Plaintext=b"v")
    assert error_code(err) == "NotFoundException"
    with pytest.raises(ClientError) as err:
        kms.delete_alias(AliasName="alias/app/orders")
    assert error_code(err) == "NotFoundException"


def test_disable_enable_and_deletion_lifecycle(kms):
    key = new_key(kms)["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"v")["CiphertextBlob"]
    kms.disable_key(KeyId=key)
    meta = kms.describe_key(KeyId=key)["KeyMetadata"]
    assert meta["KeyState"] == "Disabled" and meta["Enabled"] is False
    for call in [
        lambda: kms.encrypt(KeyId=key, Plaintext=b"v"),
        lambda: kms.decrypt(CiphertextBlob=blob),
        lambda: kms.generate_data_key(KeyId=key, KeySpec="AES_256"),
    ]:
        with pytest.raises(ClientError) as err:
            call()
        assert error_code(err) == "DisabledException"
    kms.enable_key(KeyId=key)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"v"
    for days in [3, 31]:
        with pytest.raises(ClientError) as err:
            kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=days)
        assert error_code(err) == "ValidationException"
    out = kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    assert out["KeyState"] == "PendingDeletion" and out["PendingWindowInDays"] == 7
    assert out["KeyId"].endswith(key) and out["DeletionDate"]
    for call in [
        lambda: kms.encrypt(KeyId=key, Plaintext=b"v"),
        lambda: kms.decrypt(CiphertextBlob=blob),
        lambda: kms.enable_key(KeyId=key),
        lambda: kms.schedule_key_deletion(KeyId=key),
    ]:
        with pytest.raises(ClientError) as err:
            call()
        assert error_code(err) == "KMSInvalidStateException"
    assert kms.cancel_key_deletion(KeyId=key)["KeyId"].endswith(key)
    # AWS leaves a key whose deletion was cancelled disabled.
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Disabled"
    with pytest.raises(ClientError) as err:
        kms.cancel_key_deletion(KeyId=key)
    assert error_code(err) == "KMSInvalidStateException"


def test_tags_and_policy(kms):
    key = new_key(kms)["KeyId"]
    kms.tag_resource(KeyId=key, Tags=[{"TagKey": "a", "TagValue": "1"}, {"TagKey": "b", "TagValue": "2"}])
    kms.tag_resource(KeyId=key, Tags=[{"TagKey": "a", "TagValue": "3"}])
    assert kms.list_resource_tags(KeyId=key)["Tags"] == [
        {"TagKey": "a", "TagValue": "3"},
        {"TagKey": "b", "TagValue": "2"},
    ]
    kms.untag_resource(KeyId=key, TagKeys=["a"])
    assert kms.list_resource_tags(KeyId=key)["Tags"] == [{"TagKey": "b", "TagValue": "2"}]
    with pytest.raises(ClientError) as err:
        kms.tag_resource(KeyId=key, Tags=[{"TagKey": "aws:reserved", "TagValue": "x"}])
    assert error_code(err) == "TagException"
    policy = json.loads(kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"])
    assert policy["Statement"][0]["Principal"]["AWS"] == f"arn:aws:iam::{ACCOUNT}:root"
    mine = json.dumps({"Version": "2012-10-17", "Statement": []})
    kms.put_key_policy(KeyId=key, PolicyName="default", Policy=mine)
    assert kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"] == mine
    assert kms.list_key_policies(KeyId=key)["PolicyNames"] == ["default"]


def test_rotation_then_old_ciphertexts_decrypt(kms):
    key = new_key(kms)["KeyId"]
    status = kms.get_key_rotation_status(KeyId=key)
    assert status["KeyRotationEnabled"] is False
    kms.enable_key_rotation(KeyId=key, RotationPeriodInDays=90)
    status = kms.get_key_rotation_status(KeyId=key)
    assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 90
    assert status["NextRotationDate"]
    old = kms.encrypt(KeyId=key, Plaintext=b"old", EncryptionContext={"v": "1"})["CiphertextBlob"]
    assert kms.rotate_key_on_demand(KeyId=key)["KeyId"].endswith(key)
    new = kms.encrypt(KeyId=key, Plaintext=b"new")["CiphertextBlob"]
    assert old[20:24] == b"\x00\x00\x00\x01" and new[20:24] == b"\x00\x00\x00\x02"
    assert kms.decrypt(CiphertextBlob=old, EncryptionContext={"v": "1"})["Plaintext"] == b"old"
    assert kms.decrypt(CiphertextBlob=new)["Plaintext"] == b"new"
    rotations = kms.list_key_rotations(KeyId=key)["Rotations"]
    assert len(rotations) == 1 and rotations[0]["RotationType"] == "ON_DEMAND"
    kms.disable_key_rotation(KeyId=key)
    assert kms.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"] is False
    signing = new_key(kms, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyId"]
    for call in [
        lambda: kms.enable_key_rotation(KeyId=signing),
        lambda: kms.rotate_key_on_demand(KeyId=signing),
    ]:
        with pytest.raises(ClientError) as err:
            call()
        assert error_code(err) == "UnsupportedOperationException"
    with pytest.raises(ClientError) as err:
        kms.enable_key_rotation(KeyId=key, RotationPeriodInDays=3000)
    assert error_code(err) == "ValidationException"


def test_re_encrypt(kms):
    a = new_key(kms)["Arn"]
    b = new_key(kms)["Arn"]
    blob = kms.encrypt(KeyId=a, Plaintext=b"move me", EncryptionContext={"x": "1"})["CiphertextBlob"]
    out = kms.re_encrypt(
        CiphertextBlob=blob,
        SourceEncryptionContext={"x": "1"},
        DestinationKeyId=b,
        DestinationEncryptionContext={"y": "2"},
    )
    assert out["SourceKeyId"] == a and out["KeyId"] == b
    assert kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"y": "2"})["Plaintext"] == b"move me"
    with pytest.raises(ClientError) as err:
        kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=b)
    assert error_code(err) == "InvalidCiphertextException"


def test_data_keys_and_random(kms):
    key = new_key(kms)["KeyId"]
    for kwargs, length in [({"KeySpec": "AES_256"}, 32), ({"KeySpec": "AES_128"}, 16), ({"NumberOfBytes": 7}, 7)]:
        out = kms.generate_data_key(KeyId=key, EncryptionContext={"k": "v"}, **kwargs)
        assert len(out["Plaintext"]) == length
        back = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"k": "v"})
        assert back["Plaintext"] == out["Plaintext"]
    wrapped = kms.generate_data_key_without_plaintext(KeyId=key, KeySpec="AES_256")
    assert "Plaintext" not in wrapped
    assert len(kms.decrypt(CiphertextBlob=wrapped["CiphertextBlob"])["Plaintext"]) == 32
    for kwargs in [{}, {"KeySpec": "AES_256", "NumberOfBytes": 32}, {"NumberOfBytes": 1025}]:
        with pytest.raises(ClientError) as err:
            kms.generate_data_key(KeyId=key, **kwargs)
        assert error_code(err) == "ValidationException", kwargs
    random = kms.generate_random(NumberOfBytes=64)["Plaintext"]
    assert len(random) == 64 and random != kms.generate_random(NumberOfBytes=64)["Plaintext"]
    with pytest.raises(ClientError) as err:
        kms.generate_random(NumberOfBytes=1025)
    assert error_code(err) == "ValidationException"


def test_macs(kms):
    key = new_key(kms, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyId"]
    mac = kms.generate_mac(KeyId=key, Message=b"payload", MacAlgorithm="HMAC_SHA_256")
    assert mac["MacAlgorithm"] == "HMAC_SHA_256" and len(mac["Mac"]) == 32
    ok = kms.verify_mac(KeyId=key, Message=b"payload", MacAlgorithm="HMAC_SHA_256", Mac=mac["Mac"])
    assert ok["MacValid"] is True
    with pytest.raises(ClientError) as err:
        kms.verify_mac(KeyId=key, Message=b"payloaD", MacAlgorithm="HMAC_SHA_256", Mac=mac["Mac"])
    assert error_code(err) == "KMSInvalidMacException"
    with pytest.raises(ClientError) as err:
        kms.encrypt(KeyId=key, Plaintext=b"v")
    assert error_code(err) == "InvalidKeyUsageException"


def test_sign_verify_checked_by_an_independent_library(kms):
    ec_key = new_key(kms, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    assert ec_key["SigningAlgorithms"] == ["ECDSA_SHA_256"]
    signature = kms.sign(KeyId=ec_key["KeyId"], Message=b"release v1", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    public = kms.get_public_key(KeyId=ec_key["KeyId"])
    assert public["KeySpec"] == "ECC_NIST_P256" and public["SigningAlgorithms"] == ["ECDSA_SHA_256"]
    loaded = serialization.load_der_public_key(public["PublicKey"])
    loaded.verify(signature, b"release v1", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        loaded.verify(signature, b"release v2", ec.ECDSA(hashes.SHA256()))
    assert kms.verify(
        KeyId=ec_key["KeyId"], Message=b"release v1", Signature=signature, SigningAlgorithm="ECDSA_SHA_256"
    )["SignatureValid"] is True
    # A bad signature is rejected with KMS's exception.
    with pytest.raises(ClientError) as err:
        kms.verify(KeyId=ec_key["KeyId"], Message=b"release v2", Signature=signature, SigningAlgorithm="ECDSA_SHA_256")
    assert error_code(err) == "KMSInvalidSignatureException"
    # DIGEST messages.
    digest = hashlib.sha256(b"big file").digest()
    sig = kms.sign(KeyId=ec_key["KeyId"], Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    loaded.verify(sig, b"big file", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(ClientError) as err:
        kms.sign(KeyId=ec_key["KeyId"], Message=b"short", MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
    assert error_code(err) == "ValidationException"
    ed_key = new_key(kms, KeySpec="ECC_NIST_EDWARDS25519", KeyUsage="SIGN_VERIFY")["KeyId"]
    sig = kms.sign(KeyId=ed_key, Message=b"hello", SigningAlgorithm="ED25519_SHA_512")["Signature"]
    ed_public = serialization.load_der_public_key(kms.get_public_key(KeyId=ed_key)["PublicKey"])
    assert isinstance(ed_public, ed25519.Ed25519PublicKey)
    ed_public.verify(sig, b"hello")
    with pytest.raises(ClientError) as err:
        kms.sign(KeyId=ed_key, Message=b"hello", SigningAlgorithm="ECDSA_SHA_256")
    assert error_code(err) == "InvalidKeyUsageException"
    with pytest.raises(ClientError) as err:
        kms.get_public_key(KeyId=new_key(kms)["KeyId"])
    assert error_code(err) == "UnsupportedOperationException"


def test_bad_inputs_get_exact_codes_and_change_nothing(kms, servers):
    key = new_key(kms)["KeyId"]
    other = new_key(kms)["KeyId"]
    kms.create_alias(AliasName="alias/kept", TargetKeyId=key)
    blob = kms.encrypt(KeyId=key, Plaintext=b"v")["CiphertextBlob"]
    before = state_of(kms)
    second = servers.dev()
    foreign_kms = kms_client(second.addr)
    foreign_key = foreign_kms.create_key()["KeyMetadata"]["KeyId"]
    foreign_blob = foreign_kms.encrypt(KeyId=foreign_key, Plaintext=b"v")["CiphertextBlob"]
    missing = str(uuid.uuid4())
    cases = [
        # Blobs that are not ciphertext blobs (boto3 base64-encodes whatever bytes it gets).
        (lambda: kms.decrypt(CiphertextBlob=b"not a blob at all"), "InvalidCiphertextException"),
        (lambda: kms.decrypt(CiphertextBlob=b"\x00" * 200), "InvalidCiphertextException"),
        (lambda: kms.decrypt(CiphertextBlob=blob[:-1]), "InvalidCiphertextException"),
        (lambda: kms.decrypt(CiphertextBlob=blob[:30] + bytes([blob[30] ^ 1]) + blob[31:]), "InvalidCiphertextException"),
        # A ciphertext of another key, named explicitly.
        (lambda: kms.decrypt(CiphertextBlob=blob, KeyId=other), "IncorrectKeyException"),
        # A ciphertext of another arca.
        (lambda: kms.decrypt(CiphertextBlob=foreign_blob), "InvalidCiphertextException"),
        # 4097 bytes.
        (lambda: kms.encrypt(KeyId=key, Plaintext=b"x" * 4097), "ValidationException"),
        # Key ids that do not exist, in every form.
        (lambda: kms.encrypt(KeyId=missing, Plaintext=b"v"), "NotFoundException"),
        (lambda: kms.encrypt(KeyId=f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{missing}", Plaintext=b"v"), "NotFoundException"),
        (lambda: kms.encrypt(KeyId="alias/missing", Plaintext=b"v"), "NotFoundException"),
        (lambda: kms.describe_key(KeyId="not-a-key-id"), "NotFoundException"),
        (lambda: kms.disable_key(KeyId=missing), "NotFoundException"),
        (lambda: kms.schedule_key_deletion(KeyId=missing), "NotFoundException"),
        (lambda: kms.create_alias(AliasName="alias/new", TargetKeyId=missing), "NotFoundException"),
        (lambda: kms.decrypt(CiphertextBlob=blob, KeyId=missing), "NotFoundException"),
    ]
    for call, code in cases:
        with pytest.raises(ClientError) as err:
            call()
        assert error_code(err) == code
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert err.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == code
        assert err.value.response["ResponseMetadata"]["RequestId"]
    assert state_of(kms) == before
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"v"


def test_raw_protocol_errors_are_aws_shaped(server, kms):
    def check(response, code):
        assert response.status_code == 400, response.text
        assert response.headers["Content-Type"] == "application/x-amz-json-1.1"
        assert response.headers["X-Amzn-ErrorType"] == code
        assert response.headers["x-amzn-RequestId"]
        body = response.json()
        assert body["__type"] == code and isinstance(body["message"], str)

    check(raw_kms(server.addr, "ListKeys", b"{not json"), "SerializationException")
    check(raw_kms(server.addr, "ListKeys", b"[]"), "SerializationException")
    check(raw_kms(server.addr, "Decrypt", b'{"CiphertextBlob": "%%% not base64 %%%"}'), "SerializationException")
    check(raw_kms(server.addr, "Encrypt", b'{"KeyId": 7, "Plaintext": "eA=="}'), "SerializationException")
    check(raw_kms(server.addr, "Encrypt", b'{"Plaintext": "eA=="}'), "ValidationException")
    check(raw_kms(server.addr, "NoSuchOperation", b"{}"), "UnknownOperationException")
    check(raw_kms(server.addr, "CreateGrant", b"{}"), "UnsupportedOperationException")
    # A service arca does not serve on this endpoint (Secrets Manager is served: its own tests).
    check(
        raw_kms(server.addr, "ListKeys", b"{}", {"X-Amz-Target": "DynamoDB_20120810.ListTables"}),
        "UnknownOperationException",
    )
    response = requests.post(f"{server.addr}/", data=b"{}", timeout=30)
    check(response, "UnknownOperationException")
    ok = raw_kms(server.addr, "ListKeys", b"")
    assert ok.status_code == 200 and ok.json()["Keys"] == []


def test_state_is_kept_per_region(server, kms):
    east = new_key(kms)["KeyId"]
    west = kms_client(server.addr, region="eu-west-1")
    west_key = west.create_key()["KeyMetadata"]
    assert west_key["Arn"].startswith(f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/")
    assert [k["KeyId"] for k in west.list_keys()["Keys"]] == [west_key["KeyId"]]
    assert [k["KeyId"] for k in kms.list_keys()["Keys"]] == [east]
    with pytest.raises(ClientError) as err:
        west.describe_key(KeyId=east)
    assert error_code(err) == "NotFoundException"


def test_dry_run(kms):
    key = new_key(kms)["KeyId"]
    with pytest.raises(ClientError) as err:
        kms.encrypt(KeyId=key, Plaintext=b"v", DryRun=True)
    assert error_code(err) == "DryRunOperationException"


def test_reset_wipes_keys(server, kms):
    new_key(kms)
    reset(server.addr)
    assert kms.list_keys()["Keys"] == []
