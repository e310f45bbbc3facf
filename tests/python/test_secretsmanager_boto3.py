"""boto3 (the real AWS SDK for Python) against arca's Secrets Manager API, with only the
endpoint changed.

One development server for the module; each test starts from `POST /moto-api/reset`. Every
operation arca implements is called here, and every bad input of the issue (unknown secret,
version or label; both SecretString and SecretBinary; values over 64 KiB; invalid recovery
windows; malformed JSON) gets its exact AWS error, with nothing changed after it.
"""

import base64
import json
import re
import uuid

import pytest
import requests
from botocore.exceptions import ClientError, ParamValidationError

from kms_harness import Servers, kms_client, reset
from secretsmanager_harness import (
    ACCOUNT,
    error_code,
    error_message,
    raw_sm,
    sm_client,
    state_of,
)

MARKED = "You can't perform this operation on the secret because it was marked for deletion."


@pytest.fixture(scope="module")
def server():
    group = Servers()
    yield group.dev()
    group.close()


@pytest.fixture
def sm(server):
    reset(server.addr)
    yield sm_client(server.addr)
    reset(server.addr)


def token(n: int) -> str:
    return str(uuid.UUID(int=n))


def test_create_get_describe_and_arn_forms(sm):
    created = sm.create_secret(
        Name="prod/db", SecretString="s3cret", Description="the db", Tags=[{"Key": "team", "Value": "a"}]
    )
    assert re.fullmatch(
        rf"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:prod/db-[A-Za-z0-9]{{6}}", created["ARN"]
    ), created["ARN"]
    assert created["Name"] == "prod/db"
    uuid.UUID(created["VersionId"])
    partial = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:prod/db"
    for secret_id in ["prod/db", created["ARN"], partial]:
        got = sm.get_secret_value(SecretId=secret_id)
        assert got["SecretString"] == "s3cret"
        assert got["ARN"] == created["ARN"] and got["Name"] == "prod/db"
        assert got["VersionId"] == created["VersionId"]
        assert got["VersionStages"] == ["AWSCURRENT"]
        assert "SecretBinary" not in got
    described = sm.describe_secret(SecretId="prod/db")
    assert described["ARN"] == created["ARN"]
    assert described["Description"] == "the db"
    assert described["Tags"] == [{"Key": "team", "Value": "a"}]
    assert described["VersionIdsToStages"] == {created["VersionId"]: ["AWSCURRENT"]}
    assert "KmsKeyId" not in described, "the default key is not named, as in AWS"
    assert "DeletedDate" not in described and "RotationEnabled" not in described
    assert described["LastAccessedDate"].timestamp() % 86400 == 0, "day granularity"
    assert described["CreatedDate"] <= described["LastChangedDate"]


def test_binary_secrets(sm):
    data = bytes(range(256))
    sm.create_secret(Name="bin", SecretBinary=data)
    got = sm.get_secret_value(SecretId="bin")
    assert got["SecretBinary"] == data and "SecretString" not in got
    sm.put_secret_value(SecretId="bin", SecretString="now text")
    assert sm.get_secret_value(SecretId="bin")["SecretString"] == "now text"
    assert sm.get_secret_value(SecretId="bin", VersionStage="AWSPREVIOUS")["SecretBinary"] == data


def test_put_moves_current_and_previous(sm):
    v1 = sm.create_secret(Name="s", SecretString="v1")["VersionId"]
    put = sm.put_secret_value(SecretId="s", SecretString="v2")
    v2 = put["VersionId"]
    assert put["VersionStages"] == ["AWSCURRENT"]
    stages = sm.describe_secret(SecretId="s")["VersionIdsToStages"]
    assert stages == {v1: ["AWSPREVIOUS"], v2: ["AWSCURRENT"]}
    v3 = sm.put_secret_value(SecretId="s", SecretString="v3")["VersionId"]
    stages = sm.describe_secret(SecretId="s")["VersionIdsToStages"]
    assert stages == {v2: ["AWSPREVIOUS"], v3: ["AWSCURRENT"]}, "v1 is deprecated"
    assert sm.get_secret_value(SecretId="s")["SecretString"] == "v3"
    assert sm.get_secret_value(SecretId="s", VersionStage="AWSPREVIOUS")["SecretString"] == "v2"
    old = sm.get_secret_value(SecretId="s", VersionId=v1)
    assert old["SecretString"] == "v1" and old.get("VersionStages", []) == []
    # Custom labels and AWSPENDING leave AWSCURRENT where it is.
    pending = sm.put_secret_value(
        SecretId="s", SecretString="v4", VersionStages=["AWSPENDING", "blue"]
    )
    assert pending["VersionStages"] == ["AWSPENDING", "blue"]
    assert sm.get_secret_value(SecretId="s")["SecretString"] == "v3"
    assert sm.get_secret_value(SecretId="s", VersionStage="blue")["SecretString"] == "v4"
    both = sm.get_secret_value(SecretId="s", VersionId=pending["VersionId"], VersionStage="AWSPENDING")
    assert both["SecretString"] == "v4"


