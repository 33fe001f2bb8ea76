#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (or those named) for FUZZ_SECONDS each (default 600) and
# prints, per target, the executions, the coverage libFuzzer reached (cov = edges, ft =
# features, from its final status line) and the findings (crash, timeout, OOM inputs).
#
#   bench/fuzz.sh                      # every target, 10 minutes each
#   FUZZ_SECONDS=60 bench/fuzz.sh      # a shorter run
#   bench/fuzz.sh envelope tokens      # some targets
#
# Each target starts from its committed seeds (fuzz/corpus/<target>, read only) plus what
# earlier runs found (fuzz/work/<target>, git-ignored, grows); a finding is saved as
# fuzz/artifacts/<target>/<kind>-<hash>, and the run of that target stops there. Replay one
# with `RUSTC_BOOTSTRAP=1 cargo fuzz run -s none <target> <file>`. Exit status 1 when anything
# was found.
#
# Settings: FUZZ_SECONDS, FUZZ_TIMEOUT (seconds one input may take, default 10),
# FUZZ_RSS_MB (memory limit, default 2048), FUZZ_SANITIZER (none|address, default none: the
# project has no unsafe code; `address` also checks the C and assembly of dependencies),
# FUZZ_TARGET_DIR (where the instrumented build goes; default cargo's). Needs cargo-fuzz
# (`cargo install cargo-fuzz --locked`); RUSTC_BOOTSTRAP=1 is set so it works on stable.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs="${FUZZ_SECONDS:-600}"
timeout="${FUZZ_TIMEOUT:-10}"
rss="${FUZZ_RSS_MB:-2048}"
sanitizer="${FUZZ_SANITIZER:-none}"
export RUSTC_BOOTSTRAP=1
if [ -n "${FUZZ_TARGET_DIR:-}" ]; then export CARGO_TARGET_DIR="$FUZZ_TARGET_DIR"; fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
  exit 2
fi
case "$secs" in '' | *[!0-9]*) echo "FUZZ_SECONDS must be a whole number of seconds" >&2; exit 2 ;; esac

if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi

start=$SECONDS
# `cargo fuzz build <t>` takes one target; build all at once unless a list was given.
if [ $# -eq 0 ]; then
  cargo fuzz build -s "$sanitizer" >&2
else
  for t in "${targets[@]}"; do cargo fuzz build -s "$sanitizer" "$t" >&2; done
fi
echo "built ${#targets[@]} targets in $((SECONDS - start)) s" >&2

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
found=0
rows=()
for t in "${targets[@]}"; do
  mkdir -p "work/$t" "artifacts/$t" "corpus/$t"
  find "artifacts/$t" -type f | sort >"$logs/$t.before"
  echo "== $t (${secs} s)" >&2
  rc=0
  cargo fuzz run -s "$sanitizer" "$t" "work/$t" "corpus/$t" -- \
    -max_total_time="$secs" -timeout="$timeout" -rss_limit_mb="$rss" \
    -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"$logs/$t" 2>&1 || rc=$?
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t" | tail -n 1)"
  last="$(grep -E '^#[0-9]+' "$logs/$t" | tail -n 1 || true)"
  cov="$(sed -n 's/.* cov: \([0-9]*\) .*/\1/p' <<<"$last")"
  ft="$(sed -n 's/.* ft: \([0-9]*\) .*/\1/p' <<<"$last")"
  corp="$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")"
  [ -n "$execs" ] || execs="$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$last")"
  find "artifacts/$t" -type f | sort | comm -13 "$logs/$t.before" - >"$logs/$t.new"
  findings="$(wc -l <"$logs/$t.new")"
  if [ "$rc" -ne 0 ] && [ "$findings" -eq 0 ]; then
    # A failure that left no input behind (the build or the harness itself): show it.
    echo "$t: cargo fuzz exited with $rc and saved no input; its output ends with:" >&2
    tail -n 30 "$logs/$t" >&2
    findings=1
  fi
  if [ "$findings" -gt 0 ]; then
    found=1
    grep -E '^(==[0-9]+== ?ERROR|thread .* panicked|SUMMARY)' "$logs/$t" | head -n 6 >&2 || true
    grep -A3 -E '^thread .* panicked' "$logs/$t" | head -n 8 >&2 || true
    sed 's|^|  finding: fuzz/|' "$logs/$t.new" >&2
  fi
  rows+=("$(printf '%-12s %12s %7s %7s %7s %9s' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$findings")")
done

echo
printf '%-12s %12s %7s %7s %7s %9s\n' target executions cov ft corpus findings
printf '%s\n' "${rows[@]}"
echo "total time: $((SECONDS - start)) s (${secs} s per target)"
if [ "$found" -ne 0 ]; then
  echo "FINDINGS: see fuzz/artifacts/<target>/" >&2
  exit 1
fi
