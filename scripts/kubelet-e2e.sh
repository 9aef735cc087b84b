#!/usr/bin/env bash
# Berth under a real kubelet: starts a private Berth daemon (release build)
# and the lab kubelet of ../shared/kubelet-lab on a manifest directory, waits
# until every pod is Ready (or a deadline), then reports what the kubelet
# sees: each pod's phase and containers from its /pods, its failed CRI calls,
# and what /stats/summary has per pod. Then it deletes one manifest and checks
# that the pod's preStop hook ran and that nothing of the pod is left in the
# runtime. With --peer, the same against containerd 2.3.4 (started by
# ../shared/critest-lab/start-containerd2.sh).
#
#   scripts/kubelet-e2e.sh [--peer] [--manifests DIR] [--wait SECONDS] [--keep] [--observability]
#
# --observability starts the kubelet with PodAndContainerStatsFromCRI and
# EventedPLEG and reports, before the restart checks, the container events
# it received, its evented PLEG connection counters (a fallback to
# relisting is a failure) and the metric names of /metrics/cadvisor.
#
# Needs (not run by CI: the kubelet is built from a fetched snapshot):
#   /var/tmp/kubelet-lab/bin/kubelet   ../shared/kubelet-lab/build-kubelet.sh
#   /var/tmp/critest-lab/bin/crictl    ../shared/critest-lab/build-peers.sh
#   the lab registry on 127.0.0.1:5000 ../shared/critest-lab/start-registry.sh + make-images.sh
# --keep leaves the kubelet and the runtime running (stop them with
# `KDIR=... ../shared/kubelet-lab/run-kubelet.sh stop` and by pid).
# BERTH_BIN=path runs that berth binary instead of building a release one.
# BERTH_RECORD=file records every CRI call (`record_requests`); see
# scripts/kubelet-fixture.py for turning it into a test fixture.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SHARED=${SHARED:-$ROOT/../shared}
LAB=${LAB:-/var/tmp/critest-lab}
WORK=${WORK:-/var/tmp/berth-kubelet-e2e}
MANIFESTS=$ROOT/scripts/kubelet-manifests
WAIT=120
PEER=0
KEEP=0
OBSERVE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --peer) PEER=1 ;;
    --manifests) MANIFESTS=$(cd "$2" && pwd); shift ;;
    --wait) WAIT=$2; shift ;;
    --keep) KEEP=1 ;;
    --observability) OBSERVE=1 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '[kubelet-e2e %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
# shellcheck source=kubelet-lab.sh
. "$ROOT/scripts/kubelet-lab.sh"
mkdir -p "$WORK/marks"
rm -f "$WORK"/marks/*
start_runtime

cleanup() {
  if [ "$KEEP" = 1 ]; then say "--keep: kubelet and runtime left running"; return; fi
  bash "$RUN_KUBELET" stop >/dev/null 2>&1 || true
  stop_runtime
}
trap cleanup EXIT

if [ "$OBSERVE" = 1 ]; then
  export KUBELET_EXTRA_ARGS="${KUBELET_EXTRA_ARGS:-} --feature-gates=PodAndContainerStatsFromCRI=true,EventedPLEG=true --v=4"
fi
bash "$RUN_KUBELET" stop >/dev/null 2>&1 || true
rm -f "$KDIR/kubelet.log"
mkdir -p "$KDIR/manifests"
rm -f "$KDIR"/manifests/*
for f in "$MANIFESTS"/*.yaml; do place_manifest "$f"; done
expected=$(cat "$MANIFESTS"/*.yaml | grep -c '^kind: Pod')
t0=$(date +%s.%N)
bash "$RUN_KUBELET" "$ENDPOINT"

# Ready pods, all pods (a pod that must crash is never Ready: it counts as
# settled once its container has restarted).
count_ready() {
  pods_json | python3 -c '
import json, sys
items = json.load(sys.stdin).get("items") or []
ready = 0
for p in items:
    conds = {c["type"]: c["status"] for c in p.get("status", {}).get("conditions", [])}
    statuses = p.get("status", {}).get("containerStatuses") or []
    # static pods are named <name>-<node>
    crashing = p["metadata"]["name"].startswith("crasher-") and any(s.get("restartCount", 0) > 0 for s in statuses)
    if conds.get("Ready") == "True" or crashing:
        ready += 1
print(ready, len(items))'
}
deadline=$(( $(date +%s) + WAIT ))
while :; do
  read -r ready total < <(count_ready 2>/dev/null || echo "0 0")
  if [ "$total" -ge "$expected" ] && [ "$ready" -ge "$expected" ]; then break; fi
  if [ "$(date +%s)" -ge "$deadline" ]; then say "not all pods settled within ${WAIT}s ($ready of $expected)"; break; fi
  sleep 1
done
say "$NAME: $ready of $expected pods settled after $(python3 -c "import time; print(round(time.time() - $t0, 1))") s"

echo "== pods (kubelet /pods)"
pods_json > "$WORK/pods.json"
python3 - "$WORK/pods.json" <<'PY'
import json, sys
items = json.load(open(sys.argv[1])).get("items") or []
for p in sorted(items, key=lambda p: p["metadata"]["name"]):
    st = p.get("status", {})
    conds = {c["type"]: c["status"] for c in st.get("conditions", [])}
    name = p["metadata"]["name"]
    print("%-24s phase=%s ready=%s ip=%s" % (name, st.get("phase"), conds.get("Ready"), st.get("podIP", "-")))
    for kind in ("initContainerStatuses", "containerStatuses"):
        for c in st.get(kind) or []:
            state = c.get("state") or {}
            k, v = next(iter(state.items())) if state else ("?", {})
            why = (v.get("reason", "") + " " + v.get("message", "")[:120]).strip()
            print("    %-4s %-10s %-10s restarts=%-3s ready=%-5s %s" % (kind[:4], c["name"], k, c.get("restartCount", 0), c.get("ready"), why))
PY

echo "== failed CRI calls in the kubelet log"
failed=$(grep -E 'rpc error: code = ' "$KDIR/kubelet.log" | grep -vE 'code = NotFound' || true)
if [ -z "$failed" ]; then echo "none"; else echo "$failed" | sed -E 's/^.*(rpc error: code = [A-Za-z]+ desc = .{0,160}).*$/\1/' | sort | uniq -c | sort -rn | head -20; fi

echo "== /stats/summary"
curl -s -m 10 http://127.0.0.1:10255/stats/summary > "$WORK/summary.json" || true
python3 - "$WORK/summary.json" <<'PY'
import json, sys
try:
    s = json.load(open(sys.argv[1]))
except Exception as e:
    print("unreadable:", e); sys.exit(0)
for p in sorted(s.get("pods", []), key=lambda p: p["podRef"]["name"]):
    have = [k for k in ("cpu", "memory", "network", "ephemeral-storage") if p.get(k)]
    cs = p.get("containers") or []
    ch = sorted({k for c in cs for k in ("cpu", "memory", "rootfs", "logs") if c.get(k)})
    print("%-24s pod: %s; containers (%d): %s" % (p["podRef"]["name"], ",".join(have) or "-", len(cs), ",".join(ch) or "-"))
PY

if [ "$OBSERVE" = 1 ]; then
  echo "== evented PLEG (container events the kubelet received)"
  grep -o '"Received Container [A-Za-z]* Event"' "$KDIR/kubelet.log" | sort | uniq -c || echo "none"
  curl -s -m 10 http://127.0.0.1:10255/metrics | grep -E '^kubelet_evented_pleg_connection_(error|success)_count' || true
  if grep -q "Fall back to Generic PLEG relisting" "$KDIR/kubelet.log"; then
    echo "FALLBACK: the kubelet gave up on GetContainerEvents and relists"
  else
    echo "no fallback to relisting"
  fi
  echo "== /metrics/cadvisor (from the runtime): series per metric"
  curl -s -m 10 http://127.0.0.1:10255/metrics/cadvisor | grep -E '^container_' | sed 's/{.*//' | sort | uniq -c | awk '{printf "%s=%s ", $2, $1} END {print ""}'
