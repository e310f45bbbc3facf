"""Tokens, AppRole, ACL policies, response wrapping and the audit log through hvac (and raw
HTTP where hvac has no call), against the real arca binary.

Each test gets its own server with an audit device (see access_harness.py): at the end of
every test the audit log must hold none of the secret values the test wrote or received, and
its hash chain must verify.
"""

import json
import time

import pytest
from hvac import exceptions

from access_harness import Audited


@pytest.fixture
def vault(start_arca):
    audited = Audited(start_arca)
    yield audited
    audited.check_audit_log()


def create(vault, client=None, **kwargs):
    """auth/token/create; remembers the token; returns the `auth` block."""
    auth = (client or vault.client).auth.token.create(**kwargs)["auth"]
    vault.remember(auth["client_token"])
    return auth


def write_policy(vault, name, text):
    vault.client.sys.create_or_update_acl_policy(name=name, policy=text)


# ---------------------------------------------------------------------------------------------
# Tokens


def test_token_create_lookup_renew_revoke(vault):
    auth = create(
        vault,
        policies=["app"],
        ttl="1h",
        explicit_max_ttl="2h",
        meta={"team": "blue"},
        display_name="ci",
    )
    assert auth["policies"] == ["app", "default"]
    assert auth["token_policies"] == ["app", "default"]
    assert auth["lease_duration"] == 3600
    assert auth["renewable"] is True
    assert auth["token_type"] == "service"
    assert auth["orphan"] is False
    assert auth["entity_id"] == ""
    assert auth["metadata"] == {"team": "blue"}
    token, accessor = auth["client_token"], auth["accessor"]
    assert token != accessor

    data = vault.client.auth.token.lookup(token)["data"]
    assert data["id"] == token
    assert data["accessor"] == accessor
    assert data["policies"] == ["app", "default"]
    assert data["display_name"] == "token-ci"
    assert data["meta"] == {"team": "blue"}
    assert data["path"] == "auth/token/create"
    assert data["explicit_max_ttl"] == 7200
    assert 3590 <= data["ttl"] <= 3600
    assert data["expire_time"].endswith("Z")
    by_accessor = vault.client.auth.token.lookup_accessor(accessor)["data"]
    assert by_accessor["id"] == ""
    assert by_accessor["accessor"] == accessor

    # The token itself: lookup-self and renew-self are in the default policy.
    own = vault.as_token(token)
    assert own.auth.token.lookup_self()["data"]["accessor"] == accessor
    renewed = own.auth.token.renew_self(increment="30m")["auth"]
    assert renewed["lease_duration"] == 1800
    renewed = vault.client.auth.token.renew(token, increment=5400)["auth"]
    assert renewed["lease_duration"] == 5400
    # Beyond explicit_max_ttl the TTL is capped, with a warning.
    capped = vault.client.auth.token.renew(token, increment="10h")
    assert capped["auth"]["lease_duration"] <= 7200
    assert capped["warnings"]

    vault.client.auth.token.revoke_accessor(accessor)
    with pytest.raises(exceptions.Forbidden):
        own.auth.token.lookup_self()
    with pytest.raises(exceptions.Forbidden, match="bad token"):
        vault.client.auth.token.lookup(token)
    with pytest.raises(exceptions.InvalidRequest, match="invalid accessor"):
        vault.client.auth.token.lookup_accessor(accessor)

    second = create(vault, policies=["app"])
    vault.as_token(second["client_token"]).auth.token.revoke_self()
    with pytest.raises(exceptions.Forbidden):
        vault.client.auth.token.lookup(second["client_token"])
    third = create(vault, policies=["app"])
    vault.client.auth.token.revoke(third["client_token"])
    with pytest.raises(exceptions.Forbidden):
        vault.as_token(third["client_token"]).auth.token.lookup_self()


def test_token_ttl_expiry(vault):
    auth = create(vault, policies=["app"], ttl="2s")
    assert auth["lease_duration"] == 2
    own = vault.as_token(auth["client_token"])
    own.auth.token.lookup_self()
    time.sleep(3)
    with pytest.raises(exceptions.Forbidden):
        own.auth.token.lookup_self()
    with pytest.raises(exceptions.InvalidRequest):
        vault.client.auth.token.lookup_accessor(auth["accessor"])


