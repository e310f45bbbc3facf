"""KV version 2 and the mount table through hvac (and raw HTTP where hvac has no call), against
the real arca binary.

Each test gets its own server (the `arca` fixture of conftest.py), initialised with one share
and unsealed through hvac, with KV version 2 enabled at `secret/` through `sys/mounts`.
"""

import json
import time

import hvac
import pytest
import requests
from hvac import exceptions


@pytest.fixture
def vault(arca):
    client = hvac.Client(url=arca.addr)
    init = client.sys.initialize(secret_shares=1, secret_threshold=1)
    if not init.get("recovery_keys"):
        # Shamir; an auto-unseal seal (the awskms run of tests/aws_backend.rs) unseals itself.
        client.sys.submit_unseal_key(init["keys"][0])
    client.token = init["root_token"]
    client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    client.server = arca
    return client


def raw(client, method, path, body=None, content_type="application/json", data=None, params=None):
    """One request as curl would send it; returns the requests.Response."""
    headers = {"X-Vault-Token": client.token}
    if body is not None:
        data = json.dumps(body)
    if data is not None:
        headers["Content-Type"] = content_type
    return requests.request(
        method, f"{client.url}/v1/{path}", headers=headers, data=data, params=params, timeout=30
    )


def read(client, path, version=None, mount="secret"):
    return client.secrets.kv.v2.read_secret_version(
        path, version=version, mount_point=mount, raise_on_deleted_version=True
    )


def put(client, path, secret, cas=None, mount="secret"):
    return client.secrets.kv.v2.create_or_update_secret(path, secret, cas=cas, mount_point=mount)


def test_mounts_enable_list_tune_disable(vault):
    sys = vault.sys
    sys.enable_secrets_engine("kv-v2", path="team/kv", description="team secrets")
    sys.enable_secrets_engine("transit", path="crypto")
    listed = sys.list_mounted_secrets_engines()
    mounts = listed["data"]
    assert mounts["team/kv/"]["type"] == "kv"
    assert mounts["team/kv/"]["options"] == {"version": "2"}
    assert mounts["team/kv/"]["description"] == "team secrets"
    assert mounts["team/kv/"]["accessor"].startswith("kv_")
    assert mounts["crypto/"]["type"] == "transit"
    assert mounts["secret/"]["type"] == "kv"
    # Older clients read the table at the top level too.
    assert listed["team/kv/"]["uuid"] == mounts["team/kv/"]["uuid"]

    with pytest.raises(exceptions.InvalidRequest, match="path is already in use at team/kv/"):
        sys.enable_secrets_engine("kv-v2", path="team/kv/inner")
    with pytest.raises(exceptions.InvalidRequest, match="path is already in use"):
        sys.enable_secrets_engine("kv-v2", path="team")
    with pytest.raises(exceptions.InvalidRequest, match="kv version 2 only"):
        sys.enable_secrets_engine("kv", path="kv1")
    with pytest.raises(exceptions.InvalidRequest, match="plugin not found"):
        sys.enable_secrets_engine("pki", path="pki")
    with pytest.raises(exceptions.InvalidRequest, match="cannot mount under sys/"):
        sys.enable_secrets_engine("kv-v2", path="sys/x")
    with pytest.raises(exceptions.InvalidRequest, match="invalid mount path"):
        sys.enable_secrets_engine("kv-v2", path="bad path!")
    assert "kv1/" not in sys.list_mounted_secrets_engines()["data"]

    sys.tune_mount_configuration(
        "team/kv", default_lease_ttl="1h", max_lease_ttl="2h", description="tuned"
    )
    tuned = sys.read_mount_configuration("team/kv")["data"]
    assert tuned["default_lease_ttl"] == 3600
    assert tuned["max_lease_ttl"] == 7200
    assert tuned["description"] == "tuned"
    assert tuned["options"] == {"version": "2"}
    with pytest.raises(exceptions.InvalidRequest):
        sys.tune_mount_configuration("team/kv", default_lease_ttl="3h")
    with pytest.raises(exceptions.InvalidRequest, match="kv version 2 only"):
        sys.tune_mount_configuration("team/kv", options={"version": "1"})

    # The preflight `bao kv` sends first.
    ui = raw(vault, "GET", "sys/internal/ui/mounts/team/kv/app/db")
    assert ui.status_code == 200, ui.text
    assert ui.json()["data"]["path"] == "team/kv/"
    assert ui.json()["data"]["type"] == "kv"
    assert ui.json()["data"]["options"]["version"] == "2"
    missing = raw(vault, "GET", "sys/internal/ui/mounts/nowhere/x")
    assert missing.status_code == 403

    # Disabling removes the data with the mount; enabling again starts empty.
    put(vault, "app/db", {"pw": "team-secret"}, mount="team/kv")
    sys.disable_secrets_engine("team/kv")
    assert "team/kv/" not in sys.list_mounted_secrets_engines()["data"]
    gone = raw(vault, "GET", "team/kv/data/app/db")
    assert gone.status_code == 404
    assert "no handler for route" in gone.json()["errors"][0]
    sys.enable_secrets_engine("kv-v2", path="team/kv")
    with pytest.raises(exceptions.InvalidPath):
        read(vault, "app/db", mount="team/kv")
    # Disabling what is not mounted answers as Vault does: success, nothing said.
    sys.disable_secrets_engine("never/mounted")


