#!/usr/bin/env bash
# Pod/container lifecycle and memory benchmark, Berth against the critest-lab
# containerd (if it runs):
#   scripts/bench-pods.sh [--cycles N] [--pods N] [--peer unix:///path.sock]
# Start the peer with ../shared/critest-lab/start-containerd.sh; without it,
# Berth alone is measured. Needs root (namespaces, cgroups, CNI).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin berth --example bench-pods
exec target/release/examples/bench-pods --berth target/release/berth "$@"
