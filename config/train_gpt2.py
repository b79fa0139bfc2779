# Reproduce GPT-2 small (124M) on 10B tokens of FineWeb, in the spirit of nanoGPT/llm.c.
# First:  python prepare.py fineweb10B --num_shards=103   # all 10B tokens, ~20 GB
#         (fewer shards work too: training then samples the same tokens more than once)
# One GPU:   python train.py config/train_gpt2.py
# 8 GPUs:    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py
# Compare the val loss with OpenAI's GPT-2 on the same data: python train.py config/eval_gpt2.py

out_dir = "out-gpt2"
wandb_log = False
wandb_project = "gpt2-124M"
wandb_run_name = "gpt2-124M-fineweb10B"

dataset = "fineweb10B"
init_from = "scratch"
# GPT-3's small models trained with ~0.5M tokens per step. One GPU cannot hold that many at
# once, so it takes several micro-steps (gradient accumulation): 524,288 = 32 x 1024 x 16.
# With torchrun the 16 micro-steps are shared out between the GPUs (8 GPUs: 2 each).
batch_size = 32  # sequences per micro-step per GPU; lower it (16, 8) if the GPU runs out of memory
block_size = 1024
gradient_accumulation_steps = 524288 // (batch_size * block_size)  # = 16

# GPT-2 small
n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0  # pretraining on this much data does not overfit
bias = True

# AdamW and the schedule, as GPT-3's paper gives them for this size
optimizer = "adamw"
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 700  # ~375M tokens of warmup, as in GPT-3
max_iters = 19073  # 19,073 x 524,288 tokens = 10B tokens: one pass over the data
lr_decay_iters = 19073
decay_lr = True
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0

eval_interval = 250
eval_iters = 40  # 40 x 32 x 1024 = 1.3M val tokens per evaluation
log_interval = 10
always_save_checkpoint = True
compile = True  # worth the minute of compiling on a run this long