def test_token_num_uses(vault):
    auth = create(vault, policies=["app"], num_uses=2)
    assert auth["num_uses"] == 2
    own = vault.as_token(auth["client_token"])
    assert own.auth.token.lookup_self()["data"]["num_uses"] == 1
    assert own.auth.token.lookup_self()["data"]["num_uses"] == 0
    with pytest.raises(exceptions.Forbidden):
        own.auth.token.lookup_self()


def test_token_ttl_syntax_and_bad_input(vault):
    for ttl, secs in [("1h", 3600), ("30m", 1800), ("3600", 3600), ("3600s", 3600), (90, 90),
                      ("1h30m", 5400)]:
        assert create(vault, policies=["app"], ttl=ttl)["lease_duration"] == secs, ttl
    for bad in [{"ttl": "1x"}, {"ttl": "-1h"}, {"num_uses": -1}, {"num_uses": "many"},
                {"policies": 7}, {"meta": "not a map"}, {"renewable": "perhaps"},
                {"type": "batch"}]:
        r = vault.raw("POST", "auth/token/create", bad)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["errors"], bad
    r = vault.raw("POST", "auth/token/create", data='{"policies": ["a"')
    assert r.status_code == 400
    assert "malformed JSON" in r.json()["errors"][0]
    r = vault.raw("POST", "auth/token/create", data="[1, 2]")
    assert r.status_code == 400
    # A policy that does not exist (yet) is allowed, as in Vault, with a warning.
    r = vault.raw("POST", "auth/token/create", {"policies": ["not-written-yet"]})
    assert r.status_code == 200
    vault.remember(r.json()["auth"]["client_token"])
    assert "does not exist" in r.json()["warnings"][0]
    # No token, an unknown token: 403 and nothing else.
    for token in ["", "arca.unknown"]:
        r = vault.raw("GET", "auth/token/lookup-self", token=token)
        assert r.status_code == 403
        assert r.json() == {"errors": ["permission denied"]}


def test_children_are_revoked_with_their_parent_unless_orphaned(vault):
    write_policy(
        vault,
        "creator",
        """
        path "auth/token/create" { capabilities = ["update"] }
        path "auth/token/create-orphan" { capabilities = ["update"] }
        """,
    )
    parent = create(vault, policies=["creator"])
    as_parent = vault.as_token(parent["client_token"])
    child = create(vault, as_parent, policies=["creator"])
    grandchild = create(vault, vault.as_token(child["client_token"]), policies=["creator"])
    assert child["orphan"] is False
    # A child cannot get a policy its parent does not have, nor create orphans by flag.
    with pytest.raises(exceptions.InvalidRequest, match="subset"):
        as_parent.auth.token.create(policies=["admin"])
    with pytest.raises(exceptions.InvalidRequest, match="sudo"):
        as_parent.auth.token.create(policies=["creator"], no_parent=True)
    orphan = vault.remember(
        as_parent.auth.token.create_orphan(policies=["creator"])["auth"]["client_token"]
    )
    assert vault.client.auth.token.lookup(orphan)["data"]["orphan"] is True

    vault.client.auth.token.revoke(parent["client_token"])
    for gone in (parent, child, grandchild):
        with pytest.raises(exceptions.Forbidden):
            vault.client.auth.token.lookup(gone["client_token"])
    vault.client.auth.token.lookup(orphan)

    # revoke-orphan: the parent goes, its children stay, as orphans.
    parent = create(vault, policies=["creator"])
    child = create(vault, vault.as_token(parent["client_token"]), policies=["creator"])
    vault.client.auth.token.revoke_and_orphan_children(parent["client_token"])
    with pytest.raises(exceptions.Forbidden):
        vault.client.auth.token.lookup(parent["client_token"])
    assert vault.client.auth.token.lookup(child["client_token"])["data"]["orphan"] is True
    # revoke-orphan needs sudo.
    with pytest.raises(exceptions.Forbidden):
        vault.as_token(child["client_token"]).auth.token.revoke_and_orphan_children(orphan)


# ---------------------------------------------------------------------------------------------
# Policies


