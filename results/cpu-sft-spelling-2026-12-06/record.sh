#!/usr/bin/env bash
# Every figure of this folder's README, from the repository root, after the quick start (out/):
#   bash results/cpu-sft-spelling-2026-12-06/record.sh
# The finetuning runs three times (wall time: the median); the last run's checkpoint is kept here.
set -euo pipefail
R=results/cpu-sft-spelling-2026-12-06
TIMEFORMAT=%R
for i in 1 2 3; do
  rm -rf out-spelling
  { time python train.py config/sft_spelling.py > $R/train.log 2>&1 ; } 2>> $R/seconds.txt
done
cp out-spelling/ckpt.pt out-spelling/metrics.jsonl $R/
for run in out out-spelling; do  # before and after: the task, and the old skill (Shakespeare)
  python eval.py task --out_dir=$run --json > $R/task-$run.json
  python eval.py perplexity --out_dir=$run --json > $R/shakespeare-$run.json
done
# Without the plain text mixed in: the same recipe on conversations alone.
python prepare.py spelling --text_fraction=0 --data_dir=/tmp/spelling-no-text
python train.py config/sft_spelling.py --data_dir=/tmp/spelling-no-text --out_dir=/tmp/out-spelling-no-text \
  --overwrite=True > $R/train-no-text.log 2>&1
python eval.py task --out_dir=/tmp/out-spelling-no-text --json > $R/task-no-text.json
python eval.py perplexity --out_dir=/tmp/out-spelling-no-text --json > $R/shakespeare-no-text.json