def test_client_request_token_idempotency(sm):
    first = sm.create_secret(Name="idem", SecretString="one", ClientRequestToken=token(1))
    assert first["VersionId"] == token(1)
    again = sm.create_secret(Name="idem", SecretString="one", ClientRequestToken=token(1))
    assert again["VersionId"] == token(1) and again["ARN"] == first["ARN"]
    before = state_of(sm)
    with pytest.raises(ClientError) as exc:
        sm.create_secret(Name="idem", SecretString="other", ClientRequestToken=token(1))
    assert error_code(exc) == "ResourceExistsException"
    with pytest.raises(ClientError) as exc:
        sm.create_secret(Name="idem", SecretString="one")
    assert error_code(exc) == "ResourceExistsException"
    assert error_message(exc) == "The operation failed because the secret idem already exists."
    put = sm.put_secret_value(SecretId="idem", SecretString="two", ClientRequestToken=token(2))
    put_again = sm.put_secret_value(SecretId="idem", SecretString="two", ClientRequestToken=token(2))
    assert put == {**put_again, "ResponseMetadata": put["ResponseMetadata"]}
    assert len(sm.list_secret_version_ids(SecretId="idem")["Versions"]) == 2
    with pytest.raises(ClientError) as exc:
        sm.put_secret_value(SecretId="idem", SecretString="three", ClientRequestToken=token(2))
    assert error_code(exc) == "ResourceExistsException"
    assert token(2) in error_message(exc)
    assert sm.get_secret_value(SecretId="idem")["SecretString"] == "two"
    assert before != state_of(sm)  # the successful put changed it; the refusals did not:
    after_put = state_of(sm)
    with pytest.raises(ClientError):
        sm.put_secret_value(SecretId="idem", SecretString="four", ClientRequestToken=token(2))
    assert state_of(sm) == after_put


def test_update_secret(sm):
    v1 = sm.create_secret(Name="u", SecretString="v1")["VersionId"]
    out = sm.update_secret(SecretId="u", Description="new words")
    assert "VersionId" not in out
    assert sm.describe_secret(SecretId="u")["Description"] == "new words"
    kms = kms_client(sm.meta.endpoint_url)
    key = kms.create_key(Description="for u")["KeyMetadata"]
    out = sm.update_secret(SecretId="u", SecretString="v2", KmsKeyId=key["Arn"])
    v2 = out["VersionId"]
    described = sm.describe_secret(SecretId="u")
    assert described["KmsKeyId"] == key["Arn"]
    assert described["VersionIdsToStages"] == {v1: ["AWSPREVIOUS"], v2: ["AWSCURRENT"]}
    for v in sm.list_secret_version_ids(SecretId="u")["Versions"]:
        assert v["KmsKeyIds"] == [key["Arn"]], "labelled versions are re-encrypted"
    assert sm.get_secret_value(SecretId="u")["SecretString"] == "v2"
    assert sm.get_secret_value(SecretId="u", VersionId=v1)["SecretString"] == "v1"


def test_update_secret_version_stage(sm):
    v1 = sm.create_secret(Name="st", SecretString="v1")["VersionId"]
    v2 = sm.put_secret_value(SecretId="st", SecretString="v2", VersionStages=["AWSPENDING"])[
        "VersionId"
    ]
    before = state_of(sm)
    with pytest.raises(ClientError) as exc:
        sm.update_secret_version_stage(SecretId="st", VersionStage="AWSCURRENT", MoveToVersionId=v2)
    assert error_code(exc) == "InvalidParameterException"
    assert v1 in error_message(exc)
    with pytest.raises(ClientError) as exc:
        sm.update_secret_version_stage(
            SecretId="st", VersionStage="AWSCURRENT", MoveToVersionId=token(99), RemoveFromVersionId=v1
        )
    assert error_code(exc) == "InvalidParameterException"
    assert state_of(sm) == before
    out = sm.update_secret_version_stage(
        SecretId="st", VersionStage="AWSCURRENT", MoveToVersionId=v2, RemoveFromVersionId=v1
    )
    assert out["Name"] == "st"
    # The new value is served at once (moto serves a stale one here).
    assert sm.get_secret_value(SecretId="st")["SecretString"] == "v2"
    stages = sm.describe_secret(SecretId="st")["VersionIdsToStages"]
    assert stages == {v1: ["AWSPREVIOUS"], v2: ["AWSPENDING", "AWSCURRENT"]}
    sm.update_secret_version_stage(SecretId="st", VersionStage="AWSPENDING", RemoveFromVersionId=v2)
    sm.update_secret_version_stage(SecretId="st", VersionStage="green", MoveToVersionId=v1)
    stages = sm.describe_secret(SecretId="st")["VersionIdsToStages"]
    assert stages == {v1: ["AWSPREVIOUS", "green"], v2: ["AWSCURRENT"]}


