"""One running `arca server` process, shared by every Python test harness.

The server listens on 127.0.0.1:0, reports its address on stdout (read here until the
"arca listening on" line), writes its log to a file, and is stopped by its PID: SIGTERM first
(arca shuts down gracefully), SIGKILL only if it has not exited in time.
"""

import os
import queue
import signal
import subprocess
import threading
from pathlib import Path

START_TIMEOUT = 60
STOP_TIMEOUT = 20


class ArcaProcess:
    """`arca server <args> --listen 127.0.0.1:0`, logging to `log_path`, run in `cwd`."""

    def __init__(self, args: list[str], log_path: Path, cwd: Path | None = None):
        binary = os.environ.get("ARCA_BIN")
        if not binary:
            raise RuntimeError("ARCA_BIN must name the arca binary (the Rust test runner sets it)")
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "server", *args, "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=cwd,
        )
        lines: queue.Queue = queue.Queue()

        def read_stdout():
            # Keep draining stdout so the server never blocks on a full pipe.
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read_stdout, daemon=True).start()
        try:
            while True:
                line = lines.get(timeout=START_TIMEOUT)
                if line is None:
                    raise RuntimeError(f"arca server exited before listening:\n{self.logs()}")
                if line.startswith("arca listening on "):
                    self.addr = line.removeprefix("arca listening on ").strip()
                    break
        except BaseException:
            self.stop()
            raise

    def logs(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM by PID, wait, SIGKILL if needed; returns the exit code."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode
