#!/bin/bash
# Side by side on the same 2 cores, taking turns: nanoGPT's documented CPU recipe and our quick start.
# NANOGPT: a nanoGPT checkout with data/shakespeare_char prepared; OURS: a clean clone of this
# repository; LOGS: where the logs and times go (as run: /tmp/nanogpt, /tmp/side-clone, /tmp/m/side).
NANOGPT=${NANOGPT:-/tmp/nanogpt} OURS=${OURS:-/tmp/side-clone} LOGS=${LOGS:-/tmp/m/side}
cd "$LOGS"
for round in 1 2 3; do
  ( cd "$NANOGPT" && /usr/bin/time -f "%e" -o $LOGS/nanogpt-$round.time \
      python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0 --out_dir=out-side-$round \
      > $LOGS/nanogpt-$round.log 2>&1 )
  ( cd "$OURS" && /usr/bin/time -f "%e" -o $LOGS/ours-$round.time \
      python train.py --out_dir=out-side-$round > $LOGS/ours-$round.log 2>&1 )
done
echo done > $LOGS/finished
