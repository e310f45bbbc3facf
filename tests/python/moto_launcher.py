"""Starts moto's server on 127.0.0.1 (port 0 unless given) for the AWS back-end tests.

The Rust tests start it as `python3 moto_launcher.py [PORT]` and read the address from the
"Running on http://..." line moto prints on stderr. A test binary may keep one moto for all
its tests and exit without stopping it, so this wrapper watches its parent: when the parent
is gone (the test process exited, even by a panic or a signal), moto exits too, and no server
outlives the tests that started it.
"""

import os
import sys
import threading
import time


def exit_with_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(0.5)


def main() -> None:
    port = sys.argv[1] if len(sys.argv) > 1 else "0"
    threading.Thread(target=exit_with_parent, args=(os.getppid(),), daemon=True).start()
    from moto.server import main as moto_main

    moto_main(["-H", "127.0.0.1", "-p", port])


if __name__ == "__main__":
    main()
