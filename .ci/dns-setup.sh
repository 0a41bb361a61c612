#!/bin/bash
# CI setup for the DNS kernel tests (tests/kernel/test_dns.py). Sourced by .ci/run:
#
#   source .ci/dns-setup.sh
#
# dnsmasq-base is the dnsmasq binary without the system service, so nothing starts
# listening on the host: the tests run it themselves, inside a test network namespace.
# gcc builds the tests' resolve-then-connect client. Idempotent.

_nl_dns_setup() (
    set -euo pipefail
    missing=()
    for pkg in dnsmasq-base gcc libc6-dev; do
        dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "dns-setup: apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
)

_nl_dns_setup
