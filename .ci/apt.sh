#!/bin/bash
# Sourced by the .ci/*-setup.sh scripts: one way to install what a setup needs.
#
#   nl_apt_install LABEL PACKAGE...
#
# Installs, without recommends, the PACKAGEs that are not installed yet, and says which
# (prefixed with LABEL); does nothing when all are there. Fails when apt-get does.

nl_apt_install() {
    local label=$1 pkg
    shift
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    echo "$label: apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}
