#!/usr/bin/env bash
# What `berth node` costs against what the lab kubelet costs for the same
# pods: N copies of the reference pod (scripts/node-compare/reference.yaml:
# an init container, a sidecar, a web container with an HTTP readiness probe
# and a preStop hook, a crashing container and one whose exec liveness
# probe starts failing), named ref-001..ref-N, hostPort 18080+i-1 each.
#
#   scripts/bench-node.sh [N] [--window SECONDS] [--rounds R] [--start-timeout SECONDS]
#                         [--no-record] [--perf] [--report]
#
# Each round runs the kubelet, then berth node (R rounds alternate them),
# each against a fresh private Berth daemon (root and state removed first,
# busybox pulled before the agent starts). For each run, from the agent's
# /pods (read every second until then): the time from the agent's start
# until all N pods were first Running; then, over the window that starts
# there (or at --start-timeout seconds after the agent's start if they
# never all are):
#   - the agent's CPU seconds (utime+stime of /proc/PID/stat, children
#     excluded) and, for comparison, the Berth daemon's;
#   - the agent's peak and final RSS (VmHWM, VmRSS at the window's end);
#   - the CRI calls the agent made (the daemon's record_requests file:
#     lines appended during the window, by method); --no-record: not counted;
#   - at the window's end: pods Running, containers ready, restarts.
# /pods is not read during the window. After it the manifests are moved
# out and the agent is given 120 s to delete its pods (timed), then it is
# stopped, whatever is left is removed from the runtime, the daemon is
# stopped and the host cleaned (run-kubelet.sh `stop` for both agents'
# dirs); pod cgroups (kubepods/.../pod*) still there then are reported and
# removed. The table: per run, then medians over the rounds and the ratio
# node/kubelet.
#
# --perf      also `perf record -g` berth node over its window (perf.data in
#             the run's directory; the CPU it measures then includes perf's cost)
# --report    run nothing: print the table of the runs in $WORK/runs
#
# Needs what scripts/node-compare.sh needs (the lab kubelet, crictl, the lab
# registry). BERTH_BIN: default target/release/berth (never built here; it
# is copied to $WORK/bin first). Before every run the script waits for no
# other kubelet, berth node or cargo test to be running. Not run by CI.
# Env: WORK (default /var/tmp/berth-bench-node), NODE_NAME (default bench),
# NODE_PORT (berth node's /pods port, default 10355), KUBELET_V (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SHARED=${SHARED:-$ROOT/../shared}
LAB=${LAB:-/var/tmp/critest-lab}
WORK=${WORK:-/var/tmp/berth-bench-node}
N=50
WINDOW=120
ROUNDS=2
START_TIMEOUT=300
RECORD=1
PERF=0
REPORT_ONLY=0
NODE_NAME=${NODE_NAME:-bench}
NODE_PORT=${NODE_PORT:-10355}
REFERENCE=$ROOT/scripts/node-compare/reference.yaml
while [ $# -gt 0 ]; do
  case "$1" in
    --window) WINDOW=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --start-timeout) START_TIMEOUT=$2; shift ;;
    --no-record) RECORD=0 ;;
    --perf) PERF=1 ;;
    --report) REPORT_ONLY=1 ;;
    -h|--help) sed -n '2,41p' "$0"; exit 0 ;;
    [0-9]*) N=$1 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ "$N" =~ ^[1-9][0-9]*$ && "$WINDOW" =~ ^[1-9][0-9]*$ && "$ROUNDS" =~ ^[1-9][0-9]*$ && "$START_TIMEOUT" =~ ^[1-9][0-9]*$ ]] \
  || { echo "N, --window, --rounds and --start-timeout take positive integers" >&2; exit 2; }

