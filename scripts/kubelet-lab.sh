# Shared by kubelet-e2e.sh and bench-kubelet.sh (sourced): the lab's
# kubelet, crictl and registry, and a private Berth daemon or containerd
# 2.3.4 for it to run against. Expects ROOT, SHARED, LAB, WORK, PEER and a
# `say` function.
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
  cat > "$d/cni/10-kubelet-e2e.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "berth-kubelet-e2e", "plugins": [
  {"type": "bridge", "bridge": "berthk0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
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

# Starts the runtime under test (PEER=1: containerd 2.3.4); sets ENDPOINT and NAME.
start_runtime() {
  if [ "$PEER" = 1 ]; then
    bash "$SHARED/critest-lab/start-containerd2.sh" >/dev/null
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
