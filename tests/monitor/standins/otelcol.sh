#!/bin/sh
# Stand-in for /otelcol-contrib: checks what the real collector would need at start (its
# config file, and the mTLS files readable by the user Compose runs it as), then idles.
config=
for arg in "$@"; do case "$arg" in --config=*) config=${arg#--config=} ;; esac; done
[ -r "$config" ] || { echo "stand-in collector: cannot read config '$config'" >&2; exit 1; }
for f in ca.pem collector.pem collector.key; do
    [ -r "/etc/otelcol-contrib/certs/$f" ] || {
        echo "stand-in collector: cannot read certs/$f as uid $(id -u)" >&2; exit 1; }
done
grep -q 'client_ca_file' "$config" || { echo "stand-in collector: infra lane without mTLS" >&2; exit 1; }
echo "stand-in collector running as uid $(id -u) with $config"
trap 'exit 0' TERM INT
while :; do sleep 1; done