# Per run (measure.json in $WORK/runs/RUN/), then medians and ratios.
report() {
  python3 - "$WORK/runs" <<'PY'
import json, os, statistics, sys

base = sys.argv[1]
try:
    print("== bench-node: " + open(os.path.join(base, "info")).read().strip())
except OSError:
    pass
runs = []
for d in sorted(os.listdir(base)):
    try:
        runs.append((d, json.load(open(os.path.join(base, d, "measure.json")))))
    except (OSError, ValueError):
        pass
if not runs:
    sys.exit("no runs in " + base)
order = {"kubelet": 0, "node": 1}
runs.sort(key=lambda r: (r[1]["round"], order.get(r[1]["kind"], 2)))

def mib(kib):
    return None if kib is None else kib / 1024

ROWS = [
    ("pods Running at the window's start", lambda m: m["running_at_start"], "%d"),
    ("s until all pods first Running", lambda m: m["all_running_s"], "%.1f"),
    ("agent CPU s in the window", lambda m: m["agent"]["cpu_s"], "%.2f"),
    ("agent CPU % of one core (window)", lambda m: 100 * m["agent"]["cpu_s"] / m["window_s"], "%.1f"),
    ("agent CPU s from start to window end", lambda m: m["agent"]["cpu_total_s"], "%.1f"),
    ("agent peak RSS MiB (VmHWM)", lambda m: mib(m["agent"]["vmhwm_kib"]), "%.1f"),
    ("agent final RSS MiB (VmRSS)", lambda m: mib(m["agent"]["vmrss_kib"]), "%.1f"),
    ("agent threads at the window's end", lambda m: m["agent"]["threads"], "%d"),
    ("CRI calls in the window", lambda m: m["cri_calls"], "%d"),
    ("CRI calls per second", lambda m: None if m["cri_calls"] is None else m["cri_calls"] / m["window_s"], "%.1f"),
    ("daemon CPU s in the window", lambda m: m["daemon_cpu_s"], "%.2f"),
    ("agent + daemon CPU s in the window", lambda m: m["agent"]["cpu_s"] + m["daemon_cpu_s"], "%.2f"),
    ("pods Running at the window's end", lambda m: m["end"]["running"], "%d"),
    ("containers ready at the window's end", lambda m: m["end"]["ready"], "%d"),
    ("restarts at the window's end (all pods)", lambda m: m["end"]["restarts"], "%d"),
    ("restarts in the window", lambda m: m["restarts_in_window"], "%d"),
    ("s to delete all (no pod, no container running)", lambda m: m["deleted_s"], "%.1f"),
]

def get(m, f):
    try:
        return f(m)
    except (KeyError, TypeError, ZeroDivisionError):
        return None

def fmt(v, f):
    return "-" if v is None else f % v

names = [d for d, _ in runs]
W = max(13, max(len(n) for n in names) + 1)
print("\n== per run (window %ss, %s pods)" % (runs[0][1]["window_s"], runs[0][1]["n"]))
print("%-48s" % "" + "".join("%*s" % (W, n) for n in names))
for label, f, spec in ROWS:
    print("%-48s" % label + "".join("%*s" % (W, fmt(get(m, f), spec)) for _, m in runs))

print("\n== medians over rounds: berth node vs the kubelet")
print("%-48s%14s%14s%16s" % ("", "kubelet", "berth node", "node/kubelet"))
for label, f, spec in ROWS:
    med = {}
    for agent in ("kubelet", "node"):
        vals = [v for v in (get(m, f) for _, m in runs if m["kind"] == agent) if v is not None]
        med[agent] = statistics.median(vals) if vals else None
    k, n = med["kubelet"], med["node"]
    ratio = "-" if k in (None, 0) or n is None else "%.2f" % (n / k)
    print("%-48s%14s%14s%16s" % (label, fmt(k, spec), fmt(n, spec), ratio))

for d, m in runs:
    notes = m.get("notes") or []
    calls = m.get("cri_by_method") or {}
    threads = m["agent"].get("cpu_by_thread") or {}
    if notes or calls or threads:
        print("\n== %s" % d)
    for n in notes:
        print("  note: " + n)
    if calls:
        print("  CRI calls in the window: " + ", ".join("%s %d" % kv for kv in sorted(calls.items(), key=lambda kv: -kv[1])))
    if threads:
        print("  agent CPU s in the window by thread name: " +
              ", ".join("%s %.2f" % kv for kv in sorted(threads.items(), key=lambda kv: -kv[1]) if kv[1] > 0))
PY
}
if [ "$REPORT_ONLY" = 1 ]; then report; exit 0; fi

