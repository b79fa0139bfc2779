# Evaluate OpenAI's GPT-2 350M (gpt2-medium) on FineWeb and exit: the baseline for config/train_gpt2.py.
# First: python prepare.py fineweb10B --num_shards=1
#        python train.py config/eval_gpt2_medium.py
# 500 batches x 8 x 1024 = 4M tokens per split.

eval_only = True
init_from = "gpt2-medium"
dataset = "fineweb10B"
batch_size = 8
block_size = 1024
eval_iters = 500
wandb_log = False
