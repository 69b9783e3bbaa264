#!/usr/bin/env bash
# The profile-guided release build (docs/perf.md, "Profile-guided build").
#
# 1. Builds engine-bench and exec-bench instrumented (-Cprofile-generate).
# 2. Trains them: the exchange-core mix with another seed than issue 16's reported runs at
#    10,000 and 1,000,000 resting orders, a run committing the state root every 500
#    commands at 3,000, the LOBSTER day if its folder is there, and exec-bench's signed
#    blocks (the node's own path through `execution`; exec-bench's reported figures are
#    therefore not independent of the profile).
# 3. Merges the profiles with llvm-profdata (rustup's llvm-tools, installed if missing: it
#    must match rustc's LLVM).
# 4. Builds every binary of the workspace with the profile (-Cprofile-use).
#
# The binaries end up in target/pgo/use/release/ (nexus, nexus-evm, engine-bench, ...).
# The flags go through `cargo --config`, added to the workspace's own (.cargo/config.toml);
# a RUSTFLAGS environment variable would replace both, so it must not be set.
# Takes ~15 minutes on a 2-core machine (two release builds).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${RUSTFLAGS:-}" ]; then
    echo "pgo-build: unset RUSTFLAGS first (it would replace the workspace's rustflags)" >&2
    exit 1
fi
root="$PWD/target/pgo"
raw="$root/raw"
triple=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$triple/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
    if ! command -v rustup >/dev/null; then
        echo "pgo-build: needs $profdata: rustup's llvm-tools component (no rustup here)" >&2
        exit 1
    fi
    rustup component add llvm-tools
fi

echo "== 1. instrumented build (target/pgo/gen)"
cargo build --release -p perf --bin engine-bench --bin exec-bench --target-dir "$root/gen" \
    --config "target.$triple.rustflags = ['-Cprofile-generate=$raw']"
# Build scripts ran instrumented too: only the training runs below count.
rm -rf "$raw"

echo "== 2. training runs"
gen="$root/gen/release"
"$gen/engine-bench" --orders 10000,1000000 --ops 2000000 --seed 7 --peer-orders 0 >/dev/null
"$gen/engine-bench" --orders 3000 --ops 1000000 --seed 9 --commit-every 500 \
    --peer-orders 0 >/dev/null
lobster="${NEXUS_LOBSTER_DIR:-$PWD/../shared/data/lobster}"
if [ -d "$lobster" ]; then
    "$gen/engine-bench" --lobster --lobster-dir "$lobster" --reps 1 >/dev/null
else
    echo "pgo-build: no LOBSTER folder at $lobster: trained without the real day"
fi
"$gen/exec-bench" --items 500 --blocks 4 >/dev/null

echo "== 3. merge"
"$profdata" merge --sparse -o "$root/merged.profdata" "$raw"
# Named by its content: cargo does not look into the file, but a new name changes the
# rustflags, so a new profile rebuilds everything with it.
profile="$root/profile-$(sha256sum "$root/merged.profdata" | cut -c1-16).profdata"
rm -f "$root"/profile-*.profdata
mv "$root/merged.profdata" "$profile"
echo "$profile"

echo "== 4. optimized build (target/pgo/use)"
cargo build --release --workspace --bins --target-dir "$root/use" \
    --config "target.$triple.rustflags = ['-Cprofile-use=$profile']"
echo "pgo-build: binaries in target/pgo/use/release/"