say() { printf '[bench-node %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
export BERTH_BIN=${BERTH_BIN:-$ROOT/target/release/berth}
export KUBELET_V=${KUBELET_V:-2}
export KUBELET_NODE_NAME=$NODE_NAME
PEER=0
# shellcheck source=kubelet-lab.sh
. "$ROOT/scripts/kubelet-lab.sh"
NODE_DIR=$WORK/node
MANIFESTS=$WORK/manifests
NODE_PID=
ENDPOINT=

pin_berth_bin
"$BERTH_BIN" node --help >/dev/null 2>&1 || { say "$BERTH_BIN has no 'node' subcommand"; exit 1; }
if [ "$PERF" = 1 ] && ! command -v perf >/dev/null; then say "--perf: no perf installed"; exit 1; fi

# N copies of the reference pod: distinct names and host ports.
rm -rf "$MANIFESTS"
mkdir -p "$MANIFESTS"
for i in $(seq 1 "$N"); do
  name=$(printf 'ref-%03d' "$i")
  sed -e "s/^metadata: {name: ref,/metadata: {name: $name,/" -e "s/hostPort: 18080,/hostPort: $((18079 + i)),/" \
    "$REFERENCE" > "$MANIFESTS/$name.yaml"
  if ! grep -q "name: $name," "$MANIFESTS/$name.yaml" || ! grep -q "hostPort: $((18079 + i))," "$MANIFESTS/$name.yaml"; then
    say "$REFERENCE has changed: cannot derive $name from it"; exit 1
  fi
done

trap 'node_lab_cleanup 0' EXIT

# Measures one agent run; writes OUT/measure.json.
#   measure AGENT ROUND PIDFILE URL OUT
measure() {
  python3 - "$@" "$N" "$WINDOW" "$START_TIMEOUT" "${BERTH_RECORD:-}" "$DAEMON_PID" "$PERF" <<'PY'
import json, os, subprocess, sys, time, urllib.request

agent, rnd, pidfile, url, out, n, window, start_timeout, record, daemon_pid, perf = sys.argv[1:]
n, window, start_timeout = int(n), float(window), float(start_timeout)
HZ = os.sysconf("SC_CLK_TCK")
notes = []

def agent_pid():
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            pid = int(open(pidfile).read().split()[0])
            if open(f"/proc/{pid}/comm").read().strip() in ("kubelet", "berth"):
                return pid
            # a wrapper (setsid that forked): its child
            for p in os.listdir("/proc"):
                if p.isdigit() and int(stat(p)[1]) == pid and \
                        open(f"/proc/{p}/comm").read().strip() in ("kubelet", "berth"):
                    return int(p)
        except (OSError, ValueError, IndexError):
            pass
        time.sleep(0.05)
    sys.exit("no agent process in %s" % pidfile)

def stat(pid, tid=None):
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    return open(path).read().rsplit(")", 1)[1].split()

def cpu(pid):
    st = stat(pid)
    return (int(st[11]) + int(st[12])) / HZ

def status(pid):
    res = {}
    for l in open(f"/proc/{pid}/status"):
        k, _, v = l.partition(":")
        if k in ("VmHWM", "VmRSS", "Threads"):
            res[k] = int(v.split()[0])
    return res

def threads(pid):
    res = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            st = stat(pid, tid)
            res[tid] = (name, (int(st[11]) + int(st[12])) / HZ)
        except (OSError, IndexError, ValueError):
            pass
    return res

def pods():
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read()).get("items") or []
    except Exception:
        return None

def summary(items):
    running = ready = restarts = 0
    for p in items or []:
        st = p.get("status") or {}
        running += st.get("phase") == "Running"
        for c in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
            ready += bool(c.get("ready"))
            restarts += c.get("restartCount", 0)
    return {"listed": len(items or []), "running": running, "ready": ready, "restarts": restarts}

def record_pos():
    try:
        return os.path.getsize(record) if record else None
    except OSError:
        return None

pid = agent_pid()
btime = next(int(l.split()[1]) for l in open("/proc/stat") if l.startswith("btime "))
t0 = btime + int(stat(pid)[19]) / HZ
all_running = None
last = None
while time.time() < t0 + start_timeout:
    items = pods()
    if items is not None:
        last = summary(items)
        if last["running"] >= n:
            all_running = time.time() - t0
            break
    time.sleep(1)
if all_running is None:
    notes.append("not all pods Running %ds after the start (%s): window from then" % (start_timeout, last))
start = {"running": (last or {}).get("running", 0), "restarts": (last or {}).get("restarts", 0)}

perf_proc = None
if perf == "1" and agent == "node":
    perf_proc = subprocess.Popen(["perf", "record", "-q", "-F", "199", "-g", "-o", os.path.join(out, "perf.data"),
                                  "-p", str(pid), "--", "sleep", str(int(window))],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
ws = time.time()
c0, th0, r0 = cpu(pid), threads(pid), record_pos()
d0 = cpu(int(daemon_pid)) if daemon_pid else None
time.sleep(max(0.0, ws + window - time.time()))
c1, th1, r1, st1 = cpu(pid), threads(pid), record_pos(), status(pid)
d1 = cpu(int(daemon_pid)) if daemon_pid else None
we = time.time()
if perf_proc:
    perf_proc.wait()
end = summary(pods())

by_thread = {}
for tid, (name, c) in th1.items():
    by_thread[name] = by_thread.get(name, 0.0) + c - th0.get(tid, (name, 0.0))[1]

calls = by_method = None
if r0 is not None and r1 is not None:
    by_method = {}
    with open(record, "rb") as f:
        f.seek(r0)
        data = f.read(r1 - r0)
    for line in data.splitlines():
        try:
            m = json.loads(line).get("method")
        except ValueError:
            continue
        if m:
            by_method[m] = by_method.get(m, 0) + 1
    calls = sum(by_method.values())

json.dump({
    "kind": agent, "round": int(rnd), "n": n, "window_s": round(we - ws, 2),
    "all_running_s": None if all_running is None else round(all_running, 2),
    "running_at_start": start["running"],
    "agent": {"pid": pid, "cpu_s": round(c1 - c0, 3), "cpu_total_s": c1, "vmhwm_kib": st1.get("VmHWM"),
              "vmrss_kib": st1.get("VmRSS"), "threads": st1.get("Threads"),
              "cpu_by_thread": {k: round(v, 2) for k, v in by_thread.items()}},
    "daemon_cpu_s": None if d0 is None else round(d1 - d0, 3),
    "cri_calls": calls, "cri_by_method": by_method,
    "end": end, "restarts_in_window": end["restarts"] - start["restarts"],
    "notes": notes,
}, open(os.path.join(out, "measure.json"), "w"), indent=1)
PY
}

# After the window: the manifests move out; the seconds until the agent's
# /pods is empty and the runtime has no running container (120 s at most)
# are added to measure.json.
#   delete_all URL MANIFEST_DIR OUT
delete_all() {
  python3 - "$@" "$CRICTL" "$ENDPOINT" <<'PY'
import json, os, subprocess, sys, time, urllib.request
url, mdir, out, crictl, endpoint = sys.argv[1:]

def running():
    try:
        r = subprocess.run([crictl, "-r", endpoint, "-t", "10s", "ps", "-q"], capture_output=True, text=True, timeout=20)
        return len(r.stdout.split()) if r.returncode == 0 else None
    except Exception:
        return None

t = time.time()
os.makedirs(os.path.join(out, "removed"), exist_ok=True)
for f in os.listdir(mdir):
    if not f.startswith("."):
        os.rename(os.path.join(mdir, f), os.path.join(out, "removed", f))
deleted = None
empty = False
while time.time() < t + 120:
    try:
        if not empty:
            with urllib.request.urlopen(url, timeout=5) as r:
                empty = not (json.loads(r.read()).get("items") or [])
        if empty and running() == 0:
            deleted = round(time.time() - t, 2)
            break
    except Exception:
        pass
    time.sleep(0.5)
p = os.path.join(out, "measure.json")
m = json.load(open(p))
m["deleted_s"] = deleted
if deleted is None:
    m["notes"].append("/pods not empty or containers still running 120 s after the manifests were removed")
json.dump(m, open(p, "w"), indent=1)
PY
}

# Pod cgroups (kubepods/<qos>/pod<uid>, kubepods/pod<uid>) in any hierarchy.
pod_cgroups() {
  find /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods -maxdepth 2 -type d -name 'pod*' 2>/dev/null || true
}

# Adds a note to OUT/measure.json.
note() {
  python3 - "$1/measure.json" "$2" <<'PY'
import json, sys
p, text = sys.argv[1:]
try:
    m = json.load(open(p))
except (OSError, ValueError):
    sys.exit(0)
m.setdefault("notes", []).append(text)
json.dump(m, open(p, "w"), indent=1)
PY
}

# One run: a fresh daemon, the agent on the N manifests, measure, delete,
# clean up, check that nothing is left.
run_one() {
  local agent=$1 round=$2 out left cg obs
  out=$WORK/runs/r$round-$agent
  rm -rf "$out"
  mkdir -p "$out" /var/tmp/berth-node-compare/marks
  # Pod cgroups of someone else's run (tests, say) are given 2 minutes to
  # go; then, if no process is in them, they are removed (the kubelet would
  # remove them as orphans anyway).
  local tries=0
  while :; do
    wait_for_quiet
    cg=$(pod_cgroups)
    [ -z "$cg" ] && break
    if [ "$tries" -ge 4 ]; then
      if [ -n "$(echo "$cg" | while read -r d; do find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null; done)" ]; then
        say "pod cgroups with processes in them (someone else's pods): $(echo "$cg" | head -3 | tr '\n' ' ')"; exit 1
      fi
      say "removing $(echo "$cg" | wc -l) empty pod cgroups left by someone else"
      echo "$cg" | while read -r d; do find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true; done
      cg=$(pod_cgroups)
      [ -z "$cg" ] || { say "pod cgroups that cannot be removed: $(echo "$cg" | head -3 | tr '\n' ' ')"; exit 1; }
      break
    fi
    say "waiting (30 s) for $(echo "$cg" | wc -l) pod cgroups of someone else's pods to go"
    tries=$((tries + 1))
    sleep 30
  done
  for port in 10250 10255 10248 "$NODE_PORT"; do
    if [ -n "$(ss -Hltn "( sport = :$port )" 2>/dev/null)" ]; then
      say "port $port is in use (another kubelet or berth node running?)"; exit 1
    fi
  done
  rm -rf "${KDIR:?}"/logs/* "${NODE_DIR:?}"/logs/*
  find /var/log/containers -maxdepth 1 \( -lname "$KDIR/logs/*" -o -lname "$NODE_DIR/logs/*" \) -delete 2>/dev/null || true
  fresh_berth_dirs
  mkdir -p "$WORK/berth"
  BERTH_RECORD=
  [ "$RECORD" = 1 ] && BERTH_RECORD=$WORK/berth/calls.jsonl
  start_runtime >/dev/null
  "$CRICTL" -r "$ENDPOINT" -t 60s rmp -a -f >/dev/null 2>&1 || true
  prepull
  say "round $round: $agent, $N pods, window ${WINDOW}s"
  if [ "$agent" = kubelet ]; then
    bash "$RUN_KUBELET" stop >/dev/null 2>&1 || true
    rm -f "$KDIR/kubelet.log" "$KDIR/kubelet.pid"
    mkdir -p "$KDIR/manifests"
    rm -f "$KDIR"/manifests/*
    place_all
    measure kubelet "$round" "$KDIR/kubelet.pid" http://127.0.0.1:10255/pods "$out" &
    obs=$!
    bash "$RUN_KUBELET" "$ENDPOINT" >/dev/null || say "the kubelet did not start (log $KDIR/kubelet.log)"
    wait "$obs" || say "the measurement failed"
    delete_all http://127.0.0.1:10255/pods "$KDIR/manifests" "$out" || true
    # what run-kubelet.sh `stop` would otherwise leave to the runtime's stop
    left=$("$CRICTL" -r "$ENDPOINT" -t 30s pods -q --state ready 2>/dev/null | wc -l)
    bash "$RUN_KUBELET" stop >/dev/null 2>&1 || true
    cp "$KDIR/kubelet.log" "$out/agent.log" 2>/dev/null || true
  else
    measure node "$round" "$NODE_DIR/node.pid" "http://127.0.0.1:$NODE_PORT/pods" "$out" &
    obs=$!
    start_node
    wait "$obs" || say "the measurement failed"
    delete_all "http://127.0.0.1:$NODE_PORT/pods" "$NODE_DIR/manifests" "$out" || true
    left=$("$CRICTL" -r "$ENDPOINT" -t 30s pods -q --state ready 2>/dev/null | wc -l)
    stop_node
    cp "$NODE_DIR/node.log" "$out/agent.log"
  fi
  [ "$left" = 0 ] || note "$out" "$left pod sandboxes still ready once no container ran (the agent was stopped then; the clean-up removed them)"
  "$CRICTL" -r "$ENDPOINT" -t 120s rmp -a -f >/dev/null 2>&1 || true
  left=$("$CRICTL" -r "$ENDPOINT" -t 30s pods -q 2>/dev/null | wc -l)
  [ "$left" = 0 ] || { say "$left pod sandboxes could not be removed"; exit 1; }
  cp "$WORK/berth/daemon.log" "$out/daemon.log" 2>/dev/null || true
  stop_runtime
  host_cleanup
  ENDPOINT=
  DAEMON_PID=
  cg=$(pod_cgroups)
  if [ -n "$cg" ]; then
    note "$out" "pod cgroups left after the clean-up (removed now): $(echo "$cg" | tr '\n' ' ')"
    echo "$cg" | sort -r | while read -r d; do find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true; done
    cg=$(pod_cgroups)
    [ -z "$cg" ] || { say "pod cgroups that cannot be removed: $cg"; exit 1; }
  fi
  if awk -v a="$WORK/" 'index($5, a) == 1 {f=1} END {exit !f}' /proc/self/mountinfo; then
    say "mounts under $WORK left after the clean-up:"; awk -v a="$WORK/" 'index($5, a) == 1 {print "  " $5}' /proc/self/mountinfo >&2
    exit 1
  fi
  say "round $round: $agent done ($out)"
}

rm -rf "$WORK/runs"
mkdir -p "$WORK/runs"
echo "$N reference pods, window ${WINDOW}s, $ROUNDS rounds, berth $(date -r "$BERTH_BIN" '+%F %T') ($("$BERTH_BIN" --version 2>/dev/null || true)), $(/var/tmp/kubelet-lab/bin/kubelet --version), $(nproc) CPUs, $(free -m | awk '/^Mem:/ {print $2}') MiB" > "$WORK/runs/info"
# (not "r": kubelet-lab.sh's start_berth loops with a global r)
for bench_round in $(seq 1 "$ROUNDS"); do
  run_one kubelet "$bench_round"
  run_one node "$bench_round"
done
report
