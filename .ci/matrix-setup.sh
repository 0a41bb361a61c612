#!/bin/bash
# CI setup for the kernel matrix (tests/matrix). Sourced before pytest (as root, on a fresh
# Debian 12 machine):
#
#   source .ci/matrix-setup.sh
#
# Installs qemu (TCG: KVM does not work on these machines), kmod (depmod), a static busybox
# and virtme-ng (PyPI) for the guest run, and vagrant for `vagrant validate`; fetches Debian's
# 6.1 kernel package with `apt-get download` into $NL_MATRIX_CACHE and unpacks it there with
# dpkg-deb -x. The kernel is never installed on the host: the runner shows its modules to the
# guest through a private mount namespace. Exports NETLOGGER_MATRIX_KERNEL_ROOT.
# Idempotent: every step checks before it acts. The work runs in a subshell so `set -e` does
# not leak into the sourcing shell.

NL_MATRIX_CACHE=${NL_MATRIX_CACHE:-/var/cache/netlogger-matrix}

_nl_matrix_setup() (
    set -euo pipefail
    cache=$NL_MATRIX_CACHE
    mkdir -p "$cache"

    # --- Debian packages ------------------------------------------------------------------
    updated=
    apt_update() {
        [ -n "$updated" ] || { apt-get update -qq; updated=1; }
    }
    missing=()
    for pkg in qemu-system-x86 kmod util-linux; do
        dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    # virtme-ng packs a static busybox into the guest's initramfs; busybox-static is one
    # (and conflicts with the dynamic busybox, so take whichever is there).
    command -v busybox >/dev/null || missing+=(busybox-static)
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "matrix-setup: apt-get install ${missing[*]}"
        apt_update
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi

    # vagrant pulls libarchive-tools, which must be exactly libarchive13's version, and apt
    # will not move an installed libarchive13 on its own to make them meet: the image's may
    # be older than the lists' libarchive-tools (upgrade it in the same transaction), or newer
    # than any libarchive-tools the lists offer (then take both at that candidate version).
    if ! command -v vagrant >/dev/null; then
        echo "matrix-setup: apt-get install vagrant (with a matching libarchive13)"
        apt_update
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            libarchive13 libarchive-tools vagrant >/dev/null; then
            ver=$(apt-cache policy libarchive-tools | awk '/Candidate:/ {print $2}')
            echo "matrix-setup: retrying with libarchive13 and libarchive-tools at $ver"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                --allow-downgrades "libarchive13=$ver" "libarchive-tools=$ver" vagrant >/dev/null
        fi
    fi

    # --- Python packages ------------------------------------------------------------------
    py=${PYTHON:-python3}
    if ! command -v vng >/dev/null || ! "$py" -c 'import virtme' 2>/dev/null; then
        # Pinned: the runner reads this version's console output and its share tags.
        echo "matrix-setup: pip install virtme-ng==1.42"
        "$py" -m pip install -q --disable-pip-version-check virtme-ng==1.42
    fi

    # --- Debian's 6.1 kernel, unpacked in the cache -----------------------------------------
    # The newest linux-image-6.1.0-N-amd64 the lists offer (Debian 12's kernel line).
    pkg=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' \
        | awk '{print $1}' | sort -V | tail -n 1)
    if [ -z "$pkg" ]; then
        apt_update
        pkg=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' \
            | awk '{print $1}' | sort -V | tail -n 1)
    fi
    [ -n "$pkg" ] || { echo "matrix-setup: no linux-image-6.1.0-*-amd64 in apt" >&2; exit 1; }
    version=${pkg#linux-image-}
    root="$cache/root-$version"
    if [ ! -e "$root/lib/modules/$version/modules.dep" ]; then
        echo "matrix-setup: fetching $pkg into $cache"
        rm -rf "$root" "$cache"/*.deb
        # apt's sandbox user cannot write into a root-only cache; fetch in a world-writable
        # temporary directory of our own and move the package in.
        tmp=$(mktemp -d)
        chmod 755 "$tmp"
        chown _apt "$tmp" 2>/dev/null || true
        (cd "$tmp" && apt-get download -qq "$pkg")
        dpkg-deb -x "$tmp"/"$pkg"_*.deb "$root.partial"
        rm -rf "$tmp"
        depmod -b "$root.partial" "$version"
        mv "$root.partial" "$root"
    fi
    # Only the current kernel stays: older unpacked ones are 400 MB each.
    for old in "$cache"/root-*; do
        [ "$old" = "$root" ] || rm -rf "$old"
    done
    echo "$root" >"$cache/current"
)

if _nl_matrix_setup; then
    NETLOGGER_MATRIX_KERNEL_ROOT=$(cat "$NL_MATRIX_CACHE/current")
    export NETLOGGER_MATRIX_KERNEL_ROOT
    echo "matrix-setup: guest kernel $NETLOGGER_MATRIX_KERNEL_ROOT"
elif [ -n "${CI:-}" ]; then
    echo "matrix-setup: FAILED" >&2
    return 1 2>/dev/null || exit 1
else
    # Outside CI (a Vagrant VM on Ubuntu, a laptop) the matrix is optional: the rest of the
    # suite must still run. tests/matrix fails in CI when this is missing, skips elsewhere.
    echo "matrix-setup: incomplete; the kernel matrix tests will skip (not in CI)" >&2
fi
