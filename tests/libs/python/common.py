"""What the Python flows of tests/tests/libs.rs share: the two node addresses and the checks."""

import os
import sys


def nodes():
    """(host, port) of node A and node B, from TANDEM_A and TANDEM_B (host:port)."""
    out = []
    for var in ("TANDEM_A", "TANDEM_B"):
        host, _, port = os.environ.get(var, "").rpartition(":")
        if not host or not port.isdigit():
            fail(f"{var} must be host:port")
        out.append((host, int(port)))
    return out


def fail(msg):
    print(f"FAIL {os.path.basename(sys.argv[0])}: {msg}", file=sys.stderr)
    sys.exit(1)


def expect(step, status, body, want_status, want=None):
    """Checks one HTTP answer: its status and, if given, its JSON body."""
    if status != want_status:
        fail(f"{step}: HTTP {status} {body!r}")
    if want is not None and body != want:
        fail(f"{step}: got {body!r}, want {want!r}")
    print(f"ok {step}", flush=True)

