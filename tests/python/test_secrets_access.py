"""Secrets' access policies through the Secrets Manager API, with real identities, and the
usage metrics counted from the audit log, against the real arca binary.

Callers are what a deployment has: access keys with bound identities used by boto3 (SigV4),
tokens with identity metadata and AppRole logins used over plain HTTP with `X-Vault-Token`.
Each test has its own production-mode server with a file audit device (access_harness.py);
at its end the audit log must hold none of the secret values handled, and its chain verifies.
Policies are set with PutResourcePolicy, whose document is arca's access policy.
"""

import json
import os
import subprocess
import uuid

import boto3
import botocore.config
import pytest
import requests
from botocore.exceptions import ClientError

from access_harness import Audited

ALL_SM = 'path "aws/secretsmanager/*" { capabilities = ["update"] }'


@pytest.fixture
def vault(start_arca):
    audited = Audited(start_arca)
    audited.client.sys.create_or_update_acl_policy(name="sm", policy=ALL_SM)
    yield audited
    audited.check_audit_log()


def access_key(vault, policies=("sm",), **bound):
    """A new access key (policies, bound service/environment/role) -> (id, secret)."""
    made = vault.raw("POST", "sys/aws/access-keys",
                     {"display_name": bound.get("service") or "admin",
                      "policies": list(policies), **bound})
    assert made.status_code == 200, made.text
    data = made.json()["data"]
    vault.remember(data["secret_access_key"])
    return data["access_key_id"], data["secret_access_key"]