APP_POLICY = """
# The app's secrets, but not the admin one.
path "secret/data/app/*" {
  capabilities = ["read"]
}
path "secret/data/app/admin" {
  capabilities = ["deny"]
}
path "secret/data/app/writable" {
  capabilities = ["create", "update", "read"]
}
path "secret/metadata/app/" {
  capabilities = ["list"]
}
path "secret/data/+/shared" {
  capabilities = ["read"]
}
path "sys/policies/acl" {
  capabilities = ["list"]
}
path "sys/policies/acl/app" {
  capabilities = ["read"]
}
"""


def test_policies_allow_and_deny(vault):
    root = vault.client
    root.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    for path, value in [("app/db", "db-password-1"), ("app/admin", "admin-password-2"),
                        ("other/x", "other-value-3"), ("team/shared", "shared-value-4")]:
        root.secrets.kv.v2.create_or_update_secret(path, {"v": vault.remember(value)})
    write_policy(vault, "app", APP_POLICY)
    assert root.sys.read_acl_policy("app")["data"]["policy"] == APP_POLICY
    assert {"app", "default", "root"} <= set(root.sys.list_acl_policies()["data"]["keys"])

    token = create(vault, policies=["app"])["client_token"]
    app = vault.as_token(token)
    kv = app.secrets.kv.v2
    assert kv.read_secret_version("app/db", raise_on_deleted_version=True)["data"]["data"] == {
        "v": "db-password-1"
    }
    assert kv.read_secret_version("team/shared", raise_on_deleted_version=True)["data"]["data"]
    for denied in ["app/admin", "other/x", "team/extra/shared"]:
        with pytest.raises(exceptions.Forbidden):
            kv.read_secret_version(denied, raise_on_deleted_version=True)
    # Denied: 403 with nothing about the path.
    r = vault.raw("GET", "secret/data/app/admin", token=token)
    assert (r.status_code, r.json()) == (403, {"errors": ["permission denied"]})
    r = vault.raw("GET", "secret/data/does/not/exist", token=token)
    assert (r.status_code, r.json()) == (403, {"errors": ["permission denied"]})
    with pytest.raises(exceptions.Forbidden):
        kv.create_or_update_secret("app/db", {"v": "overwrite"})
    kv.create_or_update_secret("app/writable", {"v": vault.remember("written-by-app-5")})
    assert kv.list_secrets("app")["data"]["keys"] == ["admin", "db", "writable"]
    with pytest.raises(exceptions.Forbidden):
        kv.list_secrets("other")
    with pytest.raises(exceptions.Forbidden):
        kv.delete_metadata_and_all_versions("app/db")

    # Its own sys paths: allowed; everything else in sys: denied.
    assert "app" in app.sys.list_acl_policies()["data"]["keys"]
    assert app.sys.read_acl_policy("app")["data"]["name"] == "app"
    for call in [lambda: app.sys.read_acl_policy("default"),
                 lambda: app.sys.create_or_update_acl_policy("x", 'path "*" {capabilities=["sudo"]}'),
                 lambda: app.sys.delete_acl_policy("app"),
                 lambda: app.sys.list_mounted_secrets_engines(),
                 lambda: app.auth.token.create(policies=["app"])]:
        with pytest.raises(exceptions.Forbidden):
            call()

    caps = app.sys.get_capabilities(
        paths=["secret/data/app/db", "secret/data/app/admin", "secret/data/app/writable",
               "sys/mounts"],
    )
    assert caps["secret/data/app/db"] == ["read"]
    assert caps["secret/data/app/admin"] == ["deny"]
    assert sorted(caps["secret/data/app/writable"]) == ["create", "read", "update"]
    assert caps["sys/mounts"] == ["deny"]
    one = app.adapter.post("/v1/sys/capabilities-self", json={"path": "secret/data/app/db"})
    assert one["data"]["capabilities"] == ["read"]
    assert vault.client.sys.get_capabilities(paths=["anything"])["anything"] == ["root"]
    by_token = vault.client.sys.get_capabilities(paths=["secret/data/app/admin"], token=token)
    assert by_token["capabilities"] == ["deny"]
    accessor = vault.client.auth.token.lookup(token)["data"]["accessor"]
    by_accessor = vault.client.adapter.post(
        "/v1/sys/capabilities-accessor",
        json={"accessor": accessor, "paths": ["secret/data/app/db"]},
    )
    assert by_accessor["data"]["secret/data/app/db"] == ["read"]

    # Changing the policy takes effect at once; deleting it takes everything away.
    write_policy(vault, "app", 'path "secret/data/other/*" { capabilities = ["read"] }')
    kv.read_secret_version("other/x", raise_on_deleted_version=True)
    with pytest.raises(exceptions.Forbidden):
        kv.read_secret_version("app/db", raise_on_deleted_version=True)
    root.sys.delete_acl_policy("app")
    with pytest.raises(exceptions.Forbidden):
        kv.read_secret_version("other/x", raise_on_deleted_version=True)
    # The default policy still lets the token look itself up.
    app.auth.token.lookup_self()


