#!/usr/bin/env bash
# Default run and a 4-job local sweep, before (threads=2: torch's default on this 2-core machine)
# and after (threads=auto), on an idle machine and with two background CPU burners.
# Usage: experiments/benchmarks/threads_measure.sh OUT_DIR [STEPS]   (RUN=path/to/run.py to override;
#        WHICH="after" measures only threads=auto, WHICH="before" only threads=2)
set -u
OUT=${1:?output folder}; STEPS=${2:-1000}
RUN=${RUN:-run.py}; PY=${PY:-.venv/bin/python}; WHICH=${WHICH:-before after}
mkdir -p "$OUT"; unset OMP_NUM_THREADS MKL_NUM_THREADS
summ() {  # folder label wall
  "$PY" - "$@" <<'PY'
import json, sys, glob
folder, label, wall = sys.argv[1], sys.argv[2], float(sys.argv[3])
rates = []
for f in sorted(glob.glob(folder + "/**/results.json", recursive=True)):
    r = json.load(open(f)); rates.append(r["steps"] / max(r["wall_time_s"], 1e-9))
print(json.dumps({"label": label, "jobs": len(rates), "wall_s": round(wall, 1),
                  "it_per_s": [round(x, 1) for x in rates]}))
PY
}
one() {  # label threads
  local d="$OUT/$1"; rm -rf "$d"; local t0=$(date +%s.%N)
  "$PY" "$RUN" logger=csv trainer.max_steps=$STEPS threads=$2 test=false hydra.run.dir="$d" \
      > "$d.log" 2>&1
  summ "$d" "$1" "$(echo "$(date +%s.%N) - $t0" | bc)" | tee -a "$OUT/summary.jsonl"
}
sweep() {  # label threads
  local d="$OUT/$1"; rm -rf "$d"; local t0=$(date +%s.%N)
  "$PY" "$RUN" -m hydra/launcher=local experiment=abs_flow_corners,plain_flow_corners seed=0,1 \
      logger=csv trainer.max_steps=$STEPS threads=$2 test=false hydra.sweep.dir="$d" \
      > "$d.log" 2>&1
  summ "$d" "$1" "$(echo "$(date +%s.%N) - $t0" | bc)" | tee -a "$OUT/summary.jsonl"
}
for load in idle loaded; do
  pids=()
  if [ $load = loaded ]; then
    for i in 1 2; do "$PY" -c 'while True: pass' & pids+=($!); done
  fi
  for which in $WHICH; do
    if [ "$which" = before ]; then threads=2; else threads=auto; fi
    one "default_${load}_${which}" "$threads"; sweep "sweep4_${load}_${which}" "$threads"
  done
  for p in "${pids[@]}"; do kill "$p"; done
done
grep -h "threads:" "$OUT"/*.log "$OUT"/*/.submitit/*/*.out 2>/dev/null | sort | uniq -c
