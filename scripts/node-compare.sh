#!/usr/bin/env bash
# `berth node` against the lab kubelet: runs one manifest directory four
# ways, one after the other, each from a clean runtime:
#
#   kubelet@berth       the lab kubelet  on a private Berth daemon
#   node@berth          berth node       on a private Berth daemon
#   kubelet@containerd  the lab kubelet  on containerd 2.3.4
#   node@containerd     berth node       on containerd 2.3.4
#
# Each run lasts a fixed window from the agent's start; the agent's /pods
# is read every 0.5 s and every transition is timed (seconds since the
# agent process started): pod phase and conditions, each container's
# state (waiting reason / running / terminated reason and exit code),
# restartCount increments and ready flips. At the end of the window the
# manifests are moved out of the agent's directory and the script waits
# (30 s at most) for /pods to be empty ("deleted") and for the runtime to
# have no running container, then stops the agent, removes every pod from
# the runtime and stops the runtime. Then it prints the four timelines
# side by side, the final state of every container, the events (berth
# node's /events; the kubelet's "Event occurred" log lines, which need
# KUBELET_V >= 3), and the agent's peak RSS (VmHWM) and CPU seconds
# (utime + stime) in each run.
#
#   scripts/node-compare.sh [--manifests DIR] [--window SECONDS] [--runs LIST] [--report]
#
# --manifests  default scripts/node-compare/ (reference.yaml: the pod the
#              berth node issue is done with)
# --window     seconds from the agent's start to the deletion (default 60)
# --runs       comma-separated subset of the four runs, in the order given
#              (e.g. --runs kubelet@berth,kubelet@containerd)
# --report     run nothing: print the report of the runs kept in $WORK/runs
#
# Needs what scripts/kubelet-e2e.sh needs (the lab kubelet, crictl,
# containerd 2.3.4, the lab registry on 127.0.0.1:5000), plus a berth binary
# with `berth node`: BERTH_BIN (default target/debug/berth; this script
# never builds). Not run by CI. Env: WORK (default /var/tmp/berth-node-compare;
# each run's observed.json, agent log and removed manifests stay in $WORK/runs/RUN/),
# NODE_NAME (the node name both agents use, default "compare"), NODE_PORT
# (berth node's /pods port, default 10355; the kubelet's is 10255),
# KUBELET_V (default 3, so that the kubelet logs its events).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SHARED=${SHARED:-$ROOT/../shared}
LAB=${LAB:-/var/tmp/critest-lab}
WORK=${WORK:-/var/tmp/berth-node-compare}
MANIFESTS=$ROOT/scripts/node-compare
WINDOW=60
REPORT_ONLY=0
RUNS="kubelet@berth,node@berth,kubelet@containerd,node@containerd"
NODE_NAME=${NODE_NAME:-compare}
NODE_PORT=${NODE_PORT:-10355}
# The reference manifest's preStop hook writes here (a hostPath).
MARKS=/var/tmp/berth-node-compare/marks
while [ $# -gt 0 ]; do
  case "$1" in
    --manifests) MANIFESTS=$(cd "$2" && pwd); shift ;;
    --window) WINDOW=$2; shift ;;
    --runs) RUNS=$2; shift ;;
    --report) REPORT_ONLY=1 ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
for r in ${RUNS//,/ }; do
  case "$r" in kubelet@berth|node@berth|kubelet@containerd|node@containerd) ;;
    *) echo "unknown run $r (kubelet@berth node@berth kubelet@containerd node@containerd)" >&2; exit 2 ;;
  esac
done