def test_unknown_secret_version_and_label(sm):
    v1 = sm.create_secret(Name="known", SecretString="x")["VersionId"]
    before = state_of(sm)
    for call in [
        lambda: sm.get_secret_value(SecretId="unknown"),
        lambda: sm.describe_secret(SecretId="unknown"),
        lambda: sm.put_secret_value(SecretId="unknown", SecretString="x"),
        lambda: sm.update_secret(SecretId="unknown", Description="x"),
        lambda: sm.delete_secret(SecretId="unknown"),
        lambda: sm.restore_secret(SecretId="unknown"),
        lambda: sm.tag_resource(SecretId="unknown", Tags=[{"Key": "a", "Value": "b"}]),
        lambda: sm.list_secret_version_ids(SecretId="unknown"),
        lambda: sm.get_secret_value(
            SecretId=f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:known-ZZZZZZ"
        ),
        lambda: sm.get_secret_value(SecretId=f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:known"),
    ]:
        with pytest.raises(ClientError) as exc:
            call()
        assert error_code(exc) == "ResourceNotFoundException"
        assert error_message(exc) == "Secrets Manager can't find the specified secret."
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as exc:
        sm.get_secret_value(SecretId="known", VersionId=token(7))
    assert error_code(exc) == "ResourceNotFoundException"
    assert error_message(exc) == (
        f"Secrets Manager can't find the specified secret value for VersionId: {token(7)}"
    )
    with pytest.raises(ClientError) as exc:
        sm.get_secret_value(SecretId="known", VersionStage="NOPE")
    assert error_code(exc) == "ResourceNotFoundException"
    assert error_message(exc) == (
        "Secrets Manager can't find the specified secret value for staging label: NOPE"
    )
    with pytest.raises(ClientError) as exc:
        sm.get_secret_value(SecretId="known", VersionId=v1, VersionStage="AWSPREVIOUS")
    assert error_code(exc) == "InvalidRequestException"
    # A secret created without a value has no AWSCURRENT value yet.
    sm.create_secret(Name="empty")
    with pytest.raises(ClientError) as exc:
        sm.get_secret_value(SecretId="empty")
    assert error_code(exc) == "ResourceNotFoundException"
    sm.delete_secret(SecretId="empty", ForceDeleteWithoutRecovery=True)
    assert state_of(sm) == before


def test_bad_values_change_nothing(sm):
    sm.create_secret(Name="keep", SecretString="x")
    before = state_of(sm)
    with pytest.raises(ClientError) as exc:
        sm.create_secret(Name="both", SecretString="a", SecretBinary=b"b")
    assert error_code(exc) == "InvalidParameterException"
    assert error_message(exc) == (
        "You can't specify both a binary secret value and a string secret value in the same secret."
    )
    with pytest.raises(ClientError) as exc:
        sm.put_secret_value(SecretId="keep", SecretString="a", SecretBinary=b"b")
    assert error_code(exc) == "InvalidParameterException"
    with pytest.raises(ClientError) as exc:
        sm.update_secret(SecretId="keep", SecretString="a", SecretBinary=b"b")
    assert error_code(exc) == "InvalidParameterException"
    over = "x" * 65537
    for call in [
        lambda: sm.create_secret(Name="big", SecretString=over),
        lambda: sm.create_secret(Name="big", SecretBinary=b"\0" * 65537),
        lambda: sm.put_secret_value(SecretId="keep", SecretString=over),
        lambda: sm.put_secret_value(SecretId="keep", SecretBinary=b"\0" * 65537),
        lambda: sm.update_secret(SecretId="keep", SecretString=over),
        # Text counts in bytes: 32,769 two-byte characters are 65,538 bytes.
        lambda: sm.put_secret_value(SecretId="keep", SecretString="é" * 32769),
    ]:
        with pytest.raises(ClientError) as exc:
            call()
        assert error_code(exc) == "ValidationException"
        assert "Member must have length less than or equal to 65536" in error_message(exc)
        assert "xxxx" not in error_message(exc), "values are never quoted"
    with pytest.raises(ClientError) as exc:
        sm.create_secret(Name="bad name!", SecretString="x")
    assert error_code(exc) == "InvalidParameterException"
    with pytest.raises(ClientError) as exc:
        sm.put_secret_value(SecretId="keep")
    assert error_code(exc) == "InvalidParameterException"
    assert state_of(sm) == before
    # The limit itself fits.
    sm.put_secret_value(SecretId="keep", SecretString="é" * 32768)
    sm.put_secret_value(SecretId="keep", SecretString="x" * 65536)
    assert len(sm.get_secret_value(SecretId="keep")["SecretString"]) == 65536


def test_malformed_requests(server, sm):
    sm.create_secret(Name="m", SecretString="x")
    before = state_of(sm)
    cases = [
        (b'{"Name": "m2", "SecretString": "x"', "SerializationException"),
        (b"[1, 2]", "SerializationException"),
        (b'{"Name": 5}', "SerializationException"),
        (b'{"Name": "m3", "SecretBinary": "!!not base64"}', "SerializationException"),
        (b'{"SecretString": "x"}', "ValidationException"),
        (b'{"Name": "m4", "ClientRequestToken": "short"}', "ValidationException"),
        (b'{"Name": "m5", "Tags": [{"Value": "v"}]}', "ValidationException"),
    ]
    for body, code in cases:
        response = raw_sm(server.addr, "CreateSecret", body)
        assert response.status_code == 400, (body, response.text)
        assert response.headers["content-type"] == "application/x-amz-json-1.1"
        assert response.json()["__type"] == code, (body, response.text)
        assert response.headers["x-amzn-errortype"] == code
        assert response.headers.get("x-amzn-requestid")
    response = raw_sm(server.addr, "GetSecretValue", b'{"SecretId": "m", "VersionStage": 7}')
    assert response.json()["__type"] == "SerializationException"
    response = raw_sm(server.addr, "NoSuchOperation", b"{}")
    assert response.json()["__type"] == "UnknownOperationException"
    response = raw_sm(server.addr, "ReplicateSecretToRegions", b'{"SecretId": "m"}')
    assert response.json()["__type"] == "UnsupportedOperationException"
    response = raw_sm(server.addr, "GetRandomPassword", b'{"PasswordLength": 0}')
    assert response.json()["__type"] == "ValidationException"
    assert state_of(sm) == before


def test_delete_restore_and_recovery_windows(sm):
    created = sm.create_secret(Name="del", SecretString="x")
    before = state_of(sm)
    for days in [0, 6, 31, 365]:
        with pytest.raises(ClientError) as exc:
            sm.delete_secret(SecretId="del", RecoveryWindowInDays=days)
        assert error_code(exc) == "InvalidParameterException"
        assert error_message(exc) == (
            "The RecoveryWindowInDays value must be between 7 and 30 days (inclusive)."
        )
    with pytest.raises(ClientError) as exc:
        sm.delete_secret(SecretId="del", RecoveryWindowInDays=7, ForceDeleteWithoutRecovery=True)
    assert error_code(exc) == "InvalidParameterException"
    assert state_of(sm) == before
    deleted = sm.delete_secret(SecretId="del", RecoveryWindowInDays=7)
    assert deleted["ARN"] == created["ARN"]
    described = sm.describe_secret(SecretId="del")
    assert described["DeletedDate"] == deleted["DeletionDate"]
    delta = deleted["DeletionDate"] - described["LastChangedDate"]
    assert 7 * 86400 - 5 <= delta.total_seconds() <= 7 * 86400 + 5
    marked = [
        lambda: sm.get_secret_value(SecretId="del"),
        lambda: sm.put_secret_value(SecretId="del", SecretString="y"),
        lambda: sm.update_secret(SecretId="del", Description="y"),
        lambda: sm.tag_resource(SecretId="del", Tags=[{"Key": "a", "Value": "b"}]),
        lambda: sm.untag_resource(SecretId="del", TagKeys=["a"]),
        lambda: sm.delete_secret(SecretId="del"),
        lambda: sm.list_secret_version_ids(SecretId="del"),
        lambda: sm.put_resource_policy(SecretId="del", ResourcePolicy="{}"),
    ]
    for call in marked:
        with pytest.raises(ClientError) as exc:
            call()
        assert error_code(exc) == "InvalidRequestException"
        assert error_message(exc) == MARKED
    with pytest.raises(ClientError) as exc:
        sm.create_secret(Name="del", SecretString="again")
    assert error_code(exc) == "InvalidRequestException"
    assert sm.list_secrets()["SecretList"] == []
    assert [s["Name"] for s in sm.list_secrets(IncludePlannedDeletion=True)["SecretList"]] == ["del"]
    batch = sm.batch_get_secret_value(SecretIdList=["del"])
    assert batch["Errors"][0]["ErrorCode"] == "InvalidRequestException"
    restored = sm.restore_secret(SecretId="del")
    assert restored["ARN"] == created["ARN"]
    assert "DeletedDate" not in sm.describe_secret(SecretId="del")
    assert sm.get_secret_value(SecretId="del")["SecretString"] == "x"
    # Forced: gone at once, and the name is free again under a new ARN.
    forced = sm.delete_secret(SecretId="del", ForceDeleteWithoutRecovery=True)
    assert forced["Name"] == "del"
    with pytest.raises(ClientError) as exc:
        sm.describe_secret(SecretId="del")
    assert error_code(exc) == "ResourceNotFoundException"
    again = sm.create_secret(Name="del", SecretString="new")
    assert again["ARN"] != created["ARN"]
    with pytest.raises(ClientError) as exc:
        sm.get_secret_value(SecretId=created["ARN"])
    assert error_code(exc) == "ResourceNotFoundException"
    # Forcing the deletion of a secret that does not exist succeeds, as AWS documents.
    assert sm.delete_secret(SecretId="never-was", ForceDeleteWithoutRecovery=True)["Name"] == "never-was"
    # The default window is 30 days.
    default = sm.delete_secret(SecretId="del")
    described = sm.describe_secret(SecretId="del")
    delta = default["DeletionDate"] - described["LastChangedDate"]
    assert 30 * 86400 - 5 <= delta.total_seconds() <= 30 * 86400 + 5


def test_list_filters_sorting_and_pages(sm):
    for i in range(7):
        sm.create_secret(
            Name=f"app/s{i}",
            SecretString="x",
            Description="Even one" if i % 2 == 0 else "odd one",
            Tags=[{"Key": "n", "Value": str(i)}, {"Key": "team", "Value": "pay" if i < 3 else "ops"}],
        )
    sm.create_secret(Name="other", SecretString="y")

    def names(**kwargs):
        return sorted(s["Name"] for s in sm.list_secrets(**kwargs)["SecretList"])

    assert names(Filters=[{"Key": "name", "Values": ["app/"]}]) == [f"app/s{i}" for i in range(7)]
    assert names(Filters=[{"Key": "name", "Values": ["!app/"]}]) == ["other"]
    assert names(Filters=[{"Key": "description", "Values": ["even"]}]) == [
        "app/s0", "app/s2", "app/s4", "app/s6"
    ]
    assert names(Filters=[{"Key": "tag-value", "Values": ["pay"]}]) == ["app/s0", "app/s1", "app/s2"]
    assert names(
        Filters=[{"Key": "tag-value", "Values": ["pay"]}, {"Key": "description", "Values": ["odd"]}]
    ) == ["app/s1"]
    assert names(Filters=[{"Key": "tag-key", "Values": ["team"]}]) == [f"app/s{i}" for i in range(7)]
    assert names(Filters=[{"Key": "all", "Values": ["s3"]}]) == ["app/s3"]
    assert names(Filters=[{"Key": "primary-region", "Values": ["us-east"]}]) == names()
    entry = sm.list_secrets(Filters=[{"Key": "name", "Values": ["other"]}])["SecretList"][0]
    assert list(entry["SecretVersionsToStages"].values()) == [["AWSCURRENT"]]
    # Sorting.
    by_name = sm.list_secrets(SortBy="name", SortOrder="asc")["SecretList"]
    assert [s["Name"] for s in by_name] == sorted(s["Name"] for s in by_name)
    by_name_desc = sm.list_secrets(SortBy="name", SortOrder="desc")["SecretList"]
    assert [s["Name"] for s in by_name_desc] == [s["Name"] for s in reversed(by_name)]
    # boto3's paginator walks every page once.
    pages = list(sm.get_paginator("list_secrets").paginate(PaginationConfig={"PageSize": 3}))
    assert len(pages) == 3
    seen = [s["Name"] for p in pages for s in p["SecretList"]]
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 8
    with pytest.raises(ClientError) as exc:
        sm.list_secrets(NextToken="not-a-token")
    assert error_code(exc) == "InvalidNextTokenException"
    with pytest.raises(ClientError) as exc:
        sm.list_secrets(Filters=[{"Key": "colour", "Values": ["x"]}])
    assert error_code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        sm.list_secrets(MaxResults=101)
    assert error_code(exc) == "ValidationException"


def test_list_secret_version_ids(sm):
    sm.create_secret(Name="v", SecretString="0")
    ids = [sm.put_secret_value(SecretId="v", SecretString=str(i))["VersionId"] for i in range(1, 5)]
    listed = sm.list_secret_version_ids(SecretId="v")
    assert listed["Name"] == "v" and ":secret:v-" in listed["ARN"]
    assert {v["VersionId"] for v in listed["Versions"]} == {ids[-1], ids[-2]}
    everything = sm.list_secret_version_ids(SecretId="v", IncludeDeprecated=True)["Versions"]
    assert len(everything) == 5
    assert everything[0]["VersionId"] == ids[-1], "newest first"
    for v in everything:
        assert v["KmsKeyIds"][0].startswith(f"arn:aws:kms:us-east-1:{ACCOUNT}:key/")
    pages = []
    kwargs = {"SecretId": "v", "IncludeDeprecated": True, "MaxResults": 2}
    while True:
        page = sm.list_secret_version_ids(**kwargs)
        pages.append(page)
        if "NextToken" not in page:
            break
        kwargs["NextToken"] = page["NextToken"]
    assert len(pages) == 3
    assert [v["VersionId"] for p in pages for v in p["Versions"]] == [
        v["VersionId"] for v in everything
    ]
    with pytest.raises(ClientError) as exc:
        sm.list_secret_version_ids(SecretId="v", NextToken="bogus")
    assert error_code(exc) == "InvalidNextTokenException"


def test_batch_get_secret_value(sm):
    for i in range(5):
        sm.create_secret(Name=f"b/{i}", SecretString=f"value-{i}", Tags=[{"Key": "batch", "Value": "yes"}])
    out = sm.batch_get_secret_value(SecretIdList=["b/0", "b/3", "missing"])
    assert sorted(v["SecretString"] for v in out["SecretValues"]) == ["value-0", "value-3"]
    assert out["Errors"] == [
        {
            "SecretId": "missing",
            "ErrorCode": "ResourceNotFoundException",
            "Message": "Secrets Manager can't find the specified secret.",
        }
    ]
    pages = []
    kwargs = {"Filters": [{"Key": "tag-key", "Values": ["batch"]}], "MaxResults": 2}
    while True:
        page = sm.batch_get_secret_value(**kwargs)
        assert page["Errors"] == []
        pages.append(page)
        if "NextToken" not in page:
            break
        kwargs["NextToken"] = page["NextToken"]
    assert len(pages) == 3
    values = sorted(v["SecretString"] for p in pages for v in p["SecretValues"])
    assert values == [f"value-{i}" for i in range(5)]
    with pytest.raises(ClientError) as exc:
        sm.batch_get_secret_value(SecretIdList=["b/0"], Filters=[{"Key": "name", "Values": ["b"]}])
    assert error_code(exc) == "InvalidParameterException"
    with pytest.raises(ClientError) as exc:
        sm.batch_get_secret_value(SecretIdList=["b/0"], MaxResults=2)
    assert error_code(exc) == "InvalidParameterException"
    with pytest.raises(ClientError) as exc:
        sm.batch_get_secret_value(SecretIdList=[f"b/{i % 5}" for i in range(21)])
    assert error_code(exc) == "ValidationException"


def test_tags(sm):
    sm.create_secret(Name="t", SecretString="x", Tags=[{"Key": "team", "Value": "a"}])
    sm.tag_resource(SecretId="t", Tags=[{"Key": "team", "Value": "b"}, {"Key": "env", "Value": "prod"}])
    assert sm.describe_secret(SecretId="t")["Tags"] == [
        {"Key": "team", "Value": "b"},
        {"Key": "env", "Value": "prod"},
    ]
    sm.untag_resource(SecretId="t", TagKeys=["team", "absent"])
    assert sm.describe_secret(SecretId="t")["Tags"] == [{"Key": "env", "Value": "prod"}]
    before = state_of(sm)
    with pytest.raises(ClientError) as exc:
        sm.tag_resource(SecretId="t", Tags=[{"Key": f"k{i}", "Value": ""} for i in range(50)])
    assert error_code(exc) == "LimitExceededException"
    assert state_of(sm) == before


def test_get_random_password(sm):
    default = sm.get_random_password()["RandomPassword"]
    assert len(default) == 32
    assert any(c.isupper() for c in default) and any(c.islower() for c in default)
    assert any(c.isdigit() for c in default)
    custom = sm.get_random_password(
        PasswordLength=64, ExcludePunctuation=True, ExcludeCharacters="abc", IncludeSpace=False
    )["RandomPassword"]
    assert len(custom) == 64 and custom.isalnum() and not set(custom) & set("abc")
    digits = sm.get_random_password(
        PasswordLength=20, ExcludeLowercase=True, ExcludeUppercase=True, ExcludePunctuation=True
    )["RandomPassword"]
    assert digits.isdigit() and len(digits) == 20
    assert len({sm.get_random_password()["RandomPassword"] for _ in range(20)}) == 20
    with pytest.raises(ClientError) as exc:
        sm.get_random_password(PasswordLength=4097)
    assert error_code(exc) == "ValidationException"
    with pytest.raises(ParamValidationError):
        sm.get_random_password(PasswordLength=0)
    with pytest.raises(ClientError) as exc:
        sm.get_random_password(
            ExcludeNumbers=True, ExcludePunctuation=True, ExcludeUppercase=True, ExcludeLowercase=True
        )
    assert error_code(exc) == "InvalidParameterException"


def test_resource_policies(sm):
    sm.create_secret(Name="p", SecretString="x")
    out = sm.get_resource_policy(SecretId="p")
    assert out["Name"] == "p" and "ResourcePolicy" not in out
    # A policy this test's own (unidentified) caller still passes: loopback only.
    policy = {"allowed_cidrs": ["127.0.0.0/8", "::1/128"]}
    sm.put_resource_policy(SecretId="p", ResourcePolicy=json.dumps(policy), BlockPublicPolicy=True)
    stored = json.loads(sm.get_resource_policy(SecretId="p")["ResourcePolicy"])
    assert stored["allowed_cidrs"] == ["127.0.0.0/8", "::1/128"]
    assert stored["allowed_services"] == []
    before = state_of(sm)
    for bad in [
        "not json",
        json.dumps({"Version": "2012-10-17", "Statement": []}),
        json.dumps({"allowed_service": ["typo"]}),
        json.dumps({"allowed_cidrs": ["10.0.0.0/99"]}),
    ]:
        with pytest.raises(ClientError) as exc:
            sm.put_resource_policy(SecretId="p", ResourcePolicy=bad)
        assert error_code(exc) == "MalformedPolicyDocumentException", bad
    with pytest.raises(ClientError) as exc:
        sm.put_resource_policy(SecretId="p", ResourcePolicy="{}", BlockPublicPolicy=True)
    assert error_code(exc) == "PublicPolicyException"
    assert state_of(sm) == before
    valid = sm.validate_resource_policy(ResourcePolicy=json.dumps(policy))
    assert valid["PolicyValidationPassed"] is True
    invalid = sm.validate_resource_policy(ResourcePolicy="{\"x\": 1}")
    assert invalid["PolicyValidationPassed"] is False and invalid["ValidationErrors"]
    sm.delete_resource_policy(SecretId="p")
    assert "ResourcePolicy" not in sm.get_resource_policy(SecretId="p")


def test_rotate_and_cancel_rotation(sm):
    created = sm.create_secret(Name="rot", Tags=[{"Key": "arca:type", "Value": "api_key"}])
    first = json.loads(sm.get_secret_value(SecretId="rot")["SecretString"])["api_key"]
    rotated = sm.rotate_secret(SecretId="rot")
    assert rotated["ARN"] == created["ARN"] and rotated["VersionId"] != created["VersionId"]
    got = sm.get_secret_value(SecretId="rot")
    assert got["VersionId"] == rotated["VersionId"]
    second = json.loads(got["SecretString"])["api_key"]
    assert second != first and re.fullmatch(r"ak_[0-9A-Za-z]{32}_[0-9a-f]{8}", second)
    previous = sm.get_secret_value(SecretId="rot", VersionStage="AWSPREVIOUS")
    assert json.loads(previous["SecretString"])["api_key"] == first
    described = sm.describe_secret(SecretId="rot")
    assert described["VersionIdsToStages"] == {
        created["VersionId"]: ["AWSPREVIOUS"],
        rotated["VersionId"]: ["AWSCURRENT"],
    }
    assert "LastRotatedDate" in described
    # A schedule turns rotation on; CancelRotateSecret turns it off and keeps the rules.
    sm.rotate_secret(SecretId="rot", RotationRules={"AutomaticallyAfterDays": 7}, RotateImmediately=False)
    described = sm.describe_secret(SecretId="rot")
    assert described["RotationEnabled"] is True
    assert described["RotationRules"]["AutomaticallyAfterDays"] == 7
    assert described["NextRotationDate"] > described["LastRotatedDate"]
    assert sm.get_secret_value(SecretId="rot")["VersionId"] == rotated["VersionId"], "not rotated"
    cancelled = sm.cancel_rotate_secret(SecretId="rot")
    assert cancelled["ARN"] == created["ARN"]
    described = sm.describe_secret(SecretId="rot")
    assert described["RotationEnabled"] is False and "NextRotationDate" not in described
    assert described["RotationRules"]["AutomaticallyAfterDays"] == 7
    # The same ClientRequestToken resumes the same rotation rather than making another.
    again = sm.rotate_secret(SecretId="rot", ClientRequestToken=token(40))
    assert again["VersionId"] == token(40)


def test_cancel_rotate_secret(sm):
    created = sm.create_secret(Name="r", SecretString="x")
    out = sm.cancel_rotate_secret(SecretId="r")
    assert out["ARN"] == created["ARN"]
    assert sm.describe_secret(SecretId="r").get("RotationEnabled", False) is False
    before = state_of(sm)
    with pytest.raises(ClientError) as exc:
        sm.rotate_secret(SecretId="r", RotationRules={"AutomaticallyAfterDays": 1001})
    assert error_code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        sm.rotate_secret(SecretId="r", RotationRules={"Duration": "3d"})
    assert error_code(exc) == "ValidationException"
    assert state_of(sm) == before
    with pytest.raises(ClientError) as exc:
        sm.rotate_secret(SecretId="missing")
    assert error_code(exc) == "ResourceNotFoundException"


def test_kms_keys_envelope_and_decryption_failure(sm):
    kms = kms_client(sm.meta.endpoint_url)
    key = kms.create_key(Description="secrets")["KeyMetadata"]
    sm.create_secret(Name="cmk", SecretString="value-7c1d", KmsKeyId=key["KeyId"])
    assert sm.describe_secret(SecretId="cmk")["KmsKeyId"] == key["KeyId"]
    versions = sm.list_secret_version_ids(SecretId="cmk")["Versions"]
    assert versions[0]["KmsKeyIds"] == [key["Arn"]]
    assert sm.get_secret_value(SecretId="cmk")["SecretString"] == "value-7c1d"
    # The default key is the AWS managed alias/aws/secretsmanager, made on first use.
    sm.create_secret(Name="default", SecretString="x")
    managed = kms.describe_key(KeyId="alias/aws/secretsmanager")["KeyMetadata"]
    default_versions = sm.list_secret_version_ids(SecretId="default")["Versions"]
    assert default_versions[0]["KmsKeyIds"] == [managed["Arn"]]
    # A key that cannot decrypt makes the value unreadable: DecryptionFailure, no value.
    kms.disable_key(KeyId=key["KeyId"])
    with pytest.raises(ClientError) as exc:
        sm.get_secret_value(SecretId="cmk")
    assert error_code(exc) == "DecryptionFailure"
    assert "value-7c1d" not in error_message(exc)
    with pytest.raises(ClientError) as exc:
        sm.put_secret_value(SecretId="cmk", SecretString="more")
    assert error_code(exc) == "EncryptionFailure"
    kms.enable_key(KeyId=key["KeyId"])
    assert sm.get_secret_value(SecretId="cmk")["SecretString"] == "value-7c1d"
    kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    with pytest.raises(ClientError) as exc:
        sm.get_secret_value(SecretId="cmk")
    assert error_code(exc) == "DecryptionFailure"
    with pytest.raises(ClientError) as exc:
        sm.create_secret(Name="nokey", SecretString="x", KmsKeyId="alias/does-not-exist")
    assert error_code(exc) == "EncryptionFailure"
    with pytest.raises(ClientError):
        sm.describe_secret(SecretId="nokey")


def test_typed_generation_through_tags(sm):
    sm.create_secret(Name="gen/key", Tags=[{"Key": "arca:type", "Value": "api_key"}])
    value = json.loads(sm.get_secret_value(SecretId="gen/key")["SecretString"])
    assert re.fullmatch(r"ak_[0-9A-Za-z]{32}_[0-9a-f]{8}", value["api_key"]), value
    fields = {"engine": "postgres", "host": "db.internal", "port": 5432, "dbname": "app", "username": "app"}
    sm.create_secret(
        Name="gen/db",
        SecretString=json.dumps(fields),
        Tags=[{"Key": "arca:type", "Value": "database_credentials"}],
    )
    creds = json.loads(sm.get_secret_value(SecretId="gen/db")["SecretString"])
    assert {k: creds[k] for k in fields} == fields
    assert len(creds["password"]) == 32
    described = sm.describe_secret(SecretId="gen/db")
    assert described["Tags"] == [{"Key": "arca:type", "Value": "database_credentials"}]
    # Generation parameters through the arca member (botocore would refuse an unknown member,
    # so this goes raw, as the arca CLI sends it).
    response = raw_sm(
        sm.meta.endpoint_url,
        "CreateSecret",
        json.dumps(
            {
                "Name": "gen/sym",
                "ClientRequestToken": token(5),
                "Tags": [{"Key": "arca:type", "Value": "generic"}],
                "ArcaGeneration": {"password_length": 12, "exclude_punctuation": True},
            }
        ).encode(),
    )
    assert response.status_code == 200, response.text
    password = sm.get_secret_value(SecretId="gen/sym")["SecretString"]
    assert len(password) == 12 and password.isalnum()
    # A retried generating request is idempotent: same version, value unchanged.
    again = raw_sm(
        sm.meta.endpoint_url,
        "CreateSecret",
        json.dumps(
            {
                "Name": "gen/sym",
                "ClientRequestToken": token(5),
                "Tags": [{"Key": "arca:type", "Value": "generic"}],
                "ArcaGeneration": {"password_length": 12, "exclude_punctuation": True},
            }
        ).encode(),
    )
    assert again.status_code == 200 and again.json()["VersionId"] == token(5)
    assert sm.get_secret_value(SecretId="gen/sym")["SecretString"] == password
    before = state_of(sm)
    with pytest.raises(ClientError) as exc:
        sm.create_secret(Name="gen/bad", Tags=[{"Key": "arca:type", "Value": "password"}])
    assert error_code(exc) == "InvalidParameterException"
    with pytest.raises(ClientError) as exc:
        sm.create_secret(
            Name="gen/bad",
            SecretString="not json",
            Tags=[{"Key": "arca:type", "Value": "database_credentials"}],
        )
    assert error_code(exc) == "InvalidParameterException"
    assert state_of(sm) == before


def test_regions_are_separate_and_reset_wipes(server, sm):
    west = sm_client(server.addr, region="eu-west-1")
    west.create_secret(Name="regional", SecretString="west")
    sm.create_secret(Name="regional", SecretString="east")
    assert west.get_secret_value(SecretId="regional")["SecretString"] == "west"
    assert sm.get_secret_value(SecretId="regional")["SecretString"] == "east"
    assert ":eu-west-1:" in west.describe_secret(SecretId="regional")["ARN"]
    response = requests.post(f"{server.addr}/moto-api/reset", timeout=30)
    assert response.status_code == 200
    assert sm.list_secrets()["SecretList"] == []
    assert west.list_secrets()["SecretList"] == []


def test_secret_values_never_reach_the_log(server, sm):
    sm.create_secret(Name="logged", SecretString="needle-in-the-log-4711")
    sm.get_secret_value(SecretId="logged")
    with pytest.raises(ClientError):
        sm.create_secret(Name="logged-2", SecretString="needle-in-the-log-4711", SecretBinary=b"x")
    assert "needle-in-the-log-4711" not in server.logs()
    binary = base64.b64encode(b"needle").decode()
    assert binary not in server.logs()