def test_bad_policies_store_nothing(vault):
    sys = vault.client.sys
    cases = [
        ('path "secret/*" { capabilities = ["read" }', "failed to parse policy"),
        ('path "secret/*" { capabilities = ["fly"] }', "invalid capability"),
        ('path "a/*/b" { capabilities = ["read"] }', "only allowed at the end"),
        ('path "a" { allowed_parameters = { "x" = [] } }', "not supported"),
        ("", "not supplied or empty"),
    ]
    for text, message in cases:
        with pytest.raises(exceptions.InvalidRequest, match=message):
            sys.create_or_update_acl_policy(name="broken", policy=text)
    with pytest.raises(exceptions.InvalidPath):
        sys.read_acl_policy("broken")
    assert "broken" not in sys.list_acl_policies()["data"]["keys"]
    # The parser's message says where.
    r = vault.raw("PUT", "sys/policies/acl/broken", {"policy": 'path "a" {\n  capabilities = [\n'})
    assert r.status_code == 400
    assert "failed to parse policy" in r.json()["errors"][0]
    r = vault.raw("PUT", "sys/policies/acl/broken", {"policy": 12})
    assert r.status_code == 400
    with pytest.raises(exceptions.InvalidRequest, match="root"):
        sys.create_or_update_acl_policy(name="root", policy='path "x" { capabilities = ["read"] }')
    with pytest.raises(exceptions.InvalidRequest, match="root"):
        sys.delete_acl_policy("root")
    with pytest.raises(exceptions.InvalidRequest, match="default"):
        sys.delete_acl_policy("default")
    with pytest.raises(exceptions.InvalidRequest, match="policy name"):
        sys.create_or_update_acl_policy(name="bad name!", policy='path "x" {}')
    # JSON policies are accepted, as by Vault.
    sys.create_or_update_acl_policy(
        name="json", policy={"path": {"secret/*": {"capabilities": ["read"]}}}
    )
    assert "secret/*" in sys.read_acl_policy("json")["data"]["policy"]
    # The default policy reads as Vault's text and can be rewritten, not deleted.
    assert 'path "auth/token/lookup-self"' in sys.read_acl_policy("default")["data"]["policy"]
    assert sys.read_acl_policy("root")["data"]["name"] == "root"


def test_legacy_policy_endpoints(vault):
    sys = vault.client.sys
    sys.create_or_update_policy(name="Legacy", policy='path "sys/mounts" { policy = "read" }')
    assert "legacy" in sys.list_policies()["data"]["policies"]
    read = sys.read_policy("legacy")
    assert read["data"]["rules"] == 'path "sys/mounts" { policy = "read" }'
    assert read["rules"] == read["data"]["rules"]
    token = create(vault, policies=["legacy"])["client_token"]
    vault.as_token(token).sys.list_mounted_secrets_engines()
    sys.delete_policy("legacy")
    assert "legacy" not in sys.list_policies()["data"]["policies"]
    # Sealed: every access endpoint answers 503, before looking at the token.
    sys.seal()
    for method, path in [("GET", "sys/policy/default"), ("GET", "auth/token/lookup-self"),
                         ("LIST", "sys/policies/acl"), ("POST", "auth/approle/login")]:
        r = vault.raw(method, path, {"role_id": "x"} if method == "POST" else None)
        assert (r.status_code, r.json()) == (503, {"errors": ["Vault is sealed"]}), path


# ---------------------------------------------------------------------------------------------
# AppRole


