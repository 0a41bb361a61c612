"""The collector's trusted lane: OTLP/gRPC with mTLS, the one way records leave a host.

The OTLP sink sends here by default and the telemetry stack (`monitor/`) publishes its mTLS
receiver here. The port is written once, in this module: the stack imports it from netlogger,
never the reverse, and what cannot import it (YAML, Markdown) is checked against it by a test.
"""

from __future__ import annotations

PORT = 4319
