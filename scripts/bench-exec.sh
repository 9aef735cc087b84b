#!/usr/bin/env bash
# Streaming exec benchmark, Berth against containerd 2.3.4: `exec true`
# round trip through the Exec URL and the stdout throughput of one exec,
# the runtimes alternated round by round:
#   scripts/bench-exec.sh [--no-peer]
exec "$(dirname "$0")/bench-runtimes.sh" bench-exec "$@"
