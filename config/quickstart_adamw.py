# The CPU quick start trained with AdamW alone: the default recipe before Muon became it.
#   python train.py config/quickstart_adamw.py
# Side by side with the default (about the same wall time on 2 CPU cores):
#   python bench.py --mode=recipes --recipes=default,quickstart_adamw --repeats=3
# AdamW's step costs less (Muon adds its Newton-Schulz iterations, a fixed cost per step), so it
# takes smaller batches and more steps in the same time, but learns less per step (README,
# "Optimizers"). Each optimizer has its own best shape here: AdamW one layer 128 wide, Muon two
# layers 96 wide.

out_dir = "out-adamw"
optimizer = "adamw"
n_layer = 1
n_embd = 128  # 2 layers of 96 (Muon's shape) with AdamW: val 1.710 against 1.690
batch_size = 24  # tried 32 at equal time too: worse here (val 1.701 against 1.690)
beta2 = 0.95  # tried 0.99 for AdamW too: worse here (val 1.699 against 1.690)
warmup_iters = 100
max_iters = 2200
