"""Writes the link order of arca's hot functions, `src/arca.order`, from a traced run.

Why: the release binary's code is about 13 MiB, and the functions a serving arca runs are
scattered through it. The kernel maps code around every page the process touches, so an
idle server kept about 9 MiB of code resident. Listing the functions a server actually runs
first lets the linker (lld, rustc's default on x86_64 Linux) put them side by side, so the
pages a server touches are few and the rest of the binary stays on disk.

How: an unstripped release build runs under `valgrind --tool=callgrind` through a typical
life: start, initialise 5/3, unseal, mount KV v2 and transit, then the Vault and AWS calls
clients make (KV write, read, list, metadata, delete; transit encrypt and decrypt; tokens
and policies; KMS and Secrets Manager through SigV4), a restart and a second unseal. Every
function callgrind saw run is written out, the most expensive first. Functions missing from
the list keep their place after the listed ones; a stale list costs memory, never
correctness.

The names carry a hash of the compiler, the locked dependencies and the build profile, so
the traced binary must be the release build itself, only unstripped. `-C strip=none` given to
rustc for the final link alone keeps every hash; changing the profile (`strip = false`) would
not. Run it again after a toolchain, dependency or manifest change (the harness's report
says when the list no longer matches: a feature turned on in a dependency renames all its
code) or after large changes to the request paths:

    cargo rustc --release --bin arca -- -C strip=none
    target/compare-venv/bin/python benches/compare/symbol_order.py target/release/arca
    cargo build --release
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare as c  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ORDER_FILE = ROOT / "src" / "arca.order"


class TracedArca(c.Arca):
    """arca under callgrind; each process writes its own profile into `out`."""

    def __init__(self, procs: c.Processes, workdir: Path, binary: Path, out: Path):
        super().__init__(procs, workdir, binary)
        self.out = out

    def argv(self) -> list[str]:
        return ["valgrind", "--tool=callgrind", "--demangle=no", "--compress-strings=no",
                "--compress-pos=no", f"--callgrind-out-file={self.out}/callgrind.%p"] + super().argv()


def workload(arca: TracedArca) -> None:
    """The calls a Vault or AWS client makes of a running server."""
    token = arca.token
    for i in range(20):
        c.expect(c.call(arca.port, "PUT", f"/v1/secret/data/app/{i}", c.KV_BODY, token=token), (200,), "KV write")
        c.expect(c.call(arca.port, "GET", f"/v1/secret/data/app/{i}", token=token), (200,), "KV read")
    c.expect(c.call(arca.port, "LIST", "/v1/secret/metadata/app", token=token), (200,), "KV list")
    c.expect(c.call(arca.port, "GET", "/v1/secret/metadata/app/1", token=token), (200,), "KV metadata")
    c.expect(c.call(arca.port, "DELETE", "/v1/secret/data/app/2", token=token), (204,), "KV delete")
    for _ in range(20):
        body = c.expect(c.call(arca.port, "POST", "/v1/transit/encrypt/bench", {"plaintext": c.PLAINTEXT_64},
                               token=token), (200,), "transit encrypt")
        c.expect(c.call(arca.port, "POST", "/v1/transit/decrypt/bench",
                        {"ciphertext": body["data"]["ciphertext"]}, token=token), (200,), "transit decrypt")
    policy = 'path "secret/data/app/*" {\n  capabilities = ["read"]\n}\n'
    c.expect(c.call(arca.port, "PUT", "/v1/sys/policies/acl/reader", {"policy": policy}, token=token),
             (200, 204), "policy write")
    child = c.expect(c.call(arca.port, "POST", "/v1/auth/token/create", {"policies": ["reader"]}, token=token),
                     (200,), "token create")["auth"]["client_token"]
    c.expect(c.call(arca.port, "GET", "/v1/auth/token/lookup-self", token=child), (200,), "token lookup-self")
    c.expect(c.call(arca.port, "GET", "/v1/secret/data/app/3", token=child), (200,), "KV read, child token")
    c.expect(c.call(arca.port, "PUT", "/v1/secret/data/app/3", c.KV_BODY, token=child), (403,), "KV write denied")
    creds = arca.access_key
    assert creds is not None
    key_id = c.expect(c.aws_call(arca.port, "TrentService.CreateKey", "kms", {"Description": "order"}, creds),
                      (200,), "KMS CreateKey")["KeyMetadata"]["KeyId"]
    c.expect(c.aws_call(arca.port, "secretsmanager.CreateSecret", "secretsmanager",
                        {"Name": "order/secret", "SecretString": c.SECRET_STRING}, creds), (200,), "SM CreateSecret")
    for _ in range(20):
        blob = c.expect(c.aws_call(arca.port, "TrentService.Encrypt", "kms",
                                   {"KeyId": key_id, "Plaintext": c.PLAINTEXT_64}, creds), (200,), "KMS Encrypt")
        c.expect(c.aws_call(arca.port, "TrentService.Decrypt", "kms", {"CiphertextBlob": blob["CiphertextBlob"]},
                            creds), (200,), "KMS Decrypt")
        c.expect(c.aws_call(arca.port, "TrentService.GenerateDataKey", "kms",
                            {"KeyId": key_id, "KeySpec": "AES_256"}, creds), (200,), "KMS GenerateDataKey")
        c.expect(c.aws_call(arca.port, "secretsmanager.GetSecretValue", "secretsmanager",
                            {"SecretId": "order/secret"}, creds), (200,), "SM GetSecretValue")
    c.expect(c.aws_call(arca.port, "secretsmanager.PutSecretValue", "secretsmanager",
                        {"SecretId": "order/secret", "SecretString": "rotated"}, creds),
             (200,), "SM PutSecretValue")
    c.expect(c.call(arca.port, "GET", "/v1/sys/health"), (200,), "health")


def self_costs(profile: Path) -> dict[str, int]:
    """Instructions spent in each function itself (not its callees), from one callgrind file."""
    costs: dict[str, int] = defaultdict(int)
    current = None
    skip_next = False
    for line in profile.read_text(errors="replace").splitlines():
        if line.startswith("fn="):
            current = line[3:]
            costs[current] += 0
        elif line.startswith("calls="):
            skip_next = True  # the next cost line is the call's inclusive cost
        elif current and (line[:1].isdigit() or line[:1] in "+-*"):
            if skip_next:
                skip_next = False
                continue
            parts = line.split()
            if len(parts) >= 2:
                costs[current] += int(parts[1])
    return costs


def order_file_stamp() -> list[str]:
    """What the symbol names depend on besides the code: the compiler, the locked
    dependencies and the manifests (their features and profiles); all go into every name's
    hash. The harness compares it with the build it measures."""
    rustc = subprocess.run(["rustc", "-V"], capture_output=True, text=True, check=True).stdout.strip()

    def digest(*paths: str) -> str:
        return hashlib.sha256(b"".join((ROOT / p).read_bytes() for p in paths)).hexdigest()[:16]
    return ["made by benches/compare/symbol_order.py; lld reads lines starting with # as comments",
            f"toolchain: {rustc}", f"Cargo.lock: {digest('Cargo.lock')}",
            f"manifests: {digest('Cargo.toml', 'storage/Cargo.toml')}"]


def main() -> int:
    binary = Path(sys.argv[1]).resolve()
    if shutil.which("valgrind") is None:
        raise SystemExit("symbol_order: valgrind is needed (Debian package valgrind)")
    listing = subprocess.run(["nm", "--defined-only", str(binary)], capture_output=True, text=True).stdout
    defined = {line.split()[-1] for line in listing.splitlines() if line.strip()}
    if len(defined) < 1000:
        raise SystemExit("symbol_order: the binary has no symbol table; build with CARGO_PROFILE_RELEASE_STRIP=false")
    procs = c.Processes()
    with tempfile.TemporaryDirectory(prefix="arca-order-") as tmp:
        out = Path(tmp) / "profiles"
        out.mkdir()
        try:
            arca = TracedArca(procs, Path(tmp) / "arca", binary, out)
            arca.first_start()
            workload(arca)
            arca.restart_to_ready()
            c.expect(c.call(arca.port, "GET", "/v1/secret/data/app/1", token=arca.token), (200,), "read after restart")
        finally:
            procs.stop_all()
        totals: dict[str, int] = defaultdict(int)
        for profile in out.iterdir():
            for name, cost in self_costs(profile).items():
                totals[name] += cost
    # Only the binary's own functions: callgrind also sees the C library's.
    symbols = [name for name in sorted(totals, key=lambda n: (-totals[n], n)) if name in defined]
    header = "".join(f"# {line}\n" for line in order_file_stamp())
    ORDER_FILE.write_text(header + "".join(name + "\n" for name in symbols))
    c.log(f"{len(symbols)} functions written to {ORDER_FILE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
