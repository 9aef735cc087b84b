# Shared by kubelet-e2e.sh and bench-kubelet.sh (sourced): the lab's
# kubelet, crictl and registry, and a private Berth daemon or containerd
# 2.3.4 for it to run against. Expects ROOT, SHARED, LAB, WORK, PEER and a
# `say` function. The berth node and clean-up functions at the end (shared by
# node-compare.sh and bench-node.sh) also use MANIFESTS (the manifests to
# run), NODE_DIR, NODE_NAME, NODE_PORT, NODE_PID and BERTH_BIN.
export KDIR=$WORK/kubelet
export CRICTL=${CRICTL:-$LAB/bin/crictl}
RUN_KUBELET=$SHARED/kubelet-lab/run-kubelet.sh
[ -x /var/tmp/kubelet-lab/bin/kubelet ] || { say "no kubelet: run $SHARED/kubelet-lab/build-kubelet.sh"; exit 1; }
[ -x "$CRICTL" ] || { say "no crictl at $CRICTL: run $SHARED/critest-lab/build-peers.sh"; exit 1; }
curl -fsS http://127.0.0.1:5000/v2/ >/dev/null || { say "no lab registry: run $SHARED/critest-lab/start-registry.sh and make-images.sh"; exit 1; }

DAEMON_PID=
start_berth() {
  local bin=${BERTH_BIN:-}
  if [ -z "$bin" ]; then
    cargo build --release --locked --bin berth >/dev/null
    bin=$ROOT/target/release/berth
  fi
  local d=$WORK/berth
  mkdir -p "$d/cni"
  # The same chain, with the same options, as the lab's containerd 2.3.4
  # (write_cni_conf in critest-lab/env.sh): only the names, bridge and subnet
  # differ. same_cni_chain checks that before a comparison.
  cat > "$d/cni/10-kubelet-e2e.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "berth-kubelet-e2e", "plugins": [
  {"type": "bridge", "bridge": "berthk0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.218.0.0/16"}]], "dataDir": "$d/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
  local mirror='mirrors = ["http://127.0.0.1:5000"]
upstream = false'
  {
    echo "root = \"$d/root\""
    echo "state = \"$d/state\""
    echo "listen = \"unix://$d/berth.sock\""
    [ -n "${BERTH_RECORD:-}" ] && echo "record_requests = \"$BERTH_RECORD\""
    echo "[cni]"
    echo "conf_dir = \"$d/cni\""
    for r in docker.io registry.k8s.io k8s.gcr.io gcr.io quay.io public.ecr.aws; do
      printf '[registry."%s"]\n%s\n' "$r" "$mirror"
    done
  } > "$d/config.toml"
  bin_used=$bin
  "$bin" daemon --config "$d/config.toml" > "$d/daemon.log" 2>&1 &
  DAEMON_PID=$!
  for _ in $(seq 1 100); do [ -S "$d/berth.sock" ] && break; sleep 0.1; done
  ENDPOINT=unix://$d/berth.sock
  say "Berth daemon pid $DAEMON_PID on $ENDPOINT (log $d/daemon.log)"
}

stop_runtime() {
  if [ "$PEER" = 1 ]; then
    bash "$SHARED/critest-lab/start-containerd2.sh" stop >/dev/null 2>&1 || true
  elif [ -n "$DAEMON_PID" ]; then
    kill "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
    ip link del berthk0 2>/dev/null || true
  fi
}

# Fails unless Berth's CNI chain and the lab containerd's run the same
# plugins with the same options (names, bridges, subnets and IPAM
# directories aside): a comparison of pod start-up is otherwise one of
# network setups. (The bridge plugin's ipMasq alone, iptables run for each
# pod, was 0.15 s of 10 pods' start-up on Berth and 0.8 s of 30 pods'.)
same_cni_chain() {
  python3 - "$WORK/berth/cni/10-kubelet-e2e.conflist" "$LAB/containerd2/cni/net.d/10-crilab2.conflist" <<'PY'
import json, sys
def chain(path):
    with open(path) as f:
        plugins = json.load(f)["plugins"]
    for p in plugins:
        p.pop("bridge", None)
        p.get("ipam", {}).pop("ranges", None)
        p.get("ipam", {}).pop("dataDir", None)
    return plugins
a, b = chain(sys.argv[1]), chain(sys.argv[2])
if a != b:
    sys.exit(f"the CNI chains differ:\n  Berth:      {a}\n  containerd: {b}")
PY
}

