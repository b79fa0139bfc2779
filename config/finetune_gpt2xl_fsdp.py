# Finetune OpenAI's GPT-2 XL (1.5B parameters) on tiny Shakespeare, sharded with FSDP.
# Its weights, gradients and AdamW state take 16 bytes per parameter, ~25 GB, before any
# activations: more than a 24-GB card holds. FSDP splits them across the GPUs (8 GPUs: ~3 GB
# each) and activation checkpointing keeps each block's activations down to its input.
# First:  python prepare.py shakespeare
# One node, 8 GPUs:
#   torchrun --standalone --nproc_per_node=8 train.py config/finetune_gpt2xl_fsdp.py
# Two nodes of 8 (run on each, with that node's --node_rank):
#   torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \
#       --rdzv_endpoint=HOST_OF_NODE_0:29500 train.py config/finetune_gpt2xl_fsdp.py
# Then:   python sample.py --out_dir=out-shakespeare-xl   # reads the shards in one process

out_dir = "out-shakespeare-xl"
eval_interval = 5
eval_iters = 40
log_interval = 1
wandb_log = False
wandb_project = "shakespeare"
wandb_run_name = "ft-gpt2-xl-fsdp"

dataset = "shakespeare"
init_from = "gpt2-xl"
always_save_checkpoint = False  # ~300K tokens: it overfits soon, so keep the best checkpoint

parallel = "fsdp"
activation_checkpointing = True

# 1 sequence x 32 micro-steps x 1024 tokens = 32,768 tokens per step, whatever the number of
# GPUs (the 32 micro-steps are shared out between them: use 1, 2, 4, 8, 16 or 32 GPUs).
batch_size = 1
gradient_accumulation_steps = 32
block_size = 1024
max_iters = 20
dropout = 0.1

optimizer = "adamw"
learning_rate = 1e-5  # smaller than gpt2's 3e-5: a bigger model needs a gentler nudge
decay_lr = False
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
