"""Verified identities for access policies, and Vault tokens on the AWS JSON API, against the
real arca binary (production mode: Shamir-initialised, audited; see access_harness.py).

- Access keys carry a bound service, environment and role (sys/aws/access-keys, the arca CLI).
- AppRole roles carry a bound service and environment that login writes into the token.
- A token's identity metadata is chosen only by root or sudo callers; children inherit it.
- `X-Vault-Token` authenticates AWS API requests instead of SigV4, with the token's policies
  (update on aws/<service>/<Operation>), its use limit and its CIDR bounds.
"""

import json
import os
import subprocess

import pytest
import requests

from access_harness import Audited


@pytest.fixture
def vault(start_arca):
    audited = Audited(start_arca)
    yield audited
    audited.check_audit_log()


def aws(vault, target, body, headers):
    """POST / with an AWS JSON 1.1 body and the given (authentication) headers."""
    sent = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target}
    sent.update(headers)
    return requests.post(f"{vault.url}/", data=json.dumps(body), headers=sent, timeout=30)


def token_with(vault, policies, **extra):
    body = {"policies": policies, **extra}
    response = vault.raw("POST", "auth/token/create", body)
    assert response.status_code == 200, response.text
    auth = response.json()["auth"]
    vault.remember(auth["client_token"])
    return auth


def test_access_keys_carry_a_bound_identity(vault):
    created = vault.raw(
        "POST",
        "sys/aws/access-keys",
        {"display_name": "billing", "policies": ["default"], "service": "billing",
         "environment": "prod", "role": "reader"},
    )
    assert created.status_code == 200, created.text
    data = created.json()["data"]
    vault.remember(data["secret_access_key"])
    assert (data["service"], data["environment"], data["role"]) == ("billing", "prod", "reader")
    read = vault.raw("GET", f"sys/aws/access-keys/{data['access_key_id']}").json()["data"]
    assert (read["service"], read["environment"], read["role"]) == ("billing", "prod", "reader")
    assert "secret_access_key" not in read
    listed = vault.raw("GET", "sys/aws/access-keys").json()["data"]["key_info"]
    assert listed[data["access_key_id"]]["service"] == "billing"
    # A key without a bound identity shows nulls; malformed values are refused, nothing made.
    plain = vault.raw("POST", "sys/aws/access-keys", {"policies": ["default"]}).json()["data"]
    vault.remember(plain["secret_access_key"])
    assert plain["service"] is None and plain["role"] is None
    before = len(vault.raw("GET", "sys/aws/access-keys").json()["data"]["keys"])
    for field, value in [("service", "two words"), ("environment", "x" * 129), ("role", "a\nb")]:
        bad = vault.raw("POST", "sys/aws/access-keys", {field: value})
        assert bad.status_code == 400, bad.text
        assert field in bad.json()["errors"][0] and value not in bad.json()["errors"][0]
    assert len(vault.raw("GET", "sys/aws/access-keys").json()["data"]["keys"]) == before


