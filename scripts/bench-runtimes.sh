#!/usr/bin/env bash
# Runs one benchmark example of crates/berth/examples against Berth (release
# build) and containerd 2.3.4 of ../shared/critest-lab, each daemon private
# to the run:
#   scripts/bench-runtimes.sh EXAMPLE [--no-peer]
# (scripts/bench-exec.sh and scripts/bench-stats.sh call it.) Needs root, the
# lab registry (start-registry.sh, make-images.sh) and, for the peer,
# build-peers.sh. Starts and stops both daemons itself.
set -euo pipefail
cd "$(dirname "$0")/.."
EXAMPLE=${1:?usage: bench-runtimes.sh EXAMPLE [--no-peer]}
ARG=${2:-}
SHARED=$(cd .. && pwd)/shared
LAB=${LAB:-/var/tmp/critest-lab}
say() { echo "[$(date +%T)] $*" >&2; }
curl -fsS http://127.0.0.1:5000/v2/ >/dev/null || { say "no lab registry: run $SHARED/critest-lab/start-registry.sh and make-images.sh"; exit 1; }
cargo build --release --locked --quiet --bin berth --example "$EXAMPLE"
WORK=$(mktemp -d "/var/tmp/$EXAMPLE.XXXXXX")
DAEMON=
cleanup() {
  [ -n "$DAEMON" ] && { kill "$DAEMON" 2>/dev/null; wait "$DAEMON" 2>/dev/null || true; }
  [ "$ARG" != "--no-peer" ] && bash "$SHARED/critest-lab/start-containerd2.sh" stop >/dev/null 2>&1 || true
  ip link del berthb0 2>/dev/null || true
  # Pod cgroup parents a benchmark asked for (the kubelet would remove them).
  find /sys/fs/cgroup/*/"$EXAMPLE"-* -depth -type d -exec rmdir {} + 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/cni"
# The plugins and options of the lab containerd's chain (write_cni_conf in
# critest-lab/env.sh), so that both runtimes do the same network work.
cat > "$WORK/cni/10-bench.conflist" <<CNI
{"cniVersion": "1.0.0", "name": "berth-bench", "plugins": [
  {"type": "bridge", "bridge": "berthb0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.221.0.0/16"}]], "dataDir": "$WORK/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
CNI
{
  echo "root = \"$WORK/root\""; echo "state = \"$WORK/state\""
  echo "listen = \"unix://$WORK/berth.sock\""; echo 'log_level = "warn"'
  echo "[cni]"; echo "conf_dir = \"$WORK/cni\""
  printf '[registry."docker.io"]\nmirrors = ["http://127.0.0.1:5000"]\nupstream = false\n'
} > "$WORK/config.toml"
target/release/berth daemon --config "$WORK/config.toml" > "$WORK/daemon.log" 2>&1 &
DAEMON=$!
for _ in $(seq 1 100); do [ -S "$WORK/berth.sock" ] && break; sleep 0.1; done
set -- "Berth=unix://$WORK/berth.sock"
if [ "$ARG" != "--no-peer" ]; then
  bash "$SHARED/critest-lab/start-containerd2.sh" >/dev/null
  set -- "$@" "containerd-2.3.4=unix://$LAB/containerd2/run/containerd.sock"
fi
say "running $EXAMPLE against: $*"
"target/release/examples/$EXAMPLE" "$@"
