#!/usr/bin/env bash
# Interleaved A/B of two `gpt` example binaries (say, before and after a change): ROUNDS
# rounds, each running both with `gpt bench --config CONFIG --steps STEPS`, A first in
# odd rounds and B first in even ones; prints each side's round medians, their median,
# B/A of those medians, and the median of each round's B/A. Interleaving puts both
# sides in the same phases of a noisy machine; alternating which runs first cancels the
# advantage of running second (on the 2-core Xeon, tiny 2000 10 with A first every
# round: old/new 0.961, new/old 0.972, a binary against its copy 0.992).
#   bash examples/gpt/ab.sh OLD/gpt NEW/gpt small 10 8 [more gpt bench options]
set -euo pipefail
[ $# -ge 5 ] || { echo "usage: ab.sh BIN_A BIN_B CONFIG STEPS ROUNDS [gpt bench options]" >&2; exit 2; }
A=$1; B=$2; C=$3; S=$4; R=$5; shift 5
for round in $(seq 1 "$R"); do
  order="A B"
  [ $((round % 2)) -eq 0 ] && order="B A"
  for side in $order; do
    bin=${!side}
    m=$("$bin" bench --config "$C" --steps "$S" "$@" 2>&1 | grep -o 'median_ms=[0-9.]*' | cut -d= -f2)
    echo "$round $side $m"
  done
done | awk '
  function median(x, m,    i, j, y) {
    for (i = 2; i <= m; i++) { y = x[i]; j = i - 1; while (j > 0 && x[j] > y) { x[j + 1] = x[j]; j-- } x[j + 1] = y }
    return (m % 2) ? x[(m + 1) / 2] : (x[m / 2] + x[m / 2 + 1]) / 2
  }
  { v[$2, ++n[$2]] = $3; line[$2] = line[$2] " " $3; t[$1, $2] = $3; rounds = $1 }
  END {
    for (s = 1; s <= 2; s++) {
      k = (s == 1) ? "A" : "B"; m = n[k]
      for (i = 1; i <= m; i++) x[i] = v[k, i]
      med[k] = median(x, m)
      printf "%s median %.3f min %.3f rounds:%s\n", k, med[k], x[1], line[k]
    }
    for (r = 1; r <= rounds; r++) q[r] = t[r, "B"] / t[r, "A"]
    printf "B/A = %.3f (median of the rounds%s B/A: %.3f)\n", med["B"] / med["A"], "\047", median(q, rounds)
  }'
