#!/usr/bin/env bash
# Provision a netlogger test VM (Vagrantfile): install with the README's commands, then run
# the kernel tests against this VM's own kernel.
#
#   provision.sh CHECKOUT
#
# Runs as root (Vagrant's shell provisioner). Exits non-zero when a kernel test fails, so
# `vagrant up` / `vagrant provision` report it.
set -euo pipefail
checkout=${1:-/opt/netlogger}
cd "$checkout"

echo "==> $(uname -srm) on $(. /etc/os-release && echo "$PRETTY_NAME")"

# Debian 12 and Ubuntu 24.04 mark their system Python as externally managed (PEP 668), and
# setup.sh installs into it with pip; this VM is disposable, so let pip do that here.
if ! grep -qs break-system-packages /etc/pip.conf; then
    printf '[global]\nbreak-system-packages = true\n' >>/etc/pip.conf
fi

# The README's two commands. `demo` installs everything and shows each verdict live;
# `test` runs the suite, here only what concerns this kernel: the kernel tests and the
# feature probes (the qemu guest matrix and the Docker-backed monitor tests are CI's job).
sudo ./setup.sh demo
sudo ./setup.sh test tests/kernel tests/matrix/test_features.py

echo "==> kernel tests passed on Linux $(uname -r)"
