"""The seal ceremony driven by hvac, the Python Vault client, exactly as against Vault."""

import hvac
import pytest
from hvac.exceptions import Forbidden, InvalidRequest, VaultDown


def initialize(client: hvac.Client, shares: int = 5, threshold: int = 3) -> dict:
    result = client.sys.initialize(secret_shares=shares, secret_threshold=threshold)
    assert len(result["keys"]) == shares
    assert len(result["keys_base64"]) == shares
    assert result["root_token"]
    return result


def test_initialize_unseal_health_and_seal(arca):
    client = hvac.Client(url=arca.addr)
    assert client.sys.is_initialized() is False
    assert client.sys.read_init_status() == {"initialized": False}

    # hvac hands back the parsed body for 200 only; other statuses come back as the response.
    health = client.sys.read_health_status(method="GET")
    assert health.status_code == 501
    assert health.json()["initialized"] is False
    assert client.sys.read_health_status(method="GET", uninit_code=200)["initialized"] is False
    assert client.sys.read_health_status().status_code == 501  # HEAD, hvac's default

    init = initialize(client)
    keys, root = init["keys"], init["root_token"]
    assert client.sys.is_initialized() is True
    with pytest.raises(InvalidRequest):
        client.sys.initialize(secret_shares=5, secret_threshold=3)

    status = client.sys.read_seal_status()
    assert (status["sealed"], status["t"], status["n"], status["progress"]) == (True, 3, 5, 0)
    assert status["type"] == "shamir"
    assert client.sys.is_sealed() is True
    health = client.sys.read_health_status(method="GET")
    assert health.status_code == 503
    assert health.json()["sealed"] is True
    assert client.sys.read_health_status(method="GET", sealed_code=200)["sealed"] is True

    # A sealed server answers every other path 503, which hvac raises as VaultDown.
    client.token = root
    with pytest.raises(VaultDown):
        client.secrets.kv.v2.read_secret_version(path="app", raise_on_deleted_version=True)

    # One share at a time: progress and nonce as Vault reports them.
    first = client.sys.submit_unseal_key(keys[0])
    assert (first["sealed"], first["progress"]) == (True, 1)
    assert first["nonce"]
    # A duplicate is refused (400) and not counted.
    with pytest.raises(InvalidRequest) as refused:
        client.sys.submit_unseal_key(keys[0])
    assert keys[0] not in str(refused.value)
    second = client.sys.submit_unseal_key(init["keys_base64"][3])
    assert (second["progress"], second["nonce"]) == (2, first["nonce"])
    third = client.sys.submit_unseal_key(keys[4])
    assert third["sealed"] is False
    assert client.sys.is_sealed() is False
    health = client.sys.read_health_status(method="GET")
    assert isinstance(health, dict), "200: the parsed body"
    assert (health["initialized"], health["sealed"], health["standby"]) == (True, False, False)

    # Sealing needs the token.
    with pytest.raises(Forbidden):
        hvac.Client(url=arca.addr).sys.seal()
    with pytest.raises(Forbidden):
        hvac.Client(url=arca.addr, token="arca.not-a-token").sys.seal()
    assert client.sys.is_sealed() is False
    client.sys.seal()
    assert client.sys.is_sealed() is True

    # All at once, any three.
    status = client.sys.submit_unseal_keys([keys[2], keys[1], keys[3]])
    assert status["sealed"] is False
    leader = client.sys.read_leader_status()
    assert leader["ha_enabled"] is False


def test_wrong_share_and_reset(start_arca):
    arca, other = start_arca(), start_arca()
    client = hvac.Client(url=arca.addr)
    keys = initialize(client)["keys"]
    foreign = initialize(hvac.Client(url=other.addr))["keys"]

    # A share from another init counts as a share, but the three do not open the store:
    # InvalidRequest (400), and the progress starts over.
    assert client.sys.submit_unseal_key(keys[0])["progress"] == 1
    assert client.sys.submit_unseal_key(foreign[4])["progress"] == 2
    with pytest.raises(InvalidRequest) as refused:
        client.sys.submit_unseal_key(keys[1])
    assert "invalid" in str(refused.value)
    status = client.sys.read_seal_status()
    assert (status["sealed"], status["progress"], status["nonce"]) == (True, 0, "")

    # Not hex or base64 of a share: 400, nothing counted.
    client.sys.submit_unseal_key(keys[0])
    with pytest.raises(InvalidRequest):
        client.sys.submit_unseal_key("not a share")
    assert client.sys.read_seal_status()["progress"] == 1

    # reset=True forgets the shares submitted so far.
    client.sys.submit_unseal_key(keys[1])
    status = client.sys.submit_unseal_key(reset=True)
    assert (status["sealed"], status["progress"]) == (True, 0)
    assert client.sys.submit_unseal_key(keys[2])["progress"] == 1
    assert client.sys.submit_unseal_keys(keys[3:])["sealed"] is False


def test_rekey_and_encryption_key_rotation(arca):
    client = hvac.Client(url=arca.addr)
    init = initialize(client)
    old = init["keys"]
    client.token = init["root_token"]
    client.sys.submit_unseal_keys(old[:3])

    progress = client.sys.read_rekey_progress()
    assert (progress["started"], progress["nonce"]) == (False, "")

    # start_rekey calls Vault's sys/rekey/init; cancel_rekey forgets it.
    started = client.sys.start_rekey(secret_shares=3, secret_threshold=2)
    assert (started["started"], started["n"], started["t"], started["required"]) == (True, 3, 2, 3)
    assert client.sys.read_rekey_progress()["nonce"] == started["nonce"]
    client.sys.cancel_rekey()
    assert client.sys.read_rekey_progress()["started"] is False

    nonce = client.sys.start_rekey(secret_shares=3, secret_threshold=2)["nonce"]
    assert client.sys.rekey(old[0], nonce=nonce)["progress"] == 1
    with pytest.raises(InvalidRequest):
        client.sys.rekey(old[1], nonce="not-the-nonce")
    with pytest.raises(InvalidRequest):
        client.sys.rekey(old[0], nonce=nonce)  # duplicate
    assert client.sys.read_rekey_progress()["progress"] == 1
    done = client.sys.rekey_multi(old[1:3], nonce=nonce)
    assert done["complete"] is True
    new = done["keys"]
    assert len(new) == 3 and len(done["keys_base64"]) == 3

    # The new shares (2 of 3) unseal; the old ones fail.
    client.sys.seal()
    status = client.sys.read_seal_status()
    assert (status["t"], status["n"]) == (2, 3)
    assert client.sys.submit_unseal_keys(new[1:])["sealed"] is False
    client.sys.seal()
    client.sys.submit_unseal_key(old[0])
    with pytest.raises(InvalidRequest):
        client.sys.submit_unseal_key(old[1])
    assert client.sys.submit_unseal_keys([new[0], new[2]])["sealed"] is False

    # Keyring rotation: the term goes up by one each time.
    status = client.sys.get_encryption_key_status()
    assert status["data"]["term"] == 1
    client.sys.rotate_encryption_key()
    client.sys.rotate_encryption_key()
    status = client.sys.get_encryption_key_status()
    assert status["data"]["term"] == 3
    assert status["data"]["install_time"]