def test_the_cli_binds_an_identity_to_a_new_key(vault):
    env = {**os.environ, "ARCA_ADDR": vault.url, "ARCA_TOKEN": vault.root}
    done = subprocess.run(
        [os.environ["ARCA_BIN"], "kms", "access-key", "create", "--display-name", "orders",
         "--policy", "default", "--service", "orders", "--environment", "staging"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    key_id = done.stdout.split("AWS_ACCESS_KEY_ID=")[1].split()[0]
    vault.remember(done.stdout.split("AWS_SECRET_ACCESS_KEY=")[1].split()[0])
    read = vault.raw("GET", f"sys/aws/access-keys/{key_id}").json()["data"]
    assert (read["service"], read["environment"], read["role"]) == ("orders", "staging", None)
    listed = subprocess.run(
        [os.environ["ARCA_BIN"], "kms", "access-key", "list"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert f"{key_id}  orders" in listed.stdout and "service=orders,environment=staging" in listed.stdout


def test_approle_roles_bind_service_and_environment(vault):
    vault.raw("POST", "auth/approle/role/billing-api",
              {"token_policies": ["default"], "bound_service": "billing",
               "bound_environment": "prod"})
    role = vault.raw("GET", "auth/approle/role/billing-api").json()["data"]
    assert (role["bound_service"], role["bound_environment"]) == ("billing", "prod")
    role_id = vault.remember(
        vault.raw("GET", "auth/approle/role/billing-api/role-id").json()["data"]["role_id"])
    # A secret id's metadata cannot choose the identity: the role's wins, other keys stay.
    generated = vault.raw("POST", "auth/approle/role/billing-api/secret-id",
                          {"metadata": json.dumps({"service": "admin", "role": "root",
                                                   "host": "build-7"})}).json()["data"]
    secret_id = vault.remember(generated["secret_id"])
    login = requests.post(f"{vault.url}/v1/auth/approle/login",
                          json={"role_id": role_id, "secret_id": secret_id}, timeout=30)
    assert login.status_code == 200, login.text
    auth = login.json()["auth"]
    vault.remember(auth["client_token"])
    assert auth["metadata"] == {"service": "billing", "environment": "prod",
                                "host": "build-7", "role_name": "billing-api"}
    # "" unbinds; malformed values are refused.
    vault.raw("POST", "auth/approle/role/billing-api", {"bound_environment": ""})
    role = vault.raw("GET", "auth/approle/role/billing-api").json()["data"]
    assert (role["bound_service"], role["bound_environment"]) == ("billing", None)
    bad = vault.raw("POST", "auth/approle/role/billing-api", {"bound_service": "a b"})
    assert bad.status_code == 400 and "bound_service" in bad.json()["errors"][0]


def test_only_privileged_callers_choose_a_tokens_identity(vault):
    vault.client.sys.create_or_update_acl_policy(
        name="minter", policy='path "auth/token/create" { capabilities = ["update"] }')
    parent = token_with(vault, ["minter"], meta={"service": "billing", "team": "a"})
    headers = {"X-Vault-Token": parent["client_token"]}
    child = requests.post(f"{vault.url}/v1/auth/token/create",
                          json={"policies": ["minter"], "meta": {"team": "b"}},
                          headers=headers, timeout=30)
    assert child.status_code == 200, child.text
    vault.remember(child.json()["auth"]["client_token"])
    assert child.json()["auth"]["metadata"] == {"service": "billing", "team": "b"}
    for claim in [{"service": "admin"}, {"role": "admin"}, {"environment": "prod"}]:
        refused = requests.post(f"{vault.url}/v1/auth/token/create",
                                json={"policies": ["minter"], "meta": claim},
                                headers=headers, timeout=30)
        assert refused.status_code == 400, refused.text
        assert "root or sudo" in refused.json()["errors"][0]
    # Root chooses freely.
    chosen = token_with(vault, ["default"], meta={"service": "admin", "role": "ops"})
    assert chosen["metadata"] == {"service": "admin", "role": "ops"}


def test_vault_tokens_authenticate_aws_requests(vault):
    vault.client.sys.create_or_update_acl_policy(
        name="kms-user", policy='path "aws/kms/*" { capabilities = ["update"] }')
    vault.client.sys.create_or_update_acl_policy(
        name="kms-lister", policy='path "aws/kms/ListKeys" { capabilities = ["update"] }')
    user = token_with(vault, ["kms-user"])
    lister = token_with(vault, ["kms-lister"])
    made = aws(vault, "TrentService.CreateKey", {"Description": "by token"},
               {"X-Vault-Token": user["client_token"]})
    assert made.status_code == 200, made.text
    key_id = made.json()["KeyMetadata"]["KeyId"]
    listed = aws(vault, "TrentService.ListKeys", {}, {"X-Vault-Token": lister["client_token"]})
    assert listed.status_code == 200 and key_id in listed.text
    # The policy decides per operation, with AWS's error shape.
    refused = aws(vault, "TrentService.CreateKey", {}, {"X-Vault-Token": lister["client_token"]})
    assert refused.status_code == 400
    assert refused.json()["__type"] == "AccessDeniedException"
    assert refused.headers["x-amzn-errortype"] == "AccessDeniedException"
    for bad in ["arca.not-a-token", vault.root + "x"]:
        unknown = aws(vault, "TrentService.ListKeys", {}, {"X-Vault-Token": bad})
        assert unknown.json()["__type"] == "UnrecognizedClientException"
    # X-Arca-Region selects the region.
    west = aws(vault, "TrentService.CreateKey", {}, {"X-Vault-Token": user["client_token"],
                                                    "X-Arca-Region": "eu-west-1"})
    assert west.json()["KeyMetadata"]["Arn"].startswith("arn:aws:kms:eu-west-1:")
    east = aws(vault, "TrentService.ListKeys", {}, {"X-Vault-Token": user["client_token"]})
    assert west.json()["KeyMetadata"]["KeyId"] not in east.text
    # A token wins over a signature header it travels with (the signature is not read).
    both = aws(vault, "TrentService.ListKeys", {},
               {"X-Vault-Token": lister["client_token"],
                "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAXXXXXXXXXXXXXXXX/20240101/"
                                 "us-east-1/kms/aws4_request, SignedHeaders=host, Signature=" + "0" * 64})
    assert both.status_code == 200, both.text


def test_token_use_limits_and_cidr_bounds_hold_on_the_aws_api(vault):
    vault.client.sys.create_or_update_acl_policy(
        name="kms-lister", policy='path "aws/kms/ListKeys" { capabilities = ["update"] }')
    limited = token_with(vault, ["kms-lister"], num_uses=2)
    headers = {"X-Vault-Token": limited["client_token"]}
    # A refused operation spends no use.
    assert aws(vault, "TrentService.CreateKey", {}, headers).json()["__type"] == "AccessDeniedException"
    assert aws(vault, "TrentService.ListKeys", {}, headers).status_code == 200
    assert aws(vault, "TrentService.ListKeys", {}, headers).status_code == 200
    spent = aws(vault, "TrentService.ListKeys", {}, headers)
    assert spent.json()["__type"] == "UnrecognizedClientException"
    # A token bound to another network (AppRole's token_bound_cidrs) is refused from here.
    vault.raw("POST", "auth/approle/role/remote",
              {"token_policies": ["kms-lister"], "token_bound_cidrs": ["10.0.0.0/8"]})
    role_id = vault.remember(
        vault.raw("GET", "auth/approle/role/remote/role-id").json()["data"]["role_id"])
    secret_id = vault.remember(
        vault.raw("POST", "auth/approle/role/remote/secret-id").json()["data"]["secret_id"])
    elsewhere = requests.post(f"{vault.url}/v1/auth/approle/login",
                              json={"role_id": role_id, "secret_id": secret_id},
                              timeout=30).json()["auth"]
    vault.remember(elsewhere["client_token"])
    outside = aws(vault, "TrentService.ListKeys", {}, {"X-Vault-Token": elsewhere["client_token"]})
    assert outside.json()["__type"] == "UnrecognizedClientException"
    # A forwarded-for header does not move the caller into the bound network.
    forwarded = aws(vault, "TrentService.ListKeys", {},
                    {"X-Vault-Token": elsewhere["client_token"], "X-Forwarded-For": "10.1.2.3",
                     "X-Arca-Remote-Addr": "10.1.2.3"})
    assert forwarded.json()["__type"] == "UnrecognizedClientException"
