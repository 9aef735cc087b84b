#!/usr/bin/env bash
# Runs Berth's whole test suite: format and lint checks, the fuzz targets
# for a bounded time, unit tests and the integration tests (which start real daemons, a real registry and real
# mounts, so this must run as root on Linux).
# Installs the Debian packages the tests need when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || need+=(busybox-static file)
command -v pkg-config >/dev/null || need+=(pkg-config)
[ -x /usr/lib/cni/bridge ] || [ -x /opt/cni/bin/bridge ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
command -v nsenter >/dev/null || need+=(util-linux)
command -v runc >/dev/null || [ -x /usr/sbin/runc ] || need+=(runc)
pkg-config --exists libseccomp 2>/dev/null || need+=(libseccomp-dev)
command -v ps >/dev/null || need+=(procps)
command -v g++ >/dev/null || need+=(g++)  # libFuzzer, for the fuzz targets
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${need[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The fuzz targets, a bounded time each (FUZZ_SECONDS, default 60; 0 skips).
[ "${FUZZ_SECONDS:-60}" = 0 ] || scripts/fuzz.sh
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-2}"