def test_approle_login_with_role_and_secret_id(vault):
    approle = vault.client.auth.approle
    write_policy(vault, "app", 'path "auth/token/lookup-self" { capabilities = ["read"] }')
    approle.create_or_update_approle(
        "web", token_policies=["app"], token_ttl="10m", token_max_ttl="1h", secret_id_num_uses=2
    )
    role = approle.read_role("web")["data"]
    assert role["token_policies"] == ["app"]
    assert role["token_ttl"] == 600
    assert role["secret_id_num_uses"] == 2
    assert approle.list_roles()["data"]["keys"] == ["web"]
    role_id = vault.remember(approle.read_role_id("web")["data"]["role_id"])
    generated = approle.generate_secret_id("web", metadata={"host": "build-7"})["data"]
    secret_id = vault.remember(generated["secret_id"])
    assert generated["secret_id_num_uses"] == 2
    accessor = generated["secret_id_accessor"]
    assert approle.list_secret_id_accessors("web")["data"]["keys"] == [accessor]
    looked = approle.read_secret_id("web", secret_id)["data"]
    assert looked["metadata"] == {"host": "build-7"}
    assert looked["secret_id_accessor"] == accessor
    assert approle.read_secret_id_accessor("web", accessor)["data"]["secret_id_num_uses"] == 2

    login = vault.client.auth.approle.login(role_id=role_id, secret_id=secret_id, use_token=False)
    auth = login["auth"]
    vault.remember(auth["client_token"])
    assert auth["policies"] == ["app", "default"]
    assert auth["metadata"] == {"host": "build-7", "role_name": "web"}
    assert auth["lease_duration"] == 600
    assert auth["orphan"] is True
    vault.as_token(auth["client_token"]).auth.token.lookup_self()

    # The second use is the last.
    vault.remember(approle.login(role_id=role_id, secret_id=secret_id, use_token=False)["auth"]
                   ["client_token"])
    with pytest.raises(exceptions.InvalidRequest, match="invalid role or secret ID"):
        approle.login(role_id=role_id, secret_id=secret_id, use_token=False)
    for bad_role, bad_secret in [("nope", secret_id), (role_id, "nope"), (role_id, "")]:
        with pytest.raises(exceptions.InvalidRequest):
            approle.login(role_id=bad_role, secret_id=bad_secret, use_token=False)

    # Destroy by secret id and by accessor.
    first = vault.remember(approle.generate_secret_id("web")["data"]["secret_id"])
    approle.destroy_secret_id("web", first)
    with pytest.raises(exceptions.InvalidRequest):
        approle.login(role_id=role_id, secret_id=first, use_token=False)
    second = approle.generate_secret_id("web")["data"]
    vault.remember(second["secret_id"])
    approle.destroy_secret_id_accessor("web", second["secret_id_accessor"])
    with pytest.raises(exceptions.InvalidRequest):
        approle.login(role_id=role_id, secret_id=second["secret_id"], use_token=False)

    # A custom role id; then the role goes and its credentials with it.
    approle.update_role_id("web", "web-role-id")
    third = vault.remember(approle.generate_secret_id("web")["data"]["secret_id"])
    vault.remember(
        approle.login(role_id="web-role-id", secret_id=third, use_token=False)["auth"]["client_token"]
    )
    approle.delete_role("web")
    with pytest.raises(exceptions.InvalidRequest):
        approle.login(role_id="web-role-id", secret_id=third, use_token=False)