def test_write_read_and_check_and_set(vault):
    kv = vault.secrets.kv.v2
    first = put(vault, "app/db", {"user": "admin", "pw": "one"}, cas=0)
    assert first["data"]["version"] == 1
    assert first["data"]["destroyed"] is False
    assert first["data"]["deletion_time"] == ""
    assert first["data"]["created_time"].endswith("Z")
    with pytest.raises(
        exceptions.InvalidRequest, match="check-and-set parameter did not match the current version"
    ):
        put(vault, "app/db", {"pw": "clobbered"}, cas=0)
    with pytest.raises(exceptions.InvalidRequest, match="did not match"):
        put(vault, "app/db", {"pw": "stale"}, cas=7)
    assert put(vault, "app/db", {"user": "admin", "pw": "two"}, cas=1)["data"]["version"] == 2

    latest = read(vault, "app/db")
    assert latest["data"]["data"] == {"user": "admin", "pw": "two"}
    assert latest["data"]["metadata"]["version"] == 2
    assert read(vault, "app/db", version=1)["data"]["data"]["pw"] == "one"
    with pytest.raises(exceptions.InvalidPath):
        read(vault, "app/db", version=9)
    with pytest.raises(exceptions.InvalidPath):
        read(vault, "app/none")

    # hvac's patch is read-then-write with check-and-set.
    patched = kv.patch("app/db", {"pw": "three", "port": 5432}, mount_point="secret")
    assert patched["data"]["version"] == 3
    assert read(vault, "app/db")["data"]["data"] == {"user": "admin", "pw": "three", "port": 5432}
    with pytest.raises(exceptions.InvalidPath):
        kv.patch("app/none", {"a": 1}, mount_point="secret")


def test_version_lifecycle(vault):
    kv = vault.secrets.kv.v2
    for i in range(1, 4):
        put(vault, "life", {"v": i})
    kv.delete_latest_version_of_secret("life", mount_point="secret")
    with pytest.raises(exceptions.InvalidPath):
        read(vault, "life")
    deleted = kv.read_secret_version("life", mount_point="secret", raise_on_deleted_version=False)
    assert deleted["data"]["data"] is None
    assert deleted["data"]["metadata"]["deletion_time"] != ""
    assert deleted["data"]["metadata"]["version"] == 3

    # A deleted version answers 404 *with* the envelope.
    response = raw(vault, "GET", "secret/data/life")
    assert response.status_code == 404
    body = response.json()
    assert body["data"]["data"] is None
    assert body["data"]["metadata"]["destroyed"] is False
    assert "request_id" in body and "errors" not in body

    kv.undelete_secret_versions("life", versions=[3], mount_point="secret")
    assert read(vault, "life")["data"]["data"] == {"v": 3}
    kv.delete_secret_versions("life", versions=[1, 2], mount_point="secret")
    with pytest.raises(exceptions.InvalidPath):
        read(vault, "life", version=1)
    kv.destroy_secret_versions("life", versions=[2], mount_point="secret")
    versions = kv.read_secret_metadata("life", mount_point="secret")["data"]["versions"]
    assert versions["2"]["destroyed"] is True
    assert versions["1"]["destroyed"] is False and versions["1"]["deletion_time"] != ""
    kv.undelete_secret_versions("life", versions=[1, 2], mount_point="secret")
    assert read(vault, "life", version=1)["data"]["data"] == {"v": 1}
    destroyed = raw(vault, "GET", "secret/data/life", params={"version": "2"})
    assert destroyed.status_code == 404
    assert destroyed.json()["data"]["metadata"]["destroyed"] is True
    assert destroyed.json()["data"]["data"] is None

    # Versions may be given as strings (the bao CLI does) or as a comma list.
    response = raw(vault, "POST", "secret/delete/life", {"versions": ["1", "3"]})
    assert response.status_code == 204, response.text
    with pytest.raises(exceptions.InvalidPath):
        read(vault, "life")
    response = raw(vault, "POST", "secret/undelete/life", {"versions": "1,3"})
    assert response.status_code == 204, response.text
    assert read(vault, "life")["data"]["data"] == {"v": 3}
    response = raw(vault, "POST", "secret/destroy/life", {"versions": []})
    assert response.status_code == 400
    assert response.json()["errors"] == ["No version number provided"]