# The four timelines side by side, from $WORK/runs/*/observed.json.
report() {
  echo "== node-compare: $(cat "$WORK/runs/info" 2>/dev/null)"
  echo "   /pods read every 0.5 s; times in seconds since the agent process started"
  python3 - "$WORK/runs" "$NODE_NAME" "${RUNS//,/ }" <<'PY'
import json, os, re, sys, time
from datetime import datetime

base, node, runs = sys.argv[1], sys.argv[2], sys.argv[3].split()
COLS = ["kubelet@berth", "node@berth", "kubelet@containerd", "node@containerd"]
cols = [c for c in COLS if c in runs]
data = {}
for r in cols:
    try:
        data[r] = json.load(open(os.path.join(base, r, "observed.json")))
    except (OSError, ValueError):
        data[r] = None

def fmt(v):
    return "-" if v is None else "%.1f" % v

W = 19
def row(label, vals):
    print("%-44s" % label + "".join("%*s" % (W, v) for v in vals))

print()
row("transition", cols)
times = {}
order = []
for r in cols:
    for t, k in (data[r] or {}).get("transitions", []):
        if k not in times:
            times[k] = {}
            order.append(k)
        times[k].setdefault(r, t)
for k in sorted(order, key=lambda k: (min(times[k].values()), order.index(k))):
    row(k, [fmt(times[k].get(r)) for r in cols])

print("\n== final state (end of the window)")
for r in cols:
    d = data[r]
    if d is None:
        print(f"{r}: no observation"); continue
    print(f"{r}: polls {d['polls']} ({d['failed_polls']} unanswered); hostPort 18080: {d['hostport'] or 'no answer'}")
    for pk, p in sorted(d["final"].items()):
        conds = " ".join(f"{k}={v}" for k, v in sorted(p["conditions"].items()))
        print(f"  {pk}: uid={p.get('uid')} phase={p['phase']} {conds}")
        for c in p["containers"]:
            print("    %-4s %-9s %-26s ready=%-5s started=%-5s restarts=%-2s last=%s" % (
                c["kind"], c["name"], c["state"], str(c["ready"]).lower(), str(c["started"]).lower(),
                c["restarts"], c["last"]))

print("\n== deletion (manifest moved out at the end of the window)")
row("", cols)
row("manifest removed", [fmt((data[r] or {}).get("removed")) for r in cols])
row("deleted (/pods empty)", [fmt((data[r] or {}).get("deleted")) for r in cols])
row("runtime: no running container", [fmt((data[r] or {}).get("stopped")) for r in cols])
row("preStop hook ran (mark written)", [("yes" if (data[r] or {}).get("prestop") else "no") if data[r] else "-" for r in cols])
left = [(data[r] or {}).get("left_in_runtime") for r in cols]
row("left in runtime: sandboxes/containers", ["%s/%s" % (l["sandboxes"], l["containers"]) if l else "-" for l in left])

print("\n== agent process (kubelet vs berth node)")
row("", cols)
def use(r, which, key, scale):
    u = (data[r] or {}).get(which)
    return "-" if not u else "%.1f" % (u[key] / scale)
row("peak RSS MiB (VmHWM)", [use(r, "usage_end", "vmhwm_kib", 1024) for r in cols])
row("CPU s in the window", [use(r, "usage_window", "cpu_s", 1) for r in cols])
row("CPU s until stopped", [use(r, "usage_end", "cpu_s", 1) for r in cols])

# Events: berth node's /events; the kubelet's "Event occurred" log lines
# (pod events only; a message is quoted, or multi-line as message=<...>).
EV = re.compile(r'^[IWE](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d+)\s+\d+ \S+\] "Event occurred" '
                r'object="([^"]*)" fieldPath="([^"]*)" kind="([^"]*)" apiVersion="[^"]*" '
                r'type="([^"]*)" reason="([^"]*)" message=(.*)$')
def strip(name):
    return name[: -len(node) - 1] if name.endswith("-" + node) else name
def events_of(d):
    out = []
    if not d:
        return out
    ev = d.get("events")
    if isinstance(ev, dict):
        year = time.localtime(d["t0"]).tm_year
        try:
            lines = open(ev["log"], errors="replace").read().splitlines()
        except OSError:
            return out
        for i, line in enumerate(lines):
            m = EV.match(line)
            if not m:
                continue
            mo, dd, hh, mi, ss, frac, obj, fp, kind, typ, reason, msg = m.groups()
            if kind != "Pod":
                continue
            if msg.startswith('"'):
                msg = json.loads(re.match(r'"(?:[^"\\]|\\.)*"', msg).group(0))
            elif msg == "<":
                body = []
                for l in lines[i + 1:]:
                    if not l.startswith("\t"):
                        break
                    body.append(l[1:])
                msg = "\n".join(body)
            t = time.mktime((year, int(mo), int(dd), int(hh), int(mi), int(ss), 0, 0, -1)) + float("0." + frac)
            ns, _, name = obj.partition("/")
            pk = strip(name) if ns == "default" else f"{ns}/{strip(name)}"
            c = re.search(r"\{(.*)\}", fp)
            out.append((t - d["t0"], typ, pk + ("/" + c.group(1) if c else ""), reason, msg))
    else:
        for e in ev or []:
            try:
                t = datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp()
            except (KeyError, ValueError):
                continue
            ns, name = e.get("namespace", "default"), strip(e.get("pod", "?"))
            pk = name if ns == "default" else f"{ns}/{name}"
            out.append((t - d["t0"], e.get("type", ""), pk + ("/" + e["container"] if e.get("container") else ""),
                        e.get("reason", ""), e.get("message", "")))
    # one line; the pod uid (it differs between the agents) as <uid>
    return sorted((t, typ, obj, reason, re.sub(r"\b[0-9a-f]{32}\b", "<uid>",
                                                " | ".join(l.strip() for l in msg.strip().splitlines())))
                  for t, typ, obj, reason, msg in out)

print("\n== events: count (first time) per object and reason")
row("", cols)
evs = {r: events_of(data[r]) for r in cols}
agg = {}
for r in cols:
    for t, typ, obj, reason, msg in evs[r]:
        a = agg.setdefault((obj, reason, typ), {})
        n, first, m = a.get(r, (0, t, msg))
        a[r] = (n + 1, first, m)
for key in sorted(agg, key=lambda k: min(v[1] for v in agg[k].values())):
    obj, reason, typ = key
    row(f"{obj} {reason}" + (" (Warning)" if typ == "Warning" else ""),
        ["%d (%s)" % (agg[key][r][0], fmt(agg[key][r][1])) if r in agg[key] else "-" for r in cols])
print("\n== event messages that differ (the first of each, kubelet vs berth node)")
for key in sorted(agg, key=lambda k: min(v[1] for v in agg[k].values())):
    obj, reason, _ = key
    msgs = {}
    for r in cols:
        if r in agg[key]:
            msgs.setdefault(r.split("@")[0], agg[key][r][2])
    if msgs.get("kubelet") == msgs.get("node"):
        continue
    print(f"{obj} {reason}")
    for who in ("kubelet", "node"):
        print("    %-8s %s" % (who, (msgs.get(who) or "-")[:150]))
PY
}
if [ "$REPORT_ONLY" = 1 ]; then report; exit 0; fi

