"""A sink in its own process, so a test can SIGKILL it while it is spooling.

    python3 -m tests.otlp.spool_driver SPOOL_DIR PORT CERTS_DIR COUNT

Exports decisions seq 0..COUNT-1 in batches of 50 to a receiver that is down and prints
`spooled N` after each export returned (the records are then on disk); then waits to be
killed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from monitor import certs
from netlogger.sinks.otlp import OtlpExportSink
from tests.otlp.conftest import settings_for
from tests.otlp.records import HOST, decision

BATCH = 50


def main() -> None:
    spool_dir, port, certs_dir, count = (
        Path(sys.argv[1]),
        int(sys.argv[2]),
        sys.argv[3],
        int(sys.argv[4]),
    )
    paths = certs.paths(Path(certs_dir))
    sink = OtlpExportSink(settings_for(port, paths, spool_dir), HOST)
    for start in range(0, count, BATCH):
        sink.export([decision(seq) for seq in range(start, min(count, start + BATCH))])
        print(f"spooled {min(count, start + BATCH)}", flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
