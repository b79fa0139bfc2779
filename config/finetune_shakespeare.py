# Finetune OpenAI's GPT-2 (124M) on tiny Shakespeare: a few minutes on one GPU.
# First:  python prepare.py shakespeare   # GPT-2 tokens; train.py also makes it if missing
#         python train.py config/finetune_shakespeare.py
#         python sample.py --out_dir=out-shakespeare
# Bigger GPT-2s finetune better: --init_from=gpt2-medium (or -large, -xl) if the GPU has room.

out_dir = "out-shakespeare"
eval_interval = 5
eval_iters = 40
log_interval = 1
wandb_log = False
wandb_project = "shakespeare"
wandb_run_name = "ft-gpt2"

dataset = "shakespeare"
init_from = "gpt2"
# Only ~300K tokens: the model overfits after a few dozen steps, so keep the best checkpoint.
always_save_checkpoint = False

# 1 sequence x 32 micro-steps x 1024 tokens = 32,768 tokens per step;
# one pass over the 300K training tokens is ~10 steps.
batch_size = 1
gradient_accumulation_steps = 32
block_size = 1024
max_iters = 20
dropout = 0.1  # some regularisation helps on a small dataset

# AdamW with a small, constant learning rate: nudge the pretrained weights, do not overwrite them.
optimizer = "adamw"
learning_rate = 3e-5
decay_lr = False
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