def boto(vault, key):
    """boto3's Secrets Manager client signing with `key`; no retries, so each call is one
    request (a throttled call would otherwise be retried)."""
    return boto3.client(
        "secretsmanager",
        endpoint_url=vault.url,
        region_name="us-east-1",
        aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


class TokenClient:
    """The Secrets Manager JSON API with a Vault token instead of a signature."""

    def __init__(self, vault, token):
        self.url, self.token = vault.url, token

    def call(self, operation, body):
        response = requests.post(
            f"{self.url}/",
            data=json.dumps(body),
            headers={"Content-Type": "application/x-amz-json-1.1",
                     "X-Amz-Target": f"secretsmanager.{operation}",
                     "X-Vault-Token": self.token},
            timeout=30,
        )
        return response.status_code, response.json()


def token(vault, meta=None, policies=("sm",)):
    made = vault.raw("POST", "auth/token/create",
                     {"policies": list(policies), "meta": meta or {}})
    assert made.status_code == 200, made.text
    return vault.remember(made.json()["auth"]["client_token"])


def approle_token(vault, role, **binding):
    vault.raw("POST", f"auth/approle/role/{role}", {"token_policies": ["sm"], **binding})
    role_id = vault.remember(
        vault.raw("GET", f"auth/approle/role/{role}/role-id").json()["data"]["role_id"])
    secret_id = vault.remember(
        vault.raw("POST", f"auth/approle/role/{role}/secret-id").json()["data"]["secret_id"])
    login = requests.post(f"{vault.url}/v1/auth/approle/login",
                          json={"role_id": role_id, "secret_id": secret_id}, timeout=30)
    assert login.status_code == 200, login.text
    return vault.remember(login.json()["auth"]["client_token"])


def create(vault, admin, name, value=None):
    value = value or f"value-{uuid.uuid4()}"
    vault.remember(value)
    return admin.create_secret(Name=name, SecretString=value)["ARN"], value


def set_policy(admin, name, **policy):
    admin.put_resource_policy(SecretId=name, ResourcePolicy=json.dumps(policy))


def code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def refused(client, name, dimension, forbidden=()):
    """Asserts GetSecretValue is refused with AccessDeniedException naming `dimension`, and
    with none of `forbidden` in the message."""
    with pytest.raises(ClientError) as excinfo:
        client.get_secret_value(SecretId=name)
    assert code(excinfo) == "AccessDeniedException", excinfo.value.response
    message = excinfo.value.response["Error"]["Message"]
    assert dimension in message, message
    for value in forbidden:
        assert value not in message, message
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def lifecycle_lines(vault):
    lines = [json.loads(line) for line in vault.audit_file.read_text().splitlines() if line]
    return [line["lifecycle"] for line in lines if line.get("type") == "lifecycle"]


# ---------------------------------------------------------------------------------------------
# Decisions


def test_services_environments_and_roles_of_access_keys(vault):
    admin = boto(vault, access_key(vault, policies=("root",)))
    _, value = create(vault, admin, "prod/db")
    set_policy(admin, "prod/db", allowed_services=["billing"], allowed_environments=["prod"],
               allowed_roles=["reader"])
    good = boto(vault, access_key(vault, service="billing", environment="prod", role="reader"))
    assert good.get_secret_value(SecretId="prod/db")["SecretString"] == value
    assert good.describe_secret(SecretId="prod/db")["Name"] == "prod/db"
    secret_words = ("billing", "orders", "staging", "writer", "reader")
    refused(boto(vault, access_key(vault, service="orders", environment="prod", role="reader")),
            "prod/db", "service", secret_words)
    refused(boto(vault, access_key(vault, service="billing", environment="staging",
                                   role="reader")), "prod/db", "environment", secret_words)
    refused(boto(vault, access_key(vault, service="billing", environment="prod",
                                   role="writer")), "prod/db", "role", secret_words)
    # A credential with nothing bound is refused by non-empty lists, root included...
    refused(boto(vault, access_key(vault)), "prod/db", "no service")
    refused(admin, "prod/db", "no service")
    # ...but root may always fix the policy itself, so a mistaken one never locks a secret.
    assert json.loads(admin.get_resource_policy(SecretId="prod/db")["ResourcePolicy"])[
        "allowed_roles"] == ["reader"]
    admin.delete_resource_policy(SecretId="prod/db")
    assert admin.get_secret_value(SecretId="prod/db")["SecretString"] == value
    # A non-root key may not administer a policy that refuses it.
    set_policy(admin, "prod/db", allowed_services=["billing"])
    other = boto(vault, access_key(vault, service="orders"))
    with pytest.raises(ClientError) as excinfo:
        other.delete_resource_policy(SecretId="prod/db")
    assert code(excinfo) == "AccessDeniedException"


def test_tokens_and_approle_logins_carry_their_identity(vault):
    admin = boto(vault, access_key(vault, policies=("root",)))
    _, value = create(vault, admin, "prod/api-key")
    set_policy(admin, "prod/api-key", allowed_services=["billing"],
               allowed_environments=["prod"], allowed_roles=["billing-api"])
    # A token whose metadata (set by root) binds the identity.
    status, body = TokenClient(vault, token(vault, {"service": "billing", "environment": "prod",
                                                    "role": "billing-api"})).call(
        "GetSecretValue", {"SecretId": "prod/api-key"})
    assert status == 200 and body["SecretString"] == value, body
    status, body = TokenClient(vault, token(vault, {"service": "billing",
                                                    "environment": "prod"})).call(
        "GetSecretValue", {"SecretId": "prod/api-key"})
    assert (status, body["__type"]) == (400, "AccessDeniedException") and "role" in body["message"]
    # An AppRole login: its role is the role name, service and environment the role's bound ones.
    logged_in = approle_token(vault, "billing-api", bound_service="billing",
                              bound_environment="prod")
    status, body = TokenClient(vault, logged_in).call("GetSecretValue",
                                                      {"SecretId": "prod/api-key"})
    assert status == 200 and body["SecretString"] == value, body
    other_role = approle_token(vault, "billing-batch", bound_service="billing",
                               bound_environment="prod")
    status, body = TokenClient(vault, other_role).call("GetSecretValue",
                                                       {"SecretId": "prod/api-key"})
    assert body["__type"] == "AccessDeniedException" and "role" in body["message"]
    unbound = approle_token(vault, "unbound")
    status, body = TokenClient(vault, unbound).call("GetSecretValue",
                                                    {"SecretId": "prod/api-key"})
    assert body["__type"] == "AccessDeniedException" and "no service" in body["message"]
    # Headers a caller can set change nothing.
    response = requests.post(
        f"{vault.url}/",
        data=json.dumps({"SecretId": "prod/api-key"}),
        headers={"Content-Type": "application/x-amz-json-1.1",
                 "X-Amz-Target": "secretsmanager.GetSecretValue", "X-Vault-Token": unbound,
                 "X-Service": "billing", "X-Environment": "prod", "X-Role": "billing-api",
                 "X-Arca-Service": "billing"},
        timeout=30,
    )
    assert response.json()["__type"] == "AccessDeniedException"
    # The token's policies still decide first: without update on the operation, no access.
    status, body = TokenClient(vault, token(vault, {"service": "billing", "environment": "prod",
                                                    "role": "billing-api"},
                                            policies=("default",))).call(
        "GetSecretValue", {"SecretId": "prod/api-key"})
    assert body["__type"] == "AccessDeniedException" and "no arca policy" in body["message"]


def test_source_networks_come_from_the_connection(vault):
    admin = boto(vault, access_key(vault, policies=("root",)))
    create(vault, admin, "net/db")
    caller = boto(vault, access_key(vault, service="billing"))
    set_policy(admin, "net/db", allowed_cidrs=["127.0.0.0/8", "::1/128"])
    assert caller.describe_secret(SecretId="net/db")["Name"] == "net/db"
    set_policy(admin, "net/db", allowed_cidrs=["10.0.0.0/8"])
    refused(caller, "net/db", "source address", ("10.0.0.0", "127.0.0.1"))
    # A forwarded-for header does not move the caller into the allowed network.
    tok = token(vault, {"service": "billing"})
    response = requests.post(
        f"{vault.url}/",
        data=json.dumps({"SecretId": "net/db"}),
        headers={"Content-Type": "application/x-amz-json-1.1",
                 "X-Amz-Target": "secretsmanager.GetSecretValue", "X-Vault-Token": tok,
                 "X-Forwarded-For": "10.1.2.3", "X-Real-IP": "10.1.2.3",
                 "X-Arca-Remote-Addr": "10.1.2.3"},
        timeout=30,
    )
    assert response.json()["__type"] == "AccessDeniedException"
    assert "source address" in response.json()["message"]


def test_operations_and_name_patterns(vault):
    admin = boto(vault, access_key(vault, policies=("root",)))
    policy = {"access_patterns": [{"path_pattern": "prod/*",
                                   "operations": ["GetSecretValue", "DescribeSecret"]}]}
    for name in ["prod/db", "prod/db/replica"]:
        create(vault, admin, name)
        set_policy(admin, name, **policy)
    app = boto(vault, access_key(vault, service="billing"))
    app.get_secret_value(SecretId="prod/db")
    app.describe_secret(SecretId="prod/db")
    with pytest.raises(ClientError) as excinfo:
        app.put_secret_value(SecretId="prod/db", SecretString=vault.remember("new-value-x1"))
    assert code(excinfo) == "AccessDeniedException"
    assert "PutSecretValue" in excinfo.value.response["Error"]["Message"]
    # `*` stays within one segment: prod/db/replica matches no pattern.
    refused(app, "prod/db/replica", "no access pattern")
    set_policy(admin, "prod/db/replica",
               access_patterns=[{"path_pattern": "prod/**", "operations": ["*"]}])
    app.put_secret_value(SecretId="prod/db/replica", SecretString=vault.remember("new-value-x2"))
    # BatchGetSecretValue reports a refusal per secret, in Errors[].
    set_policy(admin, "prod/db", allowed_services=["orders"])
    batch = app.batch_get_secret_value(SecretIdList=["prod/db", "prod/db/replica"])
    assert [v["Name"] for v in batch["SecretValues"]] == ["prod/db/replica"]
    assert [(e["SecretId"], e["ErrorCode"]) for e in batch["Errors"]] == [
        ("prod/db", "AccessDeniedException")]
    # A malformed policy is refused and the old one stays.
    with pytest.raises(ClientError) as excinfo:
        admin.put_resource_policy(SecretId="prod/db", ResourcePolicy=json.dumps(
            {"access_patterns": [{"path_pattern": "x", "operations": ["GetSecret"]}]}))
    assert code(excinfo) == "MalformedPolicyDocumentException"
    assert json.loads(admin.get_resource_policy(SecretId="prod/db")["ResourcePolicy"])[
        "allowed_services"] == ["orders"]


def test_batch_get_needs_get_secret_value_and_with_filters_list_secrets(vault):
    """As on AWS: BatchGetSecretValue needs GetSecretValue for the secrets it returns, and
    ListSecrets when filters choose them; the batch permission alone reads nothing."""
    admin = boto(vault, access_key(vault, policies=("root",)))
    _, value = create(vault, admin, "batch/one")
    vault.client.sys.create_or_update_acl_policy(
        name="batch-only",
        policy='path "aws/secretsmanager/BatchGetSecretValue" { capabilities = ["update"] }')
    vault.client.sys.create_or_update_acl_policy(
        name="batch-get",
        policy='path "aws/secretsmanager/BatchGetSecretValue" { capabilities = ["update"] }\n'
               'path "aws/secretsmanager/GetSecretValue" { capabilities = ["update"] }')

    batch_only = boto(vault, access_key(vault, policies=("batch-only",)))
    answer = batch_only.batch_get_secret_value(SecretIdList=["batch/one"])
    assert answer["SecretValues"] == []
    assert [(e["SecretId"], e["ErrorCode"]) for e in answer["Errors"]] == [
        ("batch/one", "AccessDeniedException")]
    assert "GetSecretValue" in answer["Errors"][0]["Message"]
    assert value not in json.dumps(answer, default=str)

    batch_get = boto(vault, access_key(vault, policies=("batch-get",)))
    answer = batch_get.batch_get_secret_value(SecretIdList=["batch/one"])
    assert [v["SecretString"] for v in answer["SecretValues"]] == [value]
    assert answer["Errors"] == []
    # Filters list secrets: without ListSecrets the whole request is refused.
    filters = [{"Key": "name", "Values": ["batch/"]}]
    with pytest.raises(ClientError) as excinfo:
        batch_get.batch_get_secret_value(Filters=filters)
    assert code(excinfo) == "AccessDeniedException"
    assert "ListSecrets" in excinfo.value.response["Error"]["Message"]
    answer = admin.batch_get_secret_value(Filters=filters)
    assert [v["Name"] for v in answer["SecretValues"]] == ["batch/one"]


def test_rate_limits_answer_throttling(vault):
    admin = boto(vault, access_key(vault, policies=("root",)))
    create(vault, admin, "hot/key")
    set_policy(admin, "hot/key", access_patterns=[
        {"path_pattern": "hot/**", "operations": ["GetSecretValue"], "max_requests_per_hour": 3},
        {"path_pattern": "**", "operations": ["*"]}])
    first = boto(vault, access_key(vault, service="billing"))
    for _ in range(3):
        first.get_secret_value(SecretId="hot/key")
    with pytest.raises(ClientError) as excinfo:
        first.get_secret_value(SecretId="hot/key")
    assert code(excinfo) == "ThrottlingException"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "retry in" in excinfo.value.response["Error"]["Message"]
    # Only that pattern's operation is limited, and only for that identity.
    first.describe_secret(SecretId="hot/key")
    second = boto(vault, access_key(vault, service="billing"))
    second.get_secret_value(SecretId="hot/key")
    # A token and an AppRole login are identities of their own.
    status, _ = TokenClient(vault, token(vault, {"service": "billing"})).call(
        "GetSecretValue", {"SecretId": "hot/key"})
    assert status == 200
    # Root is not exempt from rate limits.
    for _ in range(3):
        admin.get_secret_value(SecretId="hot/key")
    with pytest.raises(ClientError) as excinfo:
        admin.get_secret_value(SecretId="hot/key")
    assert code(excinfo) == "ThrottlingException"
    # All AppRole logins of a role share the role's limit.
    for _ in range(2):
        status, _ = TokenClient(vault, approle_token(vault, "worker")).call(
            "GetSecretValue", {"SecretId": "hot/key"})
        assert status == 200
    status, body = TokenClient(vault, approle_token(vault, "worker")).call(
        "GetSecretValue", {"SecretId": "hot/key"})
    assert status == 200
    status, body = TokenClient(vault, approle_token(vault, "worker")).call(
        "GetSecretValue", {"SecretId": "hot/key"})
    assert (status, body["__type"]) == (400, "ThrottlingException")


# ---------------------------------------------------------------------------------------------
# Audit and metrics


def test_every_decision_is_audited_and_metrics_count_them(vault):
    admin = boto(vault, access_key(vault, policies=("root",)))
    arn, value = create(vault, admin, "prod/metrics")
    set_policy(admin, "prod/metrics", allowed_services=["billing", "orders"])
    billing = boto(vault, access_key(vault, service="billing"))
    orders = boto(vault, access_key(vault, service="orders"))
    web = boto(vault, access_key(vault, service="web"))
    for _ in range(4):
        assert billing.get_secret_value(SecretId="prod/metrics")["SecretString"] == value
    orders.get_secret_value(SecretId=arn)
    orders.describe_secret(SecretId="prod/metrics")
    for _ in range(2):
        with pytest.raises(ClientError):
            web.get_secret_value(SecretId="prod/metrics")
    status, _ = TokenClient(vault, token(vault, {"service": "billing"})).call(
        "GetSecretValue", {"SecretId": "prod/metrics"})
    assert status == 200

    lines = [l for l in lifecycle_lines(vault) if l["secret"]["name"] == "prod/metrics"]
    allowed = [l for l in lines if l["outcome"] == "allowed"]
    denied = [l for l in lines if l["outcome"] == "denied"]
    # The admin's PutResourcePolicy (before a policy existed) is an allowed access too.
    assert len(allowed) == 1 + 4 + 2 + 1 and len(denied) == 2
    assert all(l["secret"]["arn"] == arn and l["region"] == "us-east-1" for l in lines)
    assert {l["identity"]["service"] for l in denied} == {"web"}
    assert all("service" in l["reason"] and "web" not in l["reason"] for l in denied)
    assert all(l["identity"]["source"] in ("127.0.0.1", "::1") for l in lines)
    assert all(l["identity"]["principal"].startswith(("access-key:AKIA", "token:"))
               for l in lines)
    assert value not in vault.audit_file.read_text()

    metrics = vault.raw("GET", "sys/secrets-metrics/prod/metrics?since=1h")
    assert metrics.status_code == 200, metrics.text
    data = metrics.json()["data"]
    assert data["total_accesses"] == 8
    assert data["denied"] == 2
    assert data["services"] == ["billing", "orders"] and data["unique_services"] == 2
    assert data["unique_principals"] == 4  # admin, billing, orders, the token (web was denied)
    assert data["by_operation"] == {"PutResourcePolicy": 1, "GetSecretValue": 6,
                                    "DescribeSecret": 1}
    # The peak hour is the clock hour with most of the allowed lines (they may straddle one).
    per_hour = {}
    for line in vault.audit_file.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("type") == "lifecycle" and entry["lifecycle"]["outcome"] == "allowed" \
                and entry["lifecycle"]["secret"]["name"] == "prod/metrics":
            hour = entry["time"][:13] + ":00:00Z"
            per_hour[hour] = per_hour.get(hour, 0) + 1
    peak = max(sorted(per_hour.items()), key=lambda item: item[1])
    assert data["peak_hour"] == {"start": peak[0], "requests": peak[1]}
    assert abs(data["average_requests_per_hour"] - 8.0) < 0.01
    # The same figures by ARN, and none in another region or before the accesses.
    by_arn = vault.raw("GET", f"sys/secrets-metrics/{arn}?since=1h").json()["data"]
    assert by_arn["total_accesses"] == 8
    west = vault.raw("GET", "sys/secrets-metrics/prod/metrics?since=1h&region=eu-west-1")
    assert west.json()["data"]["total_accesses"] == 0
    past = vault.raw("GET", "sys/secrets-metrics/prod/metrics?since=2h&until=1h")
    assert past.json()["data"]["total_accesses"] == 0
    assert past.json()["data"]["peak_hour"] is None


def test_metrics_need_a_grant_and_a_file_device(vault, start_arca):
    admin = boto(vault, access_key(vault, policies=("root",)))
    create(vault, admin, "team-a/db")
    create(vault, admin, "team-b/db")
    admin.get_secret_value(SecretId="team-a/db")
    vault.client.sys.create_or_update_acl_policy(
        name="team-a-metrics",
        policy='path "sys/secrets-metrics/team-a/*" { capabilities = ["read"] }')
    reader = token(vault, policies=("team-a-metrics",))
    seen = vault.raw("GET", "sys/secrets-metrics/team-a/db?since=1h", token=reader)
    assert seen.status_code == 200 and seen.json()["data"]["total_accesses"] == 1
    assert vault.raw("GET", "sys/secrets-metrics/team-b/db", token=reader).status_code == 403
    assert vault.raw("GET", "sys/secrets-metrics/team-a/db", token="nope").status_code == 403
    for query in ["since=yesterday", "since=1h&until=2h", "until=-3"]:
        bad = vault.raw("GET", f"sys/secrets-metrics/team-a/db?{query}")
        assert bad.status_code == 400, (query, bad.text)
    # The CLI shows the same figures.
    env = {**os.environ, "ARCA_ADDR": vault.url, "ARCA_TOKEN": reader}
    done = subprocess.run([os.environ["ARCA_BIN"], "secrets", "metrics", "team-a/db",
                           "--since", "1h"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Total accesses     1" in done.stdout, done.stdout
    done = subprocess.run([os.environ["ARCA_BIN"], "secrets", "metrics", "team-a/db",
                           "--since", "1h", "--format", "json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert json.loads(done.stdout)["data"]["total_accesses"] == 1
    denied = subprocess.run([os.environ["ARCA_BIN"], "secrets", "metrics", "team-b/db"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert denied.returncode == 1 and "permission denied" in denied.stderr
    # A server without a file audit device says why it cannot count.
    server = start_arca()
    init = requests.put(f"{server.addr}/v1/sys/init",
                        json={"secret_shares": 1, "secret_threshold": 1}, timeout=60).json()
    requests.put(f"{server.addr}/v1/sys/unseal", json={"key": init["keys"][0]}, timeout=60)
    vault.remember(init["root_token"])
    vault.remember(init["keys"][0])
    response = requests.get(f"{server.addr}/v1/sys/secrets-metrics/team-a/db",
                            headers={"X-Vault-Token": init["root_token"]}, timeout=30)
    assert response.status_code == 400
    assert "no file audit device" in response.json()["errors"][0]
