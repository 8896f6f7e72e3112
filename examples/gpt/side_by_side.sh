#!/usr/bin/env bash
# Side by side in one run: for each config, PyTorch eager (2 threads) and then adjoint's
# `gpt bench` (--split always: the batch as two halves side by side; then --split off:
# the whole batch at once; the default, auto, is one of the two), on the same parameters and batch written by make_case.py.
#   PEERS=/path/to/peers bash examples/gpt/side_by_side.sh tiny small
# PEERS holds the venv of ../shared/peers/SETUP.md (numpy, safetensors, torch).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${PEERS:?set PEERS to the folder holding the peers venv}"
P="$PEERS/venv/bin/python"
S="$(cd ../shared/peers && pwd)"
cases="$(mktemp -d)"
cargo build --release --example gpt >/dev/null
for c in "$@"; do
  steps=20; [ "$c" = gpt2 ] && steps=5
  "$P" "$S/make_case.py" --config "$c" --seed 0 --out "$cases/$c" >/dev/null
  (cd "$S" && "$P" gpt_torch.py --config "$c" --steps "$steps" --threads 2)
  for split in always off; do
    target/release/examples/gpt bench --config "$c" --steps "$steps" --split "$split" \
      --params "$cases/$c/params.safetensors" --batch "$cases/$c/batch.safetensors"
  done
done
rm -rf "$cases"