say() { printf '[node-compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# kubelet-lab.sh builds a release berth unless BERTH_BIN is set.
export BERTH_BIN=${BERTH_BIN:-$ROOT/target/debug/berth}
export KUBELET_V=${KUBELET_V:-3}
export KUBELET_NODE_NAME=$NODE_NAME
PEER=0
# shellcheck source=kubelet-lab.sh
. "$ROOT/scripts/kubelet-lab.sh"
NODE_DIR=$WORK/node
CTRD2_PIDF=$LAB/containerd2/containerd.pid

pin_berth_bin
if [[ ",$RUNS," == *,node@* ]] && ! "$BERTH_BIN" node --help >/dev/null 2>&1; then
  say "$BERTH_BIN has no 'node' subcommand"; exit 1
fi
compgen -G "$MANIFESTS/*.yaml" >/dev/null || compgen -G "$MANIFESTS/*.yml" >/dev/null \
  || compgen -G "$MANIFESTS/*.json" >/dev/null || { say "no manifests in $MANIFESTS"; exit 1; }
for port in 10250 10255 10248 "$NODE_PORT"; do
  if [ -n "$(ss -Hltn "( sport = :$port )" 2>/dev/null)" ]; then
    say "port $port is in use (another kubelet or berth node running?)"; exit 1
  fi
done
if [ -s "$CTRD2_PIDF" ] && kill -0 "$(cat "$CTRD2_PIDF")" 2>/dev/null; then
  say "containerd 2.3.4 is already running (pid $(cat "$CTRD2_PIDF")): stop it first ($SHARED/critest-lab/start-containerd2.sh stop)"
  exit 1
fi
if [ -S "$WORK/berth/berth.sock" ] && "$CRICTL" -r "unix://$WORK/berth/berth.sock" -t 2s version >/dev/null 2>&1; then
  say "a Berth daemon still serves $WORK/berth/berth.sock: stop it first"; exit 1
fi

NODE_PID=
ENDPOINT=
trap 'node_lab_cleanup 0 1' EXIT

# Polls an agent's /pods every 0.5 s for the window, moves the manifests out,
# waits for /pods to be empty and for the runtime to have no running
# container, and writes what it saw as JSON.
#   observe PIDFILE URL MANIFEST_DIR OUT_DIR EVENTS(url|log:FILE)
observe() {
  python3 - "$@" "$WINDOW" "$NODE_NAME" "$CRICTL" "$ENDPOINT" "$MARKS/prestop-web" <<'PY'
import json, os, subprocess, sys, time, urllib.request

pidfile, url, mdir, out, events_src, window, node, crictl, endpoint, mark = sys.argv[1:]
window = float(window)
TICK = 0.5
HZ = os.sysconf("SC_CLK_TCK")

def agent_pid():
    # the process named in the pid file, or its child if that is a wrapper
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            pid = int(open(pidfile).read().split()[0])
            comm = open(f"/proc/{pid}/comm").read().strip()
        except (OSError, ValueError, IndexError):
            time.sleep(0.05)
            continue
        if comm in ("kubelet", "berth"):
            return pid
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    st = open(f"/proc/{p}/stat").read()
                    if int(st.rsplit(")", 1)[1].split()[1]) == pid:
                        return int(p)
                except (OSError, ValueError):
                    pass
        time.sleep(0.05)
    sys.exit("no agent process in %s" % pidfile)

def proc_stat(pid):
    st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return st

def start_time(pid):
    btime = next(int(l.split()[1]) for l in open("/proc/stat") if l.startswith("btime "))
    return btime + int(proc_stat(pid)[19]) / HZ

def usage(pid):
    try:
        st = proc_stat(pid)
        hwm = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM:"))
        return {"cpu_s": (int(st[11]) + int(st[12])) / HZ, "vmhwm_kib": hwm}
    except (OSError, StopIteration, ValueError, IndexError):
        return None

def get(u, timeout=2.0):
    try:
        with urllib.request.urlopen(u, timeout=timeout) as r:
            return r.read()
    except Exception:
        return None

def pods():
    body = get(url)
    if body is None:
        return None
    try:
        return json.loads(body).get("items") or []
    except ValueError:
        return None

def pod_key(p):
    md = p.get("metadata", {})
    name = md.get("name", "?")
    if name.endswith("-" + node):
        name = name[: -len(node) - 1]
    ns = md.get("namespace", "default")
    return name if ns == "default" else f"{ns}/{name}"

def state_str(s):
    s = s or {}
    if "running" in s:
        return "running"
    if "terminated" in s:
        t = s["terminated"] or {}
        return "terminated:%s(%s)" % (t.get("reason", ""), t.get("exitCode", "?"))
    if "waiting" in s:
        return "waiting:%s" % ((s["waiting"] or {}).get("reason", ""))
    return "-"

def containers(p):
    st = p.get("status") or {}
    return [("init", c) for c in st.get("initContainerStatuses") or []] + \
           [("main", c) for c in st.get("containerStatuses") or []]

def summary(items):
    res = {}
    for p in items or []:
        st = p.get("status") or {}
        res[pod_key(p)] = {
            "uid": p.get("metadata", {}).get("uid"),
            "phase": st.get("phase"),
            "conditions": {c["type"]: c["status"] for c in st.get("conditions") or []},
            "containers": [
                {"name": c["name"], "kind": k, "state": state_str(c.get("state")),
                 "last": state_str(c.get("lastState")), "ready": c.get("ready"),
                 "started": c.get("started"), "restarts": c.get("restartCount", 0)}
                for k, c in containers(p)],
        }
    return res

prev = {}
seen = {}
transitions = []
def mark_t(t, key):
    seen[key] = seen.get(key, 0) + 1
    if seen[key] > 1:
        key += " #%d" % seen[key]
    transitions.append((t, key))

def observe(items, t):
    global prev
    now = summary(items)
    for pk, p in now.items():
        before = prev.get(pk)
        if before is None:
            mark_t(t, f"{pk} listed")
        if before is None or before["phase"] != p["phase"]:
            mark_t(t, f"{pk} phase {p['phase']}")
        for ct, cs in sorted(p["conditions"].items()):
            if before is None or before["conditions"].get(ct) != cs:
                mark_t(t, f"{pk} cond {ct}={cs}")
        old = {c["name"]: c for c in (before or {}).get("containers", [])}
        for c in p["containers"]:
            o = old.get(c["name"])
            ck = f"{pk}/{c['name']}"
            if o is None or o["state"] != c["state"]:
                mark_t(t, f"{ck} {c['state']}")
            for n in range((o or {}).get("restarts", 0) + 1, c["restarts"] + 1):
                mark_t(t, f"{ck} restart {n}")
            if (o is None and c["ready"]) or (o is not None and o["ready"] != c["ready"]):
                mark_t(t, f"{ck} ready {str(bool(c['ready'])).lower()}")
    for pk in prev:
        if pk not in now:
            mark_t(t, f"{pk} gone")
    prev = now

def running_containers():
    try:
        r = subprocess.run([crictl, "-r", endpoint, "-t", "5s", "ps", "-q"], capture_output=True, text=True, timeout=10)
        return len(r.stdout.split()) if r.returncode == 0 else None
    except Exception:
        return None

pid = agent_pid()
t0 = start_time(pid)
polls = failed = 0
last_items = None
next_t = time.time()
while True:
    t = time.time()
    if t >= t0 + window:
        break
    items = pods()
    polls += 1
    if items is None:
        failed += 1
    else:
        if last_items is None:
            mark_t(t, "/pods first answered")
        observe(items, t)
        last_items = items
    next_t += TICK
    time.sleep(max(0.0, next_t - time.time()))

at_window = usage(pid)
final = summary(last_items)
# the web container's hostPort, through the node's loopback address
hostport = get("http://127.0.0.1:18080/index.html", timeout=2)
hostport = hostport.decode(errors="replace").strip() if hostport is not None else None

# Deletion: the manifests move out of the agent's directory.
removed_dir = os.path.join(out, "removed")
os.makedirs(removed_dir, exist_ok=True)
t_removed = time.time()
for f in sorted(os.listdir(mdir)):
    if not f.startswith("."):
        os.rename(os.path.join(mdir, f), os.path.join(removed_dir, f))
mark_t(t_removed, "manifest removed")
deleted = stopped = None
deadline = t_removed + 30
while time.time() < deadline and (deleted is None or stopped is None):
    t = time.time()
    items = pods()
    if items is not None:
        observe(items, t)
        if deleted is None and not items:
            deleted = t
            mark_t(t, "deleted (/pods empty)")
    if stopped is None and running_containers() == 0:
        stopped = t
        mark_t(t, "runtime: no running container")
    time.sleep(max(0.0, TICK - (time.time() - t)))
at_end = usage(pid)

events = []
if events_src.startswith("log:"):
    events = {"log": events_src[4:]}
else:
    body = get(events_src, timeout=5)
    try:
        events = json.loads(body) if body is not None else []
    except ValueError:
        events = []
try:
    prestop = open(mark).read().strip()
except OSError:
    prestop = None
try:
    sandboxes = subprocess.run([crictl, "-r", endpoint, "-t", "5s", "pods", "-q"], capture_output=True, text=True, timeout=10).stdout.split()
    all_containers = subprocess.run([crictl, "-r", endpoint, "-t", "5s", "ps", "-a", "-q"], capture_output=True, text=True, timeout=10).stdout.split()
    left = {"sandboxes": len(sandboxes), "containers": len(all_containers)}
except Exception:
    left = None

json.dump({
    "t0": t0, "window": window, "polls": polls, "failed_polls": failed,
    "transitions": [(round(t - t0, 2), k) for t, k in transitions],
    "final": final, "hostport": hostport, "prestop": prestop,
    "removed": round(t_removed - t0, 2),
    "deleted": round(deleted - t0, 2) if deleted else None,
    "stopped": round(stopped - t0, 2) if stopped else None,
    "left_in_runtime": left,
    "usage_window": at_window, "usage_end": at_end, "events": events,
}, open(os.path.join(out, "observed.json"), "w"), indent=1)
PY
}

# One run: a clean runtime, the agent on the manifests, observe, clean up.
run_one() {
  local run=$1 agent=${1%@*} out=$WORK/runs/$1 obs
  rm -rf "$out"
  mkdir -p "$out" "$MARKS"
  rm -f "$MARKS"/*
  # Pod logs of an earlier run: the kubelet counts restarts from the log
  # files of a pod it finds no container of (and the static pod's uid is the
  # same in every run), and `run-kubelet.sh stop` removes only the logs of
  # pods whose directory is still there (gone once a deleted pod is cleaned).
  rm -rf "${KDIR:?}"/logs/* "${NODE_DIR:?}"/logs/*
  find /var/log/containers -maxdepth 1 \( -lname "$KDIR/logs/*" -o -lname "$NODE_DIR/logs/*" \) -delete 2>/dev/null || true
  if [ "${run#*@}" = containerd ]; then PEER=1; else PEER=0; fresh_berth_dirs; fi
  start_runtime >/dev/null
  # nothing from an earlier run may be adopted (or killed) by this agent
  "$CRICTL" -r "$ENDPOINT" -t 60s rmp -a -f >/dev/null 2>&1 || true
  prepull
  say "$run: $agent on $NAME ($ENDPOINT), window ${WINDOW}s"
  if [ "$agent" = kubelet ]; then
    bash "$RUN_KUBELET" stop >/dev/null 2>&1 || true
    rm -f "$KDIR/kubelet.log" "$KDIR/kubelet.pid"
    mkdir -p "$KDIR/manifests"
    rm -f "$KDIR"/manifests/*
    place_all
    observe "$KDIR/kubelet.pid" http://127.0.0.1:10255/pods "$KDIR/manifests" "$out" "log:$out/agent.log" &
    obs=$!
    bash "$RUN_KUBELET" "$ENDPOINT" >/dev/null || say "$run: the kubelet did not start (log $KDIR/kubelet.log)"
  else
    observe "$NODE_DIR/node.pid" "http://127.0.0.1:$NODE_PORT/pods" "$NODE_DIR/manifests" "$out" "http://127.0.0.1:$NODE_PORT/events" &
    obs=$!
    start_node
  fi
  wait "$obs" || say "$run: the observer failed"
  if [ "$agent" = kubelet ]; then
    bash "$RUN_KUBELET" stop >/dev/null 2>&1 || true
    cp "$KDIR/kubelet.log" "$out/agent.log" 2>/dev/null || true
  else
    stop_node
    cp "$NODE_DIR/node.log" "$out/agent.log"
  fi
  "$CRICTL" -r "$ENDPOINT" -t 60s rmp -a -f >/dev/null 2>&1 || true
  stop_runtime
  host_cleanup
  ENDPOINT=
  DAEMON_PID=
  say "$run: done ($out)"
}

mkdir -p "$WORK/runs"
echo "manifests $MANIFESTS, window ${WINDOW}s, berth $(date -r "$BERTH_BIN" '+%F %T') ($("$BERTH_BIN" --version 2>/dev/null || true)), $(/var/tmp/kubelet-lab/bin/kubelet --version)" > "$WORK/runs/info"
for r in ${RUNS//,/ }; do run_one "$r"; done
report
