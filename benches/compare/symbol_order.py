"""Writes the link order of arca's hot functions, `src/arca.order`, from a traced run.

Why: the release binary's code is about 13 MiB, and the functions a serving arca runs are
scattered through it. The kernel maps code around every page the process touches, so an
idle server kept about 9 MiB of code resident. Listing the functions a server actually runs
first lets the linker (lld, rustc's default on x86_64 Linux) put them side by side, so the
pages a server touches are few and the rest of the binary stays on disk.

How: an unstripped release build runs under `valgrind --tool=callgrind` through a typical
life: start, initialise 5/3, unseal, mount KV v2 and transit, then the Vault and AWS calls
clients make (KV write, read, list, metadata, delete; transit encrypt and decrypt; tokens
and policies; KMS and Secrets Manager through SigV4), `arca agent` and `arca run` delivering
a secret and its rotation, a restart and a second unseal. Every
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
import os
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
        server = super().argv()
        return traced(Path(server[0]), self.out, server[1:])


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


def traced(binary: Path, out: Path, args: list[str]) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--demangle=no", "--compress-strings=no", "--compress-pos=no",
            f"--callgrind-out-file={out}/callgrind.%p", str(binary)] + args


def deliver(arca: TracedArca, procs: c.Processes, binary: Path, work: Path, out: Path) -> None:
    """`arca agent` rendering a file and `arca run` restarting a child, each through a first
    delivery and a rotation: the injection commands run from the same binary."""
    def rotate(value: str) -> None:
        c.expect(c.call(arca.port, "POST", "/v1/secret/data/inject", {"data": {"password": value}},
                        token=arca.token), (200,), "KV write for injection")

    def delivered(path: Path, expected: str) -> None:
        c.wait_until(f"{path.name} holds {expected!r}",
                     lambda: path.exists() and path.read_text() == expected, 120, interval=0.05)

    token = work / "token"
    token.write_text(arca.token + "\n")
    token.chmod(0o600)
    rendered, config = work / "db.env", work / "agent.toml"
    config.write_text(f'address = "http://127.0.0.1:{arca.port}"\n[auth]\ntoken_file = "{token}"\n'
                      f'[[file]]\nname = "db"\ndestination = "{rendered}"\n'
                      'template = "password={{ secrets.pw }}\\n"\n'
                      '[file.secrets]\npw = "kv://secret/inject#password"\n')
    rotate("first")
    agent = procs.spawn("arca agent", traced(binary, out, ["agent", "--config", str(config)]),
                        work / "agent.log")
    delivered(rendered, "password=first\n")
    rotate("second")
    delivered(rendered, "password=second\n")
    procs.stop(agent)

    child_out, child_tmp = work / "env.out", work / "env.tmp"
    child = ["sh", "-c", f'printf %s "$PW" > "{child_tmp}" && mv "{child_tmp}" "{child_out}"; exec sleep 900']
    env = dict(os.environ, ARCA_ADDR=f"http://127.0.0.1:{arca.port}", ARCA_TOKEN=arca.token)
    supervisor = procs.spawn("arca run", traced(binary, out, ["run", "--on-change", "restart", "--env",
                                                                   "PW=kv://secret/inject#password", "--"] + child),
                             work / "run.log", env=env)
    delivered(child_out, "second")
    rotate("third")
    delivered(child_out, "third")
    procs.stop(supervisor)


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


def merged(folder: Path, expected: int) -> dict[str, int]:
    """Self costs summed over the callgrind profiles in `folder` (one per traced process)."""
    profiles = list(folder.iterdir())
    if len(profiles) != expected:
        raise SystemExit(f"symbol_order: {len(profiles)} callgrind profiles in {folder.name}, expected {expected}")
    totals: dict[str, int] = defaultdict(int)
    for profile in profiles:
        for name, cost in self_costs(profile).items():
            totals[name] += cost
    return totals


def main() -> int:
    binary = Path(sys.argv[1]).resolve()
    if shutil.which("valgrind") is None:
        raise SystemExit("symbol_order: valgrind is needed (Debian package valgrind)")
    listing = subprocess.run(["nm", "--defined-only", str(binary)], capture_output=True, text=True).stdout
    defined = {line.split()[-1] for line in listing.splitlines() if line.strip()}
    if len(defined) < 1000:
        raise SystemExit("symbol_order: the binary has no symbol table; build it with "
                         "`cargo rustc --release --bin arca -- -C strip=none`")
    procs = c.Processes()
    with tempfile.TemporaryDirectory(prefix="arca-order-") as tmp:
        servers, deliverers = Path(tmp) / "server", Path(tmp) / "deliver"
        servers.mkdir()
        deliverers.mkdir()
        try:
            arca = TracedArca(procs, Path(tmp) / "arca", binary, servers)
            arca.first_start()
            workload(arca)
            deliver(arca, procs, binary, Path(tmp), deliverers)
            arca.restart_to_ready()
            c.expect(c.call(arca.port, "GET", "/v1/secret/data/app/1", token=arca.token), (200,), "read after restart")
        finally:
            procs.stop_all()
        server_costs, deliver_costs = merged(servers, 2), merged(deliverers, 2)
    # The server's functions first, then those only the agent and the supervisor run: a server
    # touches one contiguous run of code, and a deliverer that run's shared part and its own.
    order = sorted(server_costs, key=lambda n: (-server_costs[n], n))
    order += sorted(set(deliver_costs) - set(server_costs), key=lambda n: (-deliver_costs[n], n))
    # Only the binary's own functions: callgrind also sees the C library's.
    symbols = [name for name in order if name in defined]
    header = "".join(f"# {line}\n" for line in order_file_stamp())
    ORDER_FILE.write_text(header + "".join(name + "\n" for name in symbols))
    c.log(f"{len(symbols)} functions written to {ORDER_FILE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
