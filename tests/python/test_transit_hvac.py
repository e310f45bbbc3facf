"""hvac's transit API (the real Vault client for Python) against arca's transit engine, and the
same keys seen through boto3: a key is one thing whichever API touches it."""

import base64
import hashlib

import hvac
import hvac.exceptions
import pytest
import requests
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kms_harness import ROOT_TOKEN, Servers, error_code, kms_client, reset


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def server():
    group = Servers()
    yield group.dev()
    group.close()


@pytest.fixture
def transit(server):
    reset(server.addr)
    client = hvac.Client(url=server.addr, token=ROOT_TOKEN)
    yield client.secrets.transit
    reset(server.addr)


def test_keys_lifecycle(transit):
    created = transit.create_key(name="orders")
    assert created["data"]["type"] == "aes256-gcm96"
    again = transit.create_key(name="orders")
    assert again["warnings"] == ["key orders already existed"]
    transit.create_key(name="chacha", key_type="chacha20-poly1305")
    transit.create_key(name="ed", key_type="ed25519")
    transit.create_key(name="ec", key_type="ecdsa-p256")
    assert sorted(transit.list_keys()["data"]["keys"]) == ["chacha", "ec", "ed", "orders"]
    key = transit.read_key(name="orders")["data"]
    assert key["latest_version"] == 1 and key["min_decryption_version"] == 1
    assert key["supports_encryption"] and not key["supports_signing"]
    assert list(key["keys"]) == ["1"]
    rotated = transit.rotate_key(name="orders")["data"]
    assert rotated["latest_version"] == 2 and sorted(rotated["keys"]) == ["1", "2"]
    ed = transit.read_key(name="ed")["data"]
    assert ed["supports_signing"] and len(base64.b64decode(ed["keys"]["1"]["public_key"])) == 32
    ec_pem = transit.read_key(name="ec")["data"]["keys"]["1"]["public_key"]
    assert ec_pem.startswith("-----BEGIN PUBLIC KEY-----")
    with pytest.raises(hvac.exceptions.InvalidRequest) as err:
        transit.delete_key(name="orders")
    assert "deletion is not allowed for this policy" in str(err.value)
    transit.update_key_configuration(name="orders", deletion_allowed=True)
    transit.delete_key(name="orders")
    with pytest.raises(hvac.exceptions.InvalidPath):
        transit.read_key(name="orders")
    with pytest.raises(hvac.exceptions.InvalidRequest) as err:
        transit.create_key(name="bad", key_type="rsa-2048")
    assert "key type rsa-2048 is not supported" in str(err.value)
    assert "bad" not in transit.list_keys()["data"]["keys"]


def test_encrypt_decrypt_rewrap_and_min_decryption_version(transit):
    # Encrypting to a missing key creates it, as in Vault.
    first = transit.encrypt_data(name="app", plaintext=b64(b"secret one"))["data"]
    assert first["ciphertext"].startswith("vault:v1:") and first["key_version"] == 1
    assert transit.decrypt_data(name="app", ciphertext=first["ciphertext"])["data"]["plaintext"] == b64(b"secret one")
    transit.rotate_key(name="app")
    second = transit.encrypt_data(name="app", plaintext=b64(b"secret two"))["data"]
    assert second["ciphertext"].startswith("vault:v2:")
    # Rotation keeps old versions readable.
    assert transit.decrypt_data(name="app", ciphertext=first["ciphertext"])["data"]["plaintext"] == b64(b"secret one")
    rewrapped = transit.rewrap_data(name="app", ciphertext=first["ciphertext"])["data"]
    assert rewrapped["ciphertext"].startswith("vault:v2:")
    transit.update_key_configuration(name="app", min_decryption_version=2)
    with pytest.raises(hvac.exceptions.InvalidRequest) as err:
        transit.decrypt_data(name="app", ciphertext=first["ciphertext"])
    assert "ciphertext or signature version is disallowed by policy (too old)" in str(err.value)
    assert transit.decrypt_data(name="app", ciphertext=rewrapped["ciphertext"])["data"]["plaintext"] == b64(b"secret one")
    # Encrypting to an older version explicitly.
    old = transit.encrypt_data(name="app", plaintext=b64(b"x"), key_version=2)["data"]
    assert old["key_version"] == 2


