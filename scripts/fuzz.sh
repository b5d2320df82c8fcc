#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time from the committed seed corpus.
# Usage: scripts/fuzz.sh [seconds-per-target (default 60)] [target ...]   (default: all)
# Needs cargo-fuzz (cargo install cargo-fuzz --locked) and a nightly toolchain (its sanitizer
# flags are nightly-only): `cargo +nightly fuzz`, or FUZZ_TOOLCHAIN=NAME for another one.
# The working corpus is fuzz/corpus/<target> (git-ignored, seeded from fuzz/seeds/<target>);
# crashes land in fuzz/artifacts/<target>/. Exits non-zero if any target crashed.
set -uo pipefail
cd "$(dirname "$0")/../fuzz"
SECS="${1:-60}"
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(gguf safetensors manifest request chat_template detokenize stop_matcher)
fi
CARGO=(cargo "+${FUZZ_TOOLCHAIN:-nightly}" fuzz)
rustc "+${FUZZ_TOOLCHAIN:-nightly}" --version >/dev/null 2>&1 \
  || { echo "fuzz: no ${FUZZ_TOOLCHAIN:-nightly} toolchain (rustup toolchain install nightly)" >&2; exit 2; }
command -v cargo-fuzz >/dev/null || { echo "fuzz: cargo-fuzz missing: cargo install cargo-fuzz --locked" >&2; exit 2; }

echo "== fuzz: build"
"${CARGO[@]}" build || { echo "fuzz: build failed" >&2; exit 2; }

LOGS="$(mktemp -d)"
trap 'rm -rf "$LOGS"' EXIT
failed=0
summary=()
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  cp -n "seeds/$t/"* "corpus/$t/" 2>/dev/null || true
  echo "== fuzz: $t (${SECS}s)"
  "${CARGO[@]}" run "$t" "corpus/$t" -- \
    -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    >"$LOGS/$t.log" 2>&1
  rc=$?
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$LOGS/$t.log" | tail -1 | grep -o '[0-9]*$')"
  cov="$(grep -o 'cov: [0-9]*' "$LOGS/$t.log" | tail -1 | grep -o '[0-9]*$')"
  if [ $rc -eq 0 ]; then
    status=ok
  else
    status="CRASH (rc $rc)"
    failed=1
    # The crash report: the panic message / sanitizer report and the reproducer.
    grep -E "panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|SUMMARY|Test unit written|^thread '" \
      "$LOGS/$t.log" | head -20 >&2
    cp "$LOGS/$t.log" "artifacts/$t/fuzz.log"
  fi
  line="$(printf 'fuzz: %-14s %-16s %12s execs in %ss, coverage %s, corpus %s' \
    "$t" "$status" "${execs:-?}" "$SECS" "${cov:-?}" "$(ls "corpus/$t" | wc -l)")"
  echo "$line"
  summary+=("$line")
done
echo "== fuzz: summary"
printf '%s\n' "${summary[@]}"
if [ $failed -ne 0 ]; then
  echo "fuzz: a target crashed; the reproducers and logs are in fuzz/artifacts/<target>/" >&2
  echo "  replay one with: (cd fuzz && cargo +nightly fuzz run <target> artifacts/<target>/<file>)" >&2
fi
exit $failed