fi

# Restart counts per pod/container (the crasher's keep growing: left out).
restarts() {
  pods_json | python3 -c '
import json, sys
for p in sorted(json.load(sys.stdin).get("items") or [], key=lambda p: p["metadata"]["name"]):
    if p["metadata"]["name"].startswith("crasher-"):
        continue
    st = p.get("status", {})
    for c in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
        print(p["metadata"]["name"], c["name"], c.get("restartCount", 0), c.get("containerID", ""))'
}
settle_after_restart() {
  for _ in $(seq 1 30); do
    [ "$(curl -s -m 2 http://127.0.0.1:10248/healthz)" = ok ] && [ "$(restarts | wc -l)" -gt 0 ] && break
    sleep 1
  done
  sleep 15
}
before=$(restarts)
echo "== restarting the kubelet (its pods must be adopted, no container restarted)"
kill "$(cat "$KDIR/kubelet.pid")"
for _ in $(seq 1 50); do kill -0 "$(cat "$KDIR/kubelet.pid")" 2>/dev/null || break; sleep 0.2; done
rm -f "$KDIR/kubelet.pid"
bash "$RUN_KUBELET" "$ENDPOINT" >/dev/null
settle_after_restart
after=$(restarts)
if [ "$before" = "$after" ]; then echo "no container restarted or replaced"; else echo "CHANGED:"; diff <(echo "$before") <(echo "$after") || true; fi
if [ "$PEER" = 0 ]; then
  echo "== kill -9 of the Berth daemon under the running kubelet, then a restart"
  log_mark=$(wc -l < "$KDIR/kubelet.log")
  kill -9 "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true
  sleep 3
  "$bin_used" daemon --config "$WORK/berth/config.toml" >> "$WORK/berth/daemon.log" 2>&1 &
  DAEMON_PID=$!
  settle_after_restart
  after=$(restarts)
  if [ "$before" = "$after" ]; then echo "no container restarted or replaced"; else echo "CHANGED:"; diff <(echo "$before") <(echo "$after") || true; fi
  pleg=$(tail -n +"$((log_mark + 1))" "$KDIR/kubelet.log" | grep 'PLEG is not healthy' || true)
  if [ -n "$pleg" ]; then echo "PLEG was unhealthy:"; echo "$pleg" | tail -2; else echo "PLEG stayed healthy"; fi
fi

if [ -f "$KDIR/manifests/probes-hooks.yaml" ]; then
  echo "== deleting probes-hooks.yaml (preStop hook, nothing left)"
  uid=$(pods_json | python3 -c 'import json,sys; print(next((p["metadata"]["uid"] for p in json.load(sys.stdin)["items"] if p["metadata"]["name"].startswith("probes-hooks-")), ""))')
  rm -f "$KDIR/manifests/probes-hooks.yaml"
  for _ in $(seq 1 60); do
    left=$("$CRICTL" -r "$ENDPOINT" pods --label "io.kubernetes.pod.uid=$uid" -q 2>/dev/null | wc -l)
    [ "$left" = 0 ] && break
    sleep 1
  done
  echo "sandboxes of the pod left in the runtime: $left"
  echo "preStop marks: $(ls "$WORK/marks" 2>/dev/null | tr '\n' ' ')"
  [ -n "$(ls "$WORK/marks" 2>/dev/null)" ] && echo "preStop hook ran" || echo "preStop hook did NOT run"
fi
