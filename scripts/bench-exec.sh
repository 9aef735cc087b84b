#!/usr/bin/env bash
# Streaming exec benchmark, Berth (release build) against containerd 2.3.4
# of ../shared/critest-lab: `exec true` round trip through the Exec URL and
# the stdout throughput of one exec, the runtimes alternated round by round:
#   scripts/bench-exec.sh [--no-peer]
# Needs root, the lab registry (start-registry.sh, make-images.sh) and, for
# the peer, build-peers.sh. Starts and stops both daemons itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=$(cd .. && pwd)/shared
LAB=${LAB:-/var/tmp/critest-lab}
say() { echo "[$(date +%T)] $*" >&2; }
curl -fsS http://127.0.0.1:5000/v2/ >/dev/null || { say "no lab registry: run $SHARED/critest-lab/start-registry.sh and make-images.sh"; exit 1; }
cargo build --release --locked --quiet --bin berth --example bench-exec
WORK=$(mktemp -d /var/tmp/bench-exec.XXXXXX)
DAEMON=
cleanup() {
  [ -n "$DAEMON" ] && { kill "$DAEMON" 2>/dev/null; wait "$DAEMON" 2>/dev/null || true; }
  [ "${1:-}" != "--no-peer" ] && bash "$SHARED/critest-lab/start-containerd2.sh" stop >/dev/null 2>&1 || true
  ip link del berthx0 2>/dev/null || true
  rm -rf "$WORK"
}
trap 'cleanup "${ARG:-}"' EXIT
ARG=${1:-}
mkdir -p "$WORK/cni"
cat > "$WORK/cni/10-bench.conflist" <<CNI
{"cniVersion": "1.0.0", "name": "berth-bench-exec", "plugins": [
  {"type": "bridge", "bridge": "berthx0", "isGateway": true, "ipMasq": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.221.0.0/16"}]], "dataDir": "$WORK/ipam"}}]}
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
say "running bench-exec against: $*"
target/release/examples/bench-exec "$@"
