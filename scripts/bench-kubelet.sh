#!/usr/bin/env bash
# Pod startup as the kubelet sees it: N pods placed at once under the lab
# kubelet, timed until its /pods reports every one Ready; Berth and
# containerd 2.3.4 alternated, each run from a fresh kubelet with the image
# already pulled. Prints the medians side by side and their ratio.
#
#   scripts/bench-kubelet.sh [--pods "10 30"] [--runs 3] [--berth-only] [--host-network]
#
# --host-network places hostNetwork pods: no CNI plugin runs, which shows
# how much of the time is the network setup both runtimes share.
#
# Needs what scripts/kubelet-e2e.sh needs (the lab kubelet, crictl, the lab
# registry); not run by CI. BERTH_BIN=path uses that berth binary.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SHARED=${SHARED:-$ROOT/../shared}
LAB=${LAB:-/var/tmp/critest-lab}
WORK=${WORK:-/var/tmp/berth-kubelet-bench}
COUNTS="10 30"
RUNS=3
SYSTEMS="0 1"
HOST_NETWORK=false
while [ $# -gt 0 ]; do
  case "$1" in
    --pods) COUNTS=$2; shift ;;
    --runs) RUNS=$2; shift ;;
    --berth-only) SYSTEMS=0 ;;
    --host-network) HOST_NETWORK=true ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
say() { printf '[bench-kubelet %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
PEER=0
# shellcheck source=kubelet-lab.sh
. "$ROOT/scripts/kubelet-lab.sh"
IMAGE=docker.io/library/busybox:1.36.1
if [ -z "${BERTH_BIN:-}" ]; then
  cargo build --release --locked --bin berth >/dev/null
  export BERTH_BIN=$ROOT/target/release/berth
fi

manifest() {
  cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: bench-$1, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  hostNetwork: $HOST_NETWORK
  containers:
  - name: main
    image: $IMAGE
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
EOF
}

# One timed run: prints the seconds from placing N manifests to N Ready pods.
# One python process renames the manifests into place and then polls the
# kubelet's /pods every 25 ms, so that neither the placing nor the polling
# starts a process per step (that cost 0.1-0.5 s per run on 2 cores, added
# to whichever runtime was measured).
run_once() {
  local n=$1
  start_runtime
  "$CRICTL" -r "$ENDPOINT" pull "$IMAGE" >/dev/null 2>&1
  rm -f "$KDIR"/manifests/*.yaml
  mkdir -p "$KDIR/manifests" "$WORK/gen"
  bash "$RUN_KUBELET" "$ENDPOINT" >/dev/null
  for i in $(seq 1 "$n"); do manifest "$i" > "$WORK/gen/.bench-$i.yaml"; done
  python3 - "$n" "$WORK/gen" "$KDIR/manifests" <<'PY'
import json, os, sys, time, urllib.request
n, gen, dest = int(sys.argv[1]), sys.argv[2], sys.argv[3]
t0 = time.monotonic()
for i in range(1, n + 1):
    os.rename(f"{gen}/.bench-{i}.yaml", f"{dest}/bench-{i}.yaml")
ready = 0
while time.monotonic() - t0 < 300:
    try:
        with urllib.request.urlopen("http://127.0.0.1:10255/pods", timeout=5) as r:
            items = json.load(r).get("items") or []
        ready = sum(1 for p in items
                    if any(c["type"] == "Ready" and c["status"] == "True"
                           for c in p.get("status", {}).get("conditions", [])))
    except OSError:
        pass
    if ready >= n:
        break
    time.sleep(0.025)
else:
    print(f"only {ready} of {n} Ready after 300 s", file=sys.stderr)
print(round(time.monotonic() - t0, 3))
PY
  rm -f "$KDIR"/manifests/*.yaml
  bash "$RUN_KUBELET" stop >/dev/null 2>&1 || true
  stop_runtime
}

trap 'bash "$RUN_KUBELET" stop >/dev/null 2>&1 || true; PEER=0 stop_runtime; PEER=1 stop_runtime' EXIT
printf '%-6s %-12s %-12s %s\n' pods Berth containerd ratio
for n in $COUNTS; do
  declare -A times=([0]="" [1]="")
  for r in $(seq 1 "$RUNS"); do
    for sys in $SYSTEMS; do
      PEER=$sys
      t=$(run_once "$n")
      say "$n pods, run $r, $([ "$sys" = 1 ] && echo containerd || echo Berth): $t s"
      times[$sys]="${times[$sys]} $t"
    done
  done
  python3 - "$n" "${times[0]}" "${times[1]}" <<'PY'
import statistics, sys
n, berth, peer = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
b = statistics.median(map(float, berth)) if berth else None
c = statistics.median(map(float, peer)) if peer else None
fmt = lambda v: "-" if v is None else "%.2f s" % v
ratio = "-" if b is None or not c else "%.2f" % (b / c)
print("%-6s %-12s %-12s %s" % (n, fmt(b), fmt(c), ratio))
PY
done
