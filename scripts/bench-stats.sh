#!/usr/bin/env bash
# Stats benchmark, Berth against containerd 2.3.4: ListContainerStats and
# ListPodSandboxStats latency with 100 running containers in 25 pods on
# each, the runtimes alternated round by round:
#   scripts/bench-stats.sh [--no-peer]
exec "$(dirname "$0")/bench-runtimes.sh" bench-stats "$@"