def test_approle_secret_id_ttl_and_cidr_bounds(vault):
    approle = vault.client.auth.approle
    approle.create_or_update_approle("short", token_policies=["app"])
    role_id = vault.remember(approle.read_role_id("short")["data"]["role_id"])
    # A secret id with a 2 s TTL (hvac has no parameter for it: raw request).
    r = vault.raw("POST", "auth/approle/role/short/secret-id", {"ttl": "2s", "num_uses": 5})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert (data["secret_id_ttl"], data["secret_id_num_uses"]) == (2, 5)
    secret_id = vault.remember(data["secret_id"])
    vault.remember(approle.login(role_id=role_id, secret_id=secret_id, use_token=False)["auth"]
                   ["client_token"])
    time.sleep(3)
    with pytest.raises(exceptions.InvalidRequest):
        approle.login(role_id=role_id, secret_id=secret_id, use_token=False)

    # The server sees the client as 127.0.0.1: a bound elsewhere refuses it.
    approle.create_or_update_approle("far", token_policies=["app"],
                                     secret_id_bound_cidrs=["10.0.0.0/8"])
    far_id = vault.remember(approle.read_role_id("far")["data"]["role_id"])
    far_secret = vault.remember(approle.generate_secret_id("far")["data"]["secret_id"])
    with pytest.raises(exceptions.InvalidRequest, match="invalid role or secret ID"):
        approle.login(role_id=far_id, secret_id=far_secret, use_token=False)
    # A secret id's own cidr_list is checked too.
    near = vault.remember(approle.generate_secret_id("short", cidr_list=["192.168.0.0/16"])
                          ["data"]["secret_id"])
    with pytest.raises(exceptions.InvalidRequest):
        approle.login(role_id=role_id, secret_id=near, use_token=False)
    approle.create_or_update_approle("local", token_policies=["app"],
                                     secret_id_bound_cidrs=["127.0.0.1/32"],
                                     token_bound_cidrs=["10.0.0.0/8"])
    local_id = vault.remember(approle.read_role_id("local")["data"]["role_id"])
    local_secret = vault.remember(approle.generate_secret_id("local")["data"]["secret_id"])
    auth = approle.login(role_id=local_id, secret_id=local_secret, use_token=False)["auth"]
    vault.remember(auth["client_token"])
    # ...but its token is bound to 10/8, so this client cannot use it.
    with pytest.raises(exceptions.Forbidden):
        vault.as_token(auth["client_token"]).auth.token.lookup_self()
    for bad in [{"secret_id_bound_cidrs": ["10.0.0.0/33"]}, {"token_ttl": "soon"},
                {"secret_id_num_uses": -2}]:
        r = vault.raw("POST", "auth/approle/role/bad", bad)
        assert r.status_code == 400, (bad, r.text)
    r = vault.raw("GET", "auth/approle/role/bad")
    assert (r.status_code, r.json()) == (404, {"errors": []})


# ---------------------------------------------------------------------------------------------
# Response wrapping


def test_wrapping_single_use_and_expiry(vault):
    client = vault.client
    # A wrapped token creation: the token is only in the wrapped answer.
    wrapped = client.auth.token.create(policies=["app"], wrap_ttl="60s")
    assert wrapped["auth"] is None and wrapped["data"] is None
    info = wrapped["wrap_info"]
    vault.remember(info["token"])
    assert info["ttl"] == 60
    assert info["creation_path"] == "auth/token/create"
    assert info["wrapped_accessor"]
    looked = client.adapter.post("/v1/sys/wrapping/lookup", json={"token": info["token"]})
    assert looked["data"]["creation_path"] == "auth/token/create"
    assert looked["data"]["creation_ttl"] == 60
    unwrapped = client.sys.unwrap(info["token"])
    vault.remember(unwrapped["auth"]["client_token"])
    assert unwrapped["auth"]["accessor"] == info["wrapped_accessor"]
    with pytest.raises(exceptions.InvalidRequest, match="wrapping token is not valid"):
        client.sys.unwrap(info["token"])

    # Any read can be wrapped: lookup-self, unwrapped with the wrapping token as client token.
    r = vault.raw("GET", "auth/token/lookup-self", headers={"X-Vault-Wrap-TTL": "5m"})
    assert r.status_code == 200
    assert r.json()["data"] is None
    wrap_token = vault.remember(r.json()["wrap_info"]["token"])
    assert r.json()["wrap_info"]["ttl"] == 300
    own = vault.as_token(wrap_token)
    assert own.sys.unwrap()["data"]["id"] == vault.root
    with pytest.raises(exceptions.InvalidRequest):
        own.sys.unwrap()
    # A wrapping token is good for nothing else.
    r = vault.raw("GET", "auth/token/lookup-self", token=wrap_token)
    assert r.status_code == 403

    # sys/wrapping/wrap: arbitrary data, and the header is required.
    payload = {"password": vault.remember("wrapped-password-6")}
    info = client.sys.wrap(payload=payload, ttl=2)["wrap_info"]
    vault.remember(info["token"])
    r = vault.raw("POST", "sys/wrapping/wrap", {"a": "b"})
    assert (r.status_code, r.json()) == (
        400,
        {"errors": ["endpoint requires response wrapping to be used"]},
    )
    time.sleep(3)
    with pytest.raises(exceptions.InvalidRequest, match="wrapping token is not valid"):
        client.sys.unwrap(info["token"])

    # Rewrap: a new token for the same data; the old one is spent.
    info = client.sys.wrap(payload=payload, ttl=120)["wrap_info"]
    vault.remember(info["token"])
    rewrapped = client.adapter.post("/v1/sys/wrapping/rewrap", json={"token": info["token"]})
    new = vault.remember(rewrapped["wrap_info"]["token"])
    assert new != info["token"]
    with pytest.raises(exceptions.InvalidRequest):
        client.sys.unwrap(info["token"])
    assert client.sys.unwrap(new)["data"] == payload
    r = vault.raw("GET", "auth/token/lookup-self", headers={"X-Vault-Wrap-TTL": "soon"})
    assert r.status_code == 400

    # A KV read, wrapped: the secret is only in the unwrapped answer.
    client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    client.secrets.kv.v2.create_or_update_secret("wrapped", {"v": vault.remember("kv-wrapped-8")})
    r = vault.raw("GET", "secret/data/wrapped", headers={"X-Vault-Wrap-TTL": "1m"})
    assert r.status_code == 200 and "kv-wrapped-8" not in r.text
    info = r.json()["wrap_info"]
    assert info["creation_path"] == "secret/data/wrapped"
    assert client.sys.unwrap(vault.remember(info["token"]))["data"]["data"] == {"v": "kv-wrapped-8"}
    # A denied read is not wrapped: 403 as usual.
    nobody = create(vault, policies=["nothing"])["client_token"]
    r = vault.raw("GET", "secret/data/wrapped", token=nobody, headers={"X-Vault-Wrap-TTL": "1m"})
    assert (r.status_code, r.json()) == (403, {"errors": ["permission denied"]})


