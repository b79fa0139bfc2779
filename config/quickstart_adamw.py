# The CPU quick start trained with AdamW alone: the default recipe before Muon became it.
#   python train.py config/quickstart_adamw.py
# Side by side with the default (about the same wall time on 2 CPU cores):
#   python bench.py --mode=recipes --recipes=default,quickstart_adamw --repeats=3
# AdamW's step costs less (Muon adds its Newton-Schulz iterations, a fixed cost per step), so it
# takes smaller batches and more steps in the same time, but learns less per step. Each optimizer
# has its own best shape here: AdamW one layer 128 wide, Muon two layers 96 wide (the measurements:
# results/cpu-optimizers-2026-12-04/README.md).

out_dir = "out-adamw"
eval_interval = 500
eval_iters = 20
always_save_checkpoint = True

dataset = "shakespeare_char"
init_from = "scratch"
gradient_accumulation_steps = 1
batch_size = 24
block_size = 64

n_layer = 1
n_head = 4
n_embd = 128
bias = False
dropout = 0.0  # a minute of training cannot overfit

optimizer = "adamw"
learning_rate = 8e-3
min_lr = 8e-4
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
decay_lr = True
warmup_iters = 100
max_iters = 2200
lr_decay_iters = 2200
