"""Clients and helpers of the Secrets Manager client tests (test_secretsmanager_*.py).

The servers are kms_harness's: development servers on 127.0.0.1:0 in their own temporary
folders, stopped by PID. Each test starts from `POST /moto-api/reset`, as suites written for
moto's server do.
"""

import json

import boto3
import botocore.config
import requests

ACCOUNT = "123456789012"


def sm_client(addr: str, region: str = "us-east-1", key_id: str = "test", secret: str = "test"):
    """boto3's Secrets Manager client pointed at arca, retries off so errors surface at once."""
    return boto3.client(
        "secretsmanager",
        endpoint_url=addr,
        region_name=region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def raw_sm(addr: str, operation: str, body: bytes, headers: dict | None = None):
    """POST / with a raw body (development servers accept any signature)."""
    all_headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": f"secretsmanager.{operation}",
        "Authorization": "AWS4-HMAC-SHA256 "
        "Credential=test/20240101/us-east-1/secretsmanager/aws4_request, "
        "SignedHeaders=host, Signature=" + "0" * 64,
    }
    all_headers.update(headers or {})
    return requests.post(f"{addr}/", data=body, headers=all_headers, timeout=30)


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def error_message(excinfo) -> str:
    return excinfo.value.response["Error"]["Message"]


def state_of(sm) -> str:
    """Everything a client can see of a region's secrets (values included), to check that a
    refused request changed nothing."""
    secrets = sm.list_secrets(IncludePlannedDeletion=True)["SecretList"]
    out = []
    for s in sorted(secrets, key=lambda s: s["Name"]):
        described = sm.describe_secret(SecretId=s["ARN"])
        described.pop("ResponseMetadata", None)
        described.pop("LastAccessedDate", None)
        versions = []
        if "DeletedDate" not in described:
            listed = sm.list_secret_version_ids(SecretId=s["ARN"], IncludeDeprecated=True)
            for v in listed["Versions"]:
                value = sm.get_secret_value(SecretId=s["ARN"], VersionId=v["VersionId"])
                versions.append(
                    [
                        v["VersionId"],
                        v.get("VersionStages", []),
                        value.get("SecretString"),
                        value.get("SecretBinary"),
                    ]
                )
        out.append([described, versions])
    return json.dumps(out, sort_keys=True, default=str)
