#!/usr/bin/env bash
# Builds every fuzz target, replays the committed regression inputs, then fuzzes each target for
# FUZZ_SECONDS (default 10) starting from fuzz/seeds/<target>. Exits non-zero if any target
# crashes (panic, assertion, timeout, OOM); crashing inputs are left in fuzz/artifacts/<target>/.
#
# Stable toolchain: cargo-fuzz passes nightly-only flags, so RUSTC_BOOTSTRAP=1 is set. The library
# has no unsafe code, so the sanitizer is off (-s none, ~2x more execs); -a keeps debug assertions
# and overflow checks on.
set -uo pipefail
start=$(date +%s)
cd "$(dirname "$0")"
secs=${FUZZ_SECONDS:-10}
export RUSTC_BOOTSTRAP=1
flags=(-O -a -s none)

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked || exit 1
fi
cargo fuzz build "${flags[@]}" || exit 1

failed=()
for t in $(cargo fuzz list); do
    if [ -d "regressions/$t" ] && [ -n "$(ls -A "regressions/$t")" ]; then
        echo "== $t: replaying regressions/$t"
        if ! cargo fuzz run "${flags[@]}" "$t" regressions/"$t"/* >"/tmp/fuzz-ci-$t-regress.log" 2>&1; then
            tail -n 40 "/tmp/fuzz-ci-$t-regress.log"
            failed+=("$t(regression)")
        fi
    fi
    echo "== $t: fuzzing ${secs}s"
    mkdir -p "corpus/$t"
    log="/tmp/fuzz-ci-$t.log"
    if cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "   ok: ${execs:-?} execs, corpus $(ls "corpus/$t" | wc -l) files"
    else
        grep -A 20 -m 1 "panicked\|ERROR: libFuzzer" "$log" || tail -n 40 "$log"
        failed+=("$t")
    fi
done

echo "fuzz/ci.sh total time: $(( $(date +%s) - start ))s"
if [ ${#failed[@]} -gt 0 ]; then
    echo "CRASHED: ${failed[*]}"
    exit 1
fi
echo "all fuzz targets clean"
