#!/usr/bin/env bash
# A/B of a code-generation change in one process (examples/codegen_ab.rs): the GPT's
# generated code at OLD (a git revision) and in the working tree, trained side by side,
# RUNS runs of STEPS steps each; each run prints the median new/old ratio of its steps.
#   bash examples/gpt/codegen_ab.sh OLD CONFIG STEPS [RUNS]
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: codegen_ab.sh OLD_REVISION tiny|small|gpt2 STEPS [RUNS]" >&2; exit 2; }
OLD=$1; CONFIG=$2; STEPS=$3; RUNS=${4:-3}
root=$(git rev-parse --show-toplevel)
out=$root/target/codegen_ab
mkdir -p "$out"
tree=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$tree" >/dev/null 2>&1 || true' EXIT
git -C "$root" worktree add --detach "$tree" "$OLD" >/dev/null
# The old compiler builds in its own target directory, so the two never mix.
(cd "$tree" && CARGO_TARGET_DIR=$root/target/codegen_ab/old-target \
  cargo run -q --release --bin adjoint -- tests/models/gpt.adj --out "$out/old.rs" >/dev/null)
(cd "$root" && cargo run -q --release --bin adjoint -- tests/models/gpt.adj --out "$out/new.rs" >/dev/null)
cargo build -q --release --manifest-path "$root/Cargo.toml" -p adjoint-examples --features codegen-ab --example codegen_ab
for _ in $(seq 1 "$RUNS"); do
  "$root/target/release/examples/codegen_ab" "$CONFIG" "$STEPS"
done
