#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for FUZZ_SECONDS each (default 60):
# first the saved crashes of fuzz/regressions/<target>/ (each must pass
# now), then new inputs. A crash fails the run; libFuzzer leaves the input
# in fuzz/artifacts/<target>/: fix the bug and move it to
# fuzz/regressions/<target>/. Needs cargo-fuzz (installed from crates.io
# when missing) and a nightly toolchain, or stable with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
if rustup run nightly rustc --version >/dev/null 2>&1; then
  fuzz() { cargo +nightly fuzz "$@"; }
else
  echo "fuzz.sh: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1"
  fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; }
fi
# Layer seeds: small real tar streams (files, links, whiteouts, a link that
# climbs out), uncompressed (first byte 0), so that the fuzzer starts from
# headers the applier accepts rather than from random bytes.
if [ -z "$(ls -A fuzz/corpus/layer 2>/dev/null)" ]; then
  mkdir -p fuzz/corpus/layer
  seed=$(mktemp -d)
  mkdir -p "$seed/d/sub" && echo hi > "$seed/d/f" && ln -s ../../etc "$seed/d/up"
  ln "$seed/d/f" "$seed/d/hard" && touch "$seed/d/.wh.gone" "$seed/d/sub/.wh..wh..opq"
  for parts in d d/f d/up d/hard "d/.wh.gone d/sub"; do
    # shellcheck disable=SC2086
    { printf '\0'; tar -C "$seed" -cf - $parts; } > "fuzz/corpus/layer/seed-$(echo "$parts" | tr ' /.' '___')"
  done
  rm -rf "$seed"
fi
for t in $(fuzz list); do
  if [ -d "fuzz/regressions/$t" ] && [ -n "$(ls -A "fuzz/regressions/$t")" ]; then
    fuzz run "$t" "fuzz/regressions/$t" -- -runs=0 >/dev/null 2>&1 \
      || { echo "fuzz.sh: a saved crash of $t fails again"; fuzz run "$t" "fuzz/regressions/$t" -- -runs=0; }
  fi
  mkdir -p "fuzz/corpus/$t"
  echo "fuzz.sh: $t for ${SECONDS_EACH}s"
  log=$(mktemp)
  if ! fuzz run "$t" "fuzz/corpus/$t" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=4096 \
      -print_final_stats=1 > "$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz.sh: $t crashed; see fuzz/artifacts/$t"
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|new_units_added)' "$log" | tr '\n' ' '; echo
  rm -f "$log"
done
echo "fuzz.sh: every target ran ${SECONDS_EACH}s without a crash"
