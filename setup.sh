#!/usr/bin/env bash
# Set up everything netlogger needs on a Debian/Ubuntu host, then run a job:
#   sudo ./setup.sh demo      the sandboxed demo
#   sudo ./setup.sh test      the whole test suite (kernel tests included)
#   sudo ./setup.sh           setup only
# Idempotent: packages already present are not reinstalled.
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" -ne 0 ]; then
  echo "error: setup.sh installs packages and loads BPF programs; run it with sudo" >&2
  exit 1
fi

# Build: clang, libbpf headers, libbpf1 (its static linker joins bpf/ units). Tests: llvm (llvm-nm).
# Run: libbpf1, iproute2 (netns), procps (sysctl).
# python3-venv: the wheel test installs the built wheel into a fresh virtual environment.
# dnsmasq-base: the demo's resolver (the binary only: no service starts listening).
APT_PACKAGES=(clang llvm libbpf-dev libbpf1 linux-libc-dev gcc libc6-dev iproute2 procps util-linux
              python3-pip python3-venv dnsmasq-base)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "==> installing netlogger (compiles bpf/ into the package)"
pip_flags=(-q --disable-pip-version-check)
# Debian 12 / Ubuntu 24.04 system Pythons refuse pip installs (PEP 668); this
# host tool is installed for root's system Python on purpose.
if python3 -c 'import os, sysconfig; raise SystemExit(not os.path.exists(
        os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
  pip_flags+=(--break-system-packages)
fi
python3 -m pip install "${pip_flags[@]}" -e '.[test]'

job="${1:-}"
shift || true
case "$job" in
  demo)
    exec netlogger demo "$@"
    ;;
  test)
    for extra in .ci/*-setup.sh; do
      [ -e "$extra" ] || continue
      echo "==> $extra"
      # shellcheck source=/dev/null
      source "$extra"
    done
    export CI="${CI:-1}"   # kernel tests must run here, never skip
    exec python3 -m pytest "$@"
    ;;
  "")
    echo "setup done"
    ;;
  *)
    echo "error: unknown job '$job'; use: demo | test" >&2
    exit 2
    ;;
esac