# ---------------------------------------------------------------------------------------------
# Audit


def test_audit_hash_and_device_listing(vault):
    client = vault.client
    client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    value = vault.remember("audit-needle-7")
    client.secrets.kv.v2.create_or_update_secret("audited", {"needle": value})
    read = client.secrets.kv.v2.read_secret_version("audited", raise_on_deleted_version=True)
    assert read["data"]["data"]["needle"] == value
    hashed = client.sys.calculate_hash("file", value)["data"]["hash"]
    assert hashed.startswith("hmac-sha256:") and len(hashed) == len("hmac-sha256:") + 64
    assert client.sys.calculate_hash("file", value)["data"]["hash"] == hashed
    devices = client.sys.list_enabled_audit_devices()["data"]
    assert devices["file/"]["type"] == "file"
    assert devices["file/"]["options"]["file_path"].endswith(vault.audit_file.name)
    with pytest.raises(exceptions.InvalidRequest, match="unknown audit backend"):
        client.sys.calculate_hash("nope", value)
    with pytest.raises(exceptions.InvalidRequest, match="configuration file"):
        client.sys.enable_audit_device("file", path="other", options={"file_path": "/tmp/x"})

    # The value went in and came out: the log has its HMAC, in the request and the response.
    lines = [json.loads(line) for line in vault.audit_file.read_text().splitlines()]
    writes = [l for l in lines if l["request"]["path"] == "secret/data/audited"]
    assert {l["type"] for l in writes} == {"request", "response"}
    assert any(l["request"].get("data") and l["request"]["data"]["data"]["needle"] == hashed
               for l in writes)
    assert any(l.get("response", {}).get("data", {}).get("data", {}).get("data", {})
               .get("needle") == hashed for l in writes)
    for line in writes:
        assert line["request"]["remote_address"] == "127.0.0.1"
        assert line["auth"]["policies"] == ["root"]
        assert line["auth"]["client_token"].startswith("hmac-sha256:")
    # A denied request is audited too, with its error.
    token = create(vault, policies=["nothing"])["client_token"]
    r = vault.raw("GET", "secret/data/audited", token=token)
    assert r.status_code == 403
    lines = [json.loads(line) for line in vault.audit_file.read_text().splitlines()]
    assert lines[-1]["type"] == "response"
    assert lines[-1]["response"]["status"] == 403
    assert lines[-1]["error"] == "permission denied"
    # Non-root tokens cannot list devices (sudo).
    with pytest.raises(exceptions.Forbidden):
        vault.as_token(token).sys.list_enabled_audit_devices()
