# The CPU quick start trained with AdamW alone: the default recipe before Muon became it.
#   python train.py config/quickstart_adamw.py
# Side by side with the default (same model, same wall time on 2 CPU cores):
#   python bench.py --mode=recipes --recipes=default,quickstart_adamw
# AdamW takes more steps in the same time (no Newton-Schulz iterations, which run in bfloat16,
# slowly on most CPUs) but learns less per step.

out_dir = "out-adamw"
optimizer = "adamw"
beta2 = 0.95  # tried 0.99 for AdamW too: worse here (val 1.699 against 1.690)
max_iters = 2200