def test_max_versions_and_delete_version_after(vault):
    kv = vault.secrets.kv.v2
    kv.update_metadata("pruned", max_versions=2, mount_point="secret")
    for i in range(1, 5):
        put(vault, "pruned", {"v": i})
    meta = kv.read_secret_metadata("pruned", mount_point="secret")["data"]
    assert sorted(meta["versions"]) == ["3", "4"]
    assert meta["current_version"] == 4
    assert meta["oldest_version"] == 3
    assert meta["max_versions"] == 2
    with pytest.raises(exceptions.InvalidPath):
        read(vault, "pruned", version=1)
    # A pruned version is simply gone: 404 with an empty errors list.
    response = raw(vault, "GET", "secret/data/pruned", params={"version": "2"})
    assert response.status_code == 404 and response.json() == {"errors": []}

    kv.update_metadata("expiring", delete_version_after="2s", mount_point="secret")
    written = put(vault, "expiring", {"v": "short-lived"})
    assert written["data"]["deletion_time"] != ""
    assert read(vault, "expiring")["data"]["data"] == {"v": "short-lived"}
    time.sleep(2.5)
    with pytest.raises(exceptions.InvalidPath):
        read(vault, "expiring")
    assert kv.read_secret_metadata("expiring", mount_point="secret")["data"][
        "delete_version_after"
    ] == "2s"


def test_mount_configuration(vault):
    kv = vault.secrets.kv.v2
    kv.configure(max_versions=5, cas_required=True, delete_version_after="1h", mount_point="secret")
    config = kv.read_configuration(mount_point="secret")["data"]
    assert config == {"max_versions": 5, "cas_required": True, "delete_version_after": "1h0m0s"}
    with pytest.raises(exceptions.InvalidRequest, match="check-and-set parameter required"):
        put(vault, "guarded", {"a": 1})
    written = put(vault, "guarded", {"a": 1}, cas=0)
    assert written["data"]["deletion_time"] != ""
    kv.configure(max_versions=0, cas_required=False, delete_version_after="-1s", mount_point="secret")
    config = kv.read_configuration(mount_point="secret")["data"]
    assert config["delete_version_after"] == "-1s"
    assert put(vault, "guarded", {"a": 2})["data"]["deletion_time"] == ""
    with pytest.raises(exceptions.InvalidRequest, match="max_versions must be at most 1000"):
        kv.configure(max_versions=5000, mount_point="secret")


