#!/bin/sh
# Runs as root inside the guest kernel that tests/matrix/runner.py boots (virtme-ng, TCG).
#
#   guest.sh WORKDIR
#
# WORKDIR (on the host, seen read-only through the guest's shared root) holds one value per
# file: `repo` (the checkout to test), `python` (the host's interpreter) and `pytest-args`
# (one argument per line). Every line meant for the runner starts with "NLMX": the console
# also carries boot noise, and the runner keeps only these lines.
set -u
work=$1
repo=$(cat "$work/repo")
py=$(cat "$work/python")

say() { echo "NLMX $*"; }

# Kernel messages go to the same console; keep them off it while we talk.
dmesg -n 1 2>/dev/null || true
say "uname $(uname -r)"
say "uname-v $(uname -v)"

# The runner exports the interpreter's prefix and the checkout as extra 9p shares (in this
# order). virtme mounts them uncached; remounted with cache=loose, Python's many stats and
# opens come from the guest's page cache instead of a TCG-emulated round trip each. Nothing
# is written through them.
i=0
while IFS= read -r dir; do
    if umount "$dir" 2>/dev/null; then
        mount -t 9p -o ro,version=9p2000.L,trans=virtio,access=any,msize=524288,cache=loose \
            "virtme.initmount$i" "$dir" || say "warn: cache=loose remount of $dir failed"
    fi
    i=$((i + 1))
done <"$work/fast-dirs"

# What the product expects of a host, which a bare guest lacks: bpffs at /sys/fs/bpf.
# cgroup2 is already at /sys/fs/cgroup (pure v2); /run is a tmpfs, so `ip netns` and
# pyroute2 can make /run/netns; /tmp is a writable overlay for pytest's tmp_path.
grep -qs ' /sys/fs/bpf bpf ' /proc/mounts || mount -t bpf bpf /sys/fs/bpf
# The guest's modules: virtme links /lib/modules/<version> to the unpacked package in the
# host's /var/cache/netlogger-matrix, but mounts an empty tmpfs over /var/cache; step it
# aside. Debian builds veth as a module, and the tests join their network namespaces with a
# veth pair.
modules=/lib/modules/$(uname -r)
[ -e "$modules/modules.dep" ] || umount /var/cache 2>/dev/null
[ -e "$modules/modules.dep" ] || say "warn: no modules at $modules"
modprobe veth || say "warn: modprobe veth failed (modprobe path: $(cat /proc/sys/kernel/modprobe))"
say "cgroup2 $(awk '$3 == "cgroup2" {print $2}' /proc/mounts | head -n 1)"

cd "$repo" || { say "error: no checkout at $repo"; exit 1; }
# The shared root is read-only: no bytecode, no pytest cache. No third-party pytest plugins:
# none is needed, hypothesis's warns about its read-only database (warnings are errors), and
# each costs seconds of imports under TCG. Unbuffered, so progress streams to the console.
# CI=1 turns a skipped kernel test into a failure here too.
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 CI=1
# Floods sized for TCG: tests/kernel/test_fold.py still overflows its ring unfolded with this.
export NL_FOLD_FLOOD=20000
bindir=$(dirname "$py")
export PATH="$bindir:$PATH"

set --
while IFS= read -r arg; do
    set -- "$@" "$arg"
done <"$work/pytest-args"

start=$(date +%s)
{
    "$py" -m pytest -p no:cacheprovider --color=no -rfE "$@" 2>&1
    echo "$?" >/tmp/nlmx-pytest.rc
} | sed -u 's/^/NLMX|pytest| /'
say "pytest-rc $(cat /tmp/nlmx-pytest.rc) seconds $(($(date +%s) - start))"

"$py" -m netlogger doctor --json >/tmp/nlmx-doctor.json 2>/tmp/nlmx-doctor.err
rc=$?
sed 's/^/NLMX|doctor| /' /tmp/nlmx-doctor.json
sed 's/^/NLMX|doctor-err| /' /tmp/nlmx-doctor.err
say "doctor-rc $rc"
say "done"
