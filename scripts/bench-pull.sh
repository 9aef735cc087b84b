#!/usr/bin/env bash
# Pull benchmark, Berth against the critest-lab containerd (if it runs):
#   scripts/bench-pull.sh [--runs N] [--size-mb M] [--peer unix:///path.sock]
# Start the peer with ../shared/critest-lab/start-containerd.sh; without it,
# Berth alone is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin berth --example bench-pull
exec target/release/examples/bench-pull --berth target/release/berth "$@"