# Starts the runtime under test (PEER=1: containerd 2.3.4); sets ENDPOINT and NAME.
start_runtime() {
  if [ "$PEER" = 1 ]; then
    bash "$SHARED/critest-lab/start-containerd2.sh" >/dev/null
    [ ! -f "$WORK/berth/cni/10-kubelet-e2e.conflist" ] || same_cni_chain || exit 1
    ENDPOINT=unix://$LAB/containerd2/run/containerd.sock
    NAME="containerd 2.3.4"
  else
    start_berth
    NAME=Berth
  fi
}

# The kubelet's read-only /pods.
pods_json() { curl -s -m 5 http://127.0.0.1:10255/pods; }

# Copies a manifest into the kubelet's directory under a dot-name first (the
# kubelet ignores those) and renames it into place.
place_manifest() {
  cp "$1" "$KDIR/manifests/.${2:-$(basename "$1")}"
  mv "$KDIR/manifests/.${2:-$(basename "$1")}" "$KDIR/manifests/${2:-$(basename "$1")}"
}

# ---- berth node beside the kubelet (node-compare.sh, bench-node.sh) ----

# Once the runtime is stopped: run-kubelet.sh's `stop` again for both agents'
# directories, without an endpoint (no runtime to ask), for what the runtime
# still held at the agent's stop: mounts under the root dir, pod logs and the
# QoS cgroups (kubepods/...) that became empty only then.
host_cleanup() {
  rm -f "$KDIR/endpoint" "$NODE_DIR/endpoint"
  bash "$RUN_KUBELET" stop >/dev/null 2>&1 || true
  KDIR=$NODE_DIR bash "$RUN_KUBELET" stop >/dev/null 2>&1 || true
}

# A private Berth daemon with nothing from an earlier run: its root and state
# are removed first (the daemon would recover their pods).
fresh_berth_dirs() {
  local m
  awk -v d="$WORK/berth/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  rm -rf "$WORK/berth"
}

# The images of the manifests (and containerd's sandbox image), pulled before
# the agent starts so that no run's timeline includes a pull.
prepull() {
  local img
  for img in $(cat "$MANIFESTS"/*.yaml "$MANIFESTS"/*.yml "$MANIFESTS"/*.json 2>/dev/null \
      | sed -nE 's/^[[:space:]-]*"?image"?:[[:space:]]*"?([^",[:space:]]+)"?.*/\1/p' | sort -u) \
      $([ "$PEER" = 1 ] && echo registry.k8s.io/pause:3.10); do
    "$CRICTL" -r "$ENDPOINT" -t 2m pull "$img" >/dev/null || say "pull of $img failed"
  done
}

place_all() {
  local f
  for f in "$MANIFESTS"/*.yaml "$MANIFESTS"/*.yml "$MANIFESTS"/*.json; do
    [ -f "$f" ] && place_manifest "$f"
  done
  return 0
}

start_node() {
  rm -rf "$NODE_DIR/manifests"
  mkdir -p "$NODE_DIR/manifests" "$NODE_DIR/root" "$NODE_DIR/logs"
  KDIR=$NODE_DIR place_all
  # what run-kubelet.sh's `stop` reads to remove the pods of this root dir
  echo "$ENDPOINT" > "$NODE_DIR/endpoint"
  "$BERTH_BIN" node --manifests "$NODE_DIR/manifests" --runtime-endpoint "$ENDPOINT" \
    --root-dir "$NODE_DIR/root" --pod-logs-dir "$NODE_DIR/logs" \
    --hostname-override "$NODE_NAME" --address "127.0.0.1:$NODE_PORT" > "$NODE_DIR/node.log" 2>&1 &
  NODE_PID=$!
  echo "$NODE_PID" > "$NODE_DIR/.node.pid"
  mv "$NODE_DIR/.node.pid" "$NODE_DIR/node.pid"
}

# Stops berth node (it leaves its pods to be adopted at its next start), then
# lets run-kubelet.sh's `stop` clean after it as after a kubelet: its root dir
# has the kubelet's layout (pods/<uid>), so that removes the pods it created
# from the runtime, their volumes' mounts, pod logs and empty QoS cgroups.
stop_node() {
  kill "$NODE_PID" 2>/dev/null || true
  for _ in $(seq 1 75); do kill -0 "$NODE_PID" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$NODE_PID" 2>/dev/null; then say "berth node $NODE_PID still alive after 15 s: SIGKILL"; kill -9 "$NODE_PID"; fi
  wait "$NODE_PID" 2>/dev/null || true
  NODE_PID=
  rm -f "$NODE_DIR/node.pid"
  KDIR=$NODE_DIR bash "$RUN_KUBELET" stop >/dev/null 2>&1 || true
}

# Waits (polling every 30 s) until nothing else on this machine runs pods or
# could: a kubelet kills every process in the /kubepods cgroups of pods it
# does not know, and tests or another `berth node` would be disturbed by (or
# disturb) a run. Checked: kubelet processes, `berth node` processes other
# than NODE_PID, `cargo test` and test binaries (a program run from a
# target's deps/ directory; rustc merely writing there does not count).
wait_for_quiet() {
  local busy
  while :; do
    busy=$(python3 - "${NODE_PID:-0}" <<'PY'
import os, sys
mine = sys.argv[1]
for p in os.listdir("/proc"):
    if not p.isdigit() or p == mine or int(p) == os.getpid():
        continue
    try:
        argv = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
        comm = open(f"/proc/{p}/comm").read().strip()
    except OSError:
        continue
    argv = [a.decode(errors="replace") for a in argv if a]
    if not argv:
        continue
    prog = os.path.basename(argv[0])
    why = None
    if comm == "kubelet" or prog == "kubelet":
        why = "a kubelet"
    elif prog == "berth" and "node" in argv[1:3] and "status" not in argv:
        why = "a berth node"
    elif prog in ("cargo", "cargo-nextest") and len(argv) > 1 and argv[1] in ("test", "nextest"):
        why = "cargo test"
    elif "/deps/" in argv[0]:
        why = "a test binary"
    if why:
        print(f"{why} (pid {p}: {' '.join(argv)[:120]})")
PY
)
    [ -z "$busy" ] && return 0
    say "waiting (30 s) for: $(echo "$busy" | head -3 | tr '\n' ';')"
    sleep 30
  done
}

# Copies BERTH_BIN to $WORK/bin/berth and points BERTH_BIN at the copy: every
# run of a script uses the same binary even if a build replaces the original
# meanwhile.
pin_berth_bin() {
  [ -x "$BERTH_BIN" ] || { say "no berth binary at $BERTH_BIN (BERTH_BIN=...)"; exit 1; }
  mkdir -p "$WORK/bin"
  cp -f "$BERTH_BIN" "$WORK/bin/berth.new" && mv -f "$WORK/bin/berth.new" "$WORK/bin/berth"
  say "berth binary: $BERTH_BIN ($(date -r "$BERTH_BIN" '+%F %T'))"
  BERTH_BIN=$WORK/bin/berth
}

# Stops what a node script may have left running (on error or ^C): berth
# node, the kubelet, the pods of the runtime at ENDPOINT, the runtimes named
# by the arguments (PEER values: 0 Berth, 1 containerd 2.3.4), and the host's
# leftovers.
node_lab_cleanup() {
  set +e
  if [ -n "$NODE_PID" ]; then stop_node; fi
  bash "$RUN_KUBELET" stop >/dev/null 2>&1
  if [ -n "$ENDPOINT" ]; then "$CRICTL" -r "$ENDPOINT" -t 120s rmp -a -f >/dev/null 2>&1; fi
  local p
  for p in "$@"; do PEER=$p stop_runtime; done
  host_cleanup
}
