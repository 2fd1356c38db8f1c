#!/usr/bin/env bash
# Makes the pictures of the README's tour (docs/img/*.png) with the `labtrain` command, one per
# exercise of the lab report, from a service of its own: `labtrain up` on SQLite and the embedded
# Redis in a fresh data folder, stopped at the end. It prints the session as it goes (the README's
# "Tour" shows it), then the pictures of "Plots and live progress". About three minutes on a
# laptop's CPU.
#
#   docs/make_tour.sh                              # port 8765, data in /tmp/tour
#   TOUR_PORT=8790 TOUR_DATA_DIR=/tmp/t docs/make_tour.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${TOUR_PORT:-8765}
DATA=${TOUR_DATA_DIR:-/tmp/tour}
BIN=$PWD/.venv/bin
IMG=docs/img
export LABTRAIN_URL=http://127.0.0.1:$PORT
unset LABTRAIN_API_KEY

# The tour's own service: none of this shell's LABTRAIN_ settings (another database, broker or keys).
rm -rf "$DATA"
mkdir -p "$DATA" "$IMG"
env $(env | grep -o '^LABTRAIN_[A-Z_]*' | sed 's/^/-u /') \
    LABTRAIN_DATA_DIR="$DATA" "$BIN/labtrain" up --port "$PORT" --workers 2 >"$DATA/up.log" 2>&1 &
UP=$!
trap 'kill -INT $UP 2>/dev/null; wait $UP 2>/dev/null || true' EXIT
for _ in $(seq 180); do
    curl -sf "$LABTRAIN_URL/readyz" >/dev/null && break
    kill -0 $UP 2>/dev/null || { cat "$DATA/up.log"; exit 1; }
    sleep 0.5
done
curl -sf "$LABTRAIN_URL/readyz" >/dev/null || { echo "the service did not get ready:"; tail -20 "$DATA/up.log"; exit 1; }

labtrain() {
    echo "\$ labtrain $*" >&2
    "$BIN/labtrain" "$@"
}

# Submitted together: two workers train them side by side.
SPIRALS=$(labtrain submit examples/model22.yaml)
DIGITS=$(labtrain submit docs/tour/digits.yaml)
COLORED=$(labtrain submit docs/tour/colored_digits.yaml)
HOUSES=$(labtrain submit docs/tour/house_prices.yaml)
for id in "$SPIRALS" "$HOUSES" "$DIGITS" "$COLORED"; do
    labtrain watch "$id"
done
labtrain list

labtrain plot "$SPIRALS" decision-boundary --out $IMG/ex1-spirals-decision-boundary.png
labtrain plot "$DIGITS" confusion --out $IMG/ex2-digits-confusion.png
labtrain plot "$COLORED" learning-curves --out $IMG/ex3-colored-digits-learning-curves.png
labtrain plot "$HOUSES" sigma --feature Gr_Liv_Area --out $IMG/ex4-house-prices-sigma.png
labtrain plot "$HOUSES" learning-curves --out $IMG/ex4-house-prices-learning-curves.png

# The README's learning-rate sweep ("Sweeps and the reference study"): 5 rates x 5 seeds.
LR_SWEEP='{"name": "widths", "base": {"dataset": {"name": "spirals"}, "model": {"hidden_layers": 2, "neurons": 16},
  "optimizer": {"name": "sgd", "lr": 0.01}, "batch_size": 10, "epochs": 200},
  "grid": {"optimizer.lr": [0.003, 0.01, 0.03, 0.1, 0.3]}, "repeats": 5}'
echo "\$ curl -s -X POST $LABTRAIN_URL/sweeps -H 'content-type: application/json' -d '$LR_SWEEP'" >&2
SWEEP=$(curl -sf -X POST "$LABTRAIN_URL/sweeps" -H 'content-type: application/json' -d "$LR_SWEEP" |
    "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["id"])')
for _ in $(seq 600); do
    curl -sf "$LABTRAIN_URL/sweeps/$SWEEP" | grep -q '"status":"finished"' && break
    sleep 1
done
labtrain table "$SWEEP"
labtrain plot "$SWEEP" compare --out $IMG/sweep-lr-compare.png

# Lossless recompression; a palette of 256 colors only for a picture still above 200 KB.
"$BIN/python" - $IMG/ex[1-4]-*.png $IMG/sweep-*.png <<'EOF'
import sys
from pathlib import Path

from PIL import Image

for name in sys.argv[1:]:
    path = Path(name)
    Image.open(path).save(path, optimize=True)
    if path.stat().st_size > 200_000:
        Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)
    print(f"{path}: {path.stat().st_size // 1024} KB", file=sys.stderr)
EOF
