#!/bin/bash
# start seeds 2 and 3 once seed 1 has built (and cached) the shared pseudo-label datasets
while [ ! -f /work/ul6/runs/filtered/s1/summary.json ]; do sleep 20; done
/work/ul6/run_seed.sh 2 > /work/ul6/seed2.log 2>&1 &
/work/ul6/run_seed.sh 3 > /work/ul6/seed3.log 2>&1 &
wait