def test_associated_data_and_vault_error_words(transit):
    ct = transit.encrypt_data(name="ad", plaintext=b64(b"x"), associated_data=b64(b"ctx"))["data"]["ciphertext"]
    assert transit.decrypt_data(name="ad", ciphertext=ct, associated_data=b64(b"ctx"))["data"]["plaintext"] == b64(b"x")
    cases = [
        (dict(ciphertext=ct, associated_data=b64(b"other")), "cipher: message authentication failed"),
        (dict(ciphertext=ct), "cipher: message authentication failed"),
        (dict(ciphertext="nope"), "invalid ciphertext: no prefix"),
        (dict(ciphertext="vault:v1"), "invalid ciphertext: wrong number of fields"),
        (dict(ciphertext="vault:v7:AAAA"), "invalid ciphertext: version is too new"),
    ]
    for kwargs, words in cases:
        with pytest.raises(hvac.exceptions.InvalidRequest) as err:
            transit.decrypt_data(name="ad", **kwargs)
        assert words in str(err.value)
    with pytest.raises(hvac.exceptions.InvalidRequest) as err:
        transit.decrypt_data(name="no-such-key", ciphertext=ct)
    assert "encryption key not found" in str(err.value)
    with pytest.raises(hvac.exceptions.InvalidRequest) as err:
        transit.encrypt_data(name="ad", plaintext="not base64!")
    assert "illegal base64 data" in str(err.value)


def test_batch_input(server, transit):
    items = [{"plaintext": b64(b"a"), "reference": "r1"}, {"plaintext": b64(b"b")}]
    out = transit.encrypt_data(name="batch", plaintext="", batch_input=items)["data"]["batch_results"]
    assert [r["reference"] for r in out if "reference" in r] == ["r1"]
    decrypted = transit.decrypt_data(
        name="batch", ciphertext="", batch_input=[{"ciphertext": r["ciphertext"]} for r in out]
    )["data"]["batch_results"]
    assert [base64.b64decode(r["plaintext"]) for r in decrypted] == [b"a", b"b"]
    # One bad item: 400, and every item still answered.
    response = requests.post(
        f"{server.addr}/v1/transit/decrypt/batch",
        headers={"X-Vault-Token": ROOT_TOKEN},
        json={"batch_input": [{"ciphertext": out[0]["ciphertext"]}, {"ciphertext": "garbage"}]},
        timeout=30,
    )
    assert response.status_code == 400
    results = response.json()["data"]["batch_results"]
    assert base64.b64decode(results[0]["plaintext"]) == b"a"
    assert results[1]["error"] == "invalid ciphertext: no prefix"


def test_datakeys_hmac_random_hash(transit):
    transit.create_key(name="dk")
    plain = transit.generate_data_key(name="dk", key_type="plaintext", bits=512)["data"]
    assert len(base64.b64decode(plain["plaintext"])) == 64
    assert transit.decrypt_data(name="dk", ciphertext=plain["ciphertext"])["data"]["plaintext"] == plain["plaintext"]
    wrapped = transit.generate_data_key(name="dk", key_type="wrapped")["data"]
    assert "plaintext" not in wrapped and wrapped["ciphertext"].startswith("vault:v1:")
    mac = transit.generate_hmac(name="dk", hash_input=b64(b"msg"))["data"]["hmac"]
    assert mac.startswith("vault:v1:")
    assert transit.verify_signed_data(name="dk", hash_input=b64(b"msg"), hmac=mac)["data"]["valid"] is True
    assert transit.verify_signed_data(name="dk", hash_input=b64(b"msh"), hmac=mac)["data"]["valid"] is False
    mac512 = transit.generate_hmac(name="dk", hash_input=b64(b"msg"), algorithm="sha2-512")["data"]["hmac"]
    assert len(base64.b64decode(mac512.split(":")[2])) == 64
    random = transit.generate_random_bytes(n_bytes=24, output_format="hex")["data"]["random_bytes"]
    assert len(bytes.fromhex(random)) == 24
    digest = transit.hash_data(hash_input=b64(b"abc"), algorithm="sha2-256", output_format="hex")["data"]["sum"]
    assert digest == hashlib.sha256(b"abc").hexdigest()