def test_metadata_and_listing(vault):
    kv = vault.secrets.kv.v2
    kv.update_metadata(
        "app/db", max_versions=3, cas_required=False, custom_metadata={"owner": "ops"},
        mount_point="secret",
    )
    meta = kv.read_secret_metadata("app/db", mount_point="secret")["data"]
    assert meta["custom_metadata"] == {"owner": "ops"}
    assert meta["current_version"] == 0 and meta["versions"] == {}
    with pytest.raises(exceptions.InvalidPath):
        read(vault, "app/db")
    written = put(vault, "app/db", {"pw": "x"})
    assert written["data"]["custom_metadata"] == {"owner": "ops"}
    for path in ["app/cache", "app/sub/deep", "top"]:
        put(vault, path, {"k": "v"})

    assert kv.list_secrets("", mount_point="secret")["data"]["keys"] == ["app/", "top"]
    assert kv.list_secrets("app", mount_point="secret")["data"]["keys"] == ["cache", "db", "sub/"]
    # The bao CLI lists with GET ?list=true, hvac with the LIST verb: both work.
    by_get = raw(vault, "GET", "secret/metadata/app/", params={"list": "true"})
    assert by_get.status_code == 200 and by_get.json()["data"]["keys"] == ["cache", "db", "sub/"]
    by_list = raw(vault, "LIST", "secret/metadata/app")
    assert by_list.json()["data"]["keys"] == ["cache", "db", "sub/"]
    with pytest.raises(exceptions.InvalidPath):
        kv.list_secrets("nothing", mount_point="secret")

    with pytest.raises(exceptions.InvalidRequest, match="custom_metadata validation failed"):
        kv.update_metadata(
            "app/db", custom_metadata={str(i): "v" for i in range(65)}, mount_point="secret"
        )
    kv.delete_metadata_and_all_versions("app/db", mount_point="secret")
    with pytest.raises(exceptions.InvalidPath):
        kv.read_secret_metadata("app/db", mount_point="secret")
    with pytest.raises(exceptions.InvalidPath):
        read(vault, "app/db", version=1)
    assert kv.list_secrets("app", mount_point="secret")["data"]["keys"] == ["cache", "sub/"]


def test_subkeys(vault):
    put(vault, "nested", {"user": "admin", "db": {"host": "h", "creds": {"pw": "secret-pw"}}})
    response = raw(vault, "GET", "secret/subkeys/nested")
    assert response.status_code == 200, response.text
    assert response.json()["data"]["subkeys"] == {
        "user": None,
        "db": {"host": None, "creds": {"pw": None}},
    }
    assert "secret-pw" not in response.text
    shallow = raw(vault, "GET", "secret/subkeys/nested", params={"depth": "1"})
    assert shallow.json()["data"]["subkeys"] == {"user": None, "db": None}
    assert raw(vault, "GET", "secret/subkeys/none").status_code == 404


