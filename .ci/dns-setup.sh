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
    source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
    nl_apt_install dns-setup dnsmasq-base gcc libc6-dev
)

_nl_dns_setup