def test_sign_verify(transit):
    transit.create_key(name="ed", key_type="ed25519")
    transit.create_key(name="ec", key_type="ecdsa-p256")
    for name in ["ed", "ec"]:
        sig = transit.sign_data(name=name, hash_input=b64(b"release"))["data"]["signature"]
        assert sig.startswith("vault:v1:")
        assert transit.verify_signed_data(name=name, hash_input=b64(b"release"), signature=sig)["data"]["valid"]
        assert not transit.verify_signed_data(name=name, hash_input=b64(b"relaese"), signature=sig)["data"]["valid"]
    # The ECDSA signature is plain DER over SHA-256, checkable with the published key.
    sig = transit.sign_data(name="ec", hash_input=b64(b"release"))["data"]["signature"]
    pem = transit.read_key(name="ec")["data"]["keys"]["1"]["public_key"]
    public = serialization.load_pem_public_key(pem.encode())
    public.verify(base64.b64decode(sig.split(":")[2]), b"release", ec.ECDSA(hashes.SHA256()))
    jws = transit.sign_data(name="ec", hash_input=b64(b"release"), marshaling_algorithm="jws")["data"]["signature"]
    assert transit.verify_signed_data(
        name="ec", hash_input=b64(b"release"), signature=jws, marshaling_algorithm="jws"
    )["data"]["valid"]
    with pytest.raises(hvac.exceptions.InvalidRequest) as err:
        transit.encrypt_data(name="ed", plaintext=b64(b"x"))
    assert "not supported for key type ed25519" in str(err.value)
    transit.rotate_key(name="ed")
    assert transit.sign_data(name="ed", hash_input=b64(b"x"))["data"]["signature"].startswith("vault:v2:")


def test_one_key_two_apis(server, transit):
    transit.create_key(name="shared")
    arn = transit.read_key(name="shared")["data"]["kms_key_arn"]
    kms = kms_client(server.addr)
    meta = kms.describe_key(KeyId=arn)["KeyMetadata"]
    assert meta["Description"] == "transit key shared"
    tags = kms.list_resource_tags(KeyId=arn)["Tags"]
    assert {"TagKey": "arca:transit-key", "TagValue": "shared"} in tags
    transit.rotate_key(name="shared")
    blob = kms.encrypt(KeyId=arn, Plaintext=b"v")["CiphertextBlob"]
    assert blob[20:24] == b"\x00\x00\x00\x02", "the transit rotation made KMS version 2"
    kms.disable_key(KeyId=arn)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        transit.encrypt_data(name="shared", plaintext=b64(b"x"))
    kms.enable_key(KeyId=arn)
    assert transit.encrypt_data(name="shared", plaintext=b64(b"x"))["data"]["key_version"] == 2
    transit.update_key_configuration(name="shared", deletion_allowed=True)
    transit.delete_key(name="shared")
    with pytest.raises(ClientError) as err:
        kms.describe_key(KeyId=arn)
    assert error_code(err) == "NotFoundException"


def test_transit_needs_a_token(server, transit):
    response = requests.post(
        f"{server.addr}/v1/transit/encrypt/x", json={"plaintext": b64(b"x")}, timeout=30
    )
    assert response.status_code == 403
    assert response.json() == {"errors": ["permission denied"]}


def test_transit_routes_need_the_engine_enabled():
    from kms_harness import initialise

    group = Servers()
    try:
        server = group.sealed()
        token = initialise(server)
        client = hvac.Client(url=server.addr, token=token)
        with pytest.raises(hvac.exceptions.InvalidPath):
            client.secrets.transit.encrypt_data(name="k", plaintext=b64(b"x"))
        client.sys.enable_secrets_engine(backend_type="transit", path="transit")
        ct = client.secrets.transit.encrypt_data(name="k", plaintext=b64(b"x"))["data"]["ciphertext"]
        assert client.secrets.transit.decrypt_data(name="k", ciphertext=ct)["data"]["plaintext"] == b64(b"x")
    finally:
        group.close()