def test_http_patch_needs_merge_patch(vault):
    put(vault, "p", {"a": 1, "b": {"c": 2}})
    wrong = raw(vault, "PATCH", "secret/data/p", {"data": {"a": 9}})
    assert wrong.status_code == 415
    assert "application/merge-patch+json" in wrong.json()["errors"][0]
    assert read(vault, "p")["data"]["metadata"]["version"] == 1
    ok = raw(
        vault, "PATCH", "secret/data/p", {"data": {"a": None, "b": {"d": 3}}, "options": {"cas": 1}},
        content_type="application/merge-patch+json",
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["data"]["version"] == 2
    assert read(vault, "p")["data"]["data"] == {"b": {"c": 2, "d": 3}}
    stale = raw(
        vault, "PATCH", "secret/data/p", {"data": {"x": 1}, "options": {"cas": 1}},
        content_type="application/merge-patch+json",
    )
    assert stale.status_code == 400
    assert stale.json()["errors"] == ["check-and-set parameter did not match the current version"]
    missing = raw(
        vault, "PATCH", "secret/data/none", {"data": {"x": 1}},
        content_type="application/merge-patch+json",
    )
    assert missing.status_code == 404

    meta = raw(
        vault, "PATCH", "secret/metadata/p", {"custom_metadata": {"team": "a"}, "max_versions": 4},
        content_type="application/merge-patch+json; charset=utf-8",
    )
    assert meta.status_code == 204, meta.text
    assert raw(vault, "PATCH", "secret/metadata/p", {"max_versions": 1}).status_code == 415
    got = vault.secrets.kv.v2.read_secret_metadata("p", mount_point="secret")["data"]
    assert got["custom_metadata"] == {"team": "a"} and got["max_versions"] == 4


def test_bad_input_is_refused_and_writes_nothing(vault):
    put(vault, "keep", {"v": "original"})

    def refused(method, path, expected_status, body=None, data=None, match=None):
        response = raw(vault, method, path, body=body, data=data)
        assert response.status_code == expected_status, (path, response.text)
        errors = response.json()["errors"]
        assert errors, response.text
        if match:
            assert match in errors[0], errors
        return errors

    refused("POST", "secret/data/keep", 400, data='{"data": {"v": ', match="malformed JSON")
    refused("POST", "secret/data/keep", 400, data="[1, 2]")
    refused("POST", "secret/data/keep", 400, body={"data": ["not", "an", "object"]})
    refused("POST", "secret/data/keep", 400, body={"data": "text"})
    refused("POST", "secret/data/keep", 400, body={"nodata": 1}, match="no data provided")
    refused("POST", "secret/data/keep", 400, body={"data": {"v": 1}, "options": {"cas": "abc"}})
    refused("POST", "secret/data/keep", 400, body={"data": {"v": 1}, "options": "cas"})
    refused("POST", "secret/metadata/keep", 400, body={"max_versions": "many"})
    refused("POST", "secret/metadata/keep", 400, body={"max_versions": -1})
    refused("POST", "secret/metadata/keep", 400, body={"cas_required": "perhaps"})
    refused("POST", "secret/metadata/keep", 400, body={"delete_version_after": "soon"})
    refused("POST", "secret/metadata/keep", 400, body={"delete_version_after": "-5s"})
    refused("POST", "secret/metadata/keep", 400, body={"custom_metadata": ["a"]})
    refused("POST", "secret/destroy/keep", 400, body={"versions": ["one"]})
    refused("POST", "secret/data/a/%2E%2E/keep", 400, body={"data": {"v": 1}}, match="..")
    refused("POST", "secret/data/a%00b", 400, body={"data": {"v": 1}})
    refused("POST", "secret/data/a//b", 400, body={"data": {"v": 1}}, match="empty path segment")
    deep = "/".join(["d"] * 100)
    refused("POST", f"secret/data/{deep}", 400, body={"data": {"v": 1}}, match="64 segments")
    refused("POST", "nowhere/data/x", 404, body={"data": {"v": 1}}, match="no handler for route")
    bad_version = raw(vault, "GET", "secret/data/keep", params={"version": "latest"})
    assert bad_version.status_code == 400

    # The documented limit: 512 KiB of JSON per version; one byte more is 413.
    limit = 512 * 1024
    filler = "x" * (limit - len('{"v":""}'))
    assert put(vault, "at-limit", {"v": filler})["data"]["version"] == 1
    over = raw(vault, "POST", "secret/data/keep", body={"data": {"v": filler + "x"}})
    assert over.status_code == 413, over.text
    assert "limit is 524288 bytes" in over.json()["errors"][0]

    # Nothing of the above was written.
    meta = vault.secrets.kv.v2.read_secret_metadata("keep", mount_point="secret")["data"]
    assert meta["current_version"] == 1
    assert meta["max_versions"] == 0 and meta["custom_metadata"] is None
    assert read(vault, "keep")["data"]["data"] == {"v": "original"}
    keys = vault.secrets.kv.v2.list_secrets("", mount_point="secret")["data"]["keys"]
    assert keys == ["at-limit", "keep"]
    assert raw(vault, "GET", "secret/bogus/keep").status_code == 404
    assert raw(vault, "LIST", "secret/data/keep").status_code == 405


def test_tokens_are_required_and_values_stay_out_of_logs(vault):
    marker = "never-in-a-log-7f3a"
    put(vault, "logged", {"pw": marker})
    anonymous = requests.get(f"{vault.url}/v1/secret/data/logged", timeout=30)
    assert anonymous.status_code == 403
    assert anonymous.json() == {"errors": ["permission denied"]}
    bogus = requests.get(
        f"{vault.url}/v1/secret/data/logged", headers={"X-Vault-Token": "nope"}, timeout=30
    )
    assert bogus.status_code == 403
    for path in ["sys/mounts", "sys/internal/ui/mounts/secret/logged", "secret/metadata/logged"]:
        assert requests.get(f"{vault.url}/v1/{path}", timeout=30).status_code == 403, path
    denied_enable = requests.post(
        f"{vault.url}/v1/sys/mounts/other", json={"type": "kv-v2"}, timeout=30
    )
    assert denied_enable.status_code == 403
    assert "other/" not in vault.sys.list_mounted_secrets_engines()["data"]
    assert marker not in vault.server.logs()


def test_sealed_server_answers_503(vault):
    put(vault, "s", {"a": 1})
    vault.sys.seal()
    for method, path in [("GET", "secret/data/s"), ("GET", "sys/mounts"), ("LIST", "secret/metadata/")]:
        response = raw(vault, method, path)
        assert response.status_code == 503, (path, response.text)
        assert response.json() == {"errors": ["Vault is sealed"]}


def test_policies_map_to_vault_capabilities(vault):
    put(vault, "app/existing", {"v": 1})
    vault.sys.create_or_update_acl_policy(
        "kv-limited",
        """
        path "secret/data/app/*"     { capabilities = ["read"] }
        path "secret/data/new/*"     { capabilities = ["create"] }
        path "secret/data/upd/*"     { capabilities = ["update"] }
        path "secret/data/both/*"    { capabilities = ["create", "update"] }
        path "secret/data/patchable" { capabilities = ["patch", "read"] }
        path "secret/data/deletable" { capabilities = ["delete"] }
        path "secret/destroy/app/*"  { capabilities = ["update"] }
        path "secret/metadata/app/"  { capabilities = ["list"] }
        path "secret/metadata/app/*" { capabilities = ["read"] }
        path "sys/mounts"            { capabilities = ["read"] }
        """,
    )
    token = vault.auth.token.create(policies=["kv-limited"])["auth"]["client_token"]
    limited = hvac.Client(url=vault.url, token=token)
    limited.server = vault.server

    assert read(limited, "app/existing")["data"]["data"] == {"v": 1}
    with pytest.raises(exceptions.Forbidden):
        put(limited, "app/existing", {"v": 2})
    # `create` lets a new key be written, not an existing one be updated.
    put(limited, "new/key", {"v": 1})
    with pytest.raises(exceptions.Forbidden):
        put(limited, "new/key", {"v": 2})
    with pytest.raises(exceptions.Forbidden):
        read(limited, "new/key")
    assert read(vault, "new/key")["data"]["metadata"]["version"] == 1
    # `update` alone the other way round; with both, new and existing keys alike.
    with pytest.raises(exceptions.Forbidden):
        put(limited, "upd/key", {"v": 1})
    put(vault, "upd/key", {"v": 1})
    put(limited, "upd/key", {"v": 2})
    put(limited, "both/key", {"v": 1})
    put(limited, "both/key", {"v": 2})
    assert read(vault, "upd/key")["data"]["metadata"]["version"] == 2
    assert read(vault, "both/key")["data"]["metadata"]["version"] == 2

    put(vault, "patchable", {"a": 1})
    patch = raw(
        limited, "PATCH", "secret/data/patchable", {"data": {"b": 2}},
        content_type="application/merge-patch+json",
    )
    assert patch.status_code == 200, patch.text
    with pytest.raises(exceptions.Forbidden):
        put(limited, "patchable", {"a": 3})

    put(vault, "deletable", {"a": 1})
    assert raw(limited, "DELETE", "secret/data/deletable").status_code == 204
    assert raw(limited, "DELETE", "secret/data/app/existing").status_code == 403
    assert raw(limited, "POST", "secret/destroy/app/existing", {"versions": [1]}).status_code == 204
    assert raw(limited, "POST", "secret/delete/app/existing", {"versions": [1]}).status_code == 403
    assert raw(limited, "DELETE", "secret/metadata/app/existing").status_code == 403

    assert limited.secrets.kv.v2.list_secrets("app", mount_point="secret")["data"]["keys"] == [
        "existing"
    ]
    with pytest.raises(exceptions.Forbidden):
        limited.secrets.kv.v2.list_secrets("", mount_point="secret")
    assert limited.secrets.kv.v2.read_secret_metadata("app/existing", mount_point="secret")
    with pytest.raises(exceptions.Forbidden):
        limited.secrets.kv.v2.read_configuration(mount_point="secret")

    assert "secret/" in limited.sys.list_mounted_secrets_engines()["data"]
    with pytest.raises(exceptions.Forbidden):
        limited.sys.enable_secrets_engine("kv-v2", path="mine")
    with pytest.raises(exceptions.Forbidden):
        limited.sys.disable_secrets_engine("secret")
    with pytest.raises(exceptions.Forbidden):
        limited.sys.tune_mount_configuration("secret", description="x")
    assert "mine/" not in vault.sys.list_mounted_secrets_engines()["data"]
    meta = vault.secrets.kv.v2.read_secret_metadata("app/existing", mount_point="secret")
    assert meta["data"]["versions"]["1"]["destroyed"] is True
