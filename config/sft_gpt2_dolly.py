# Teach OpenAI's GPT-2 (124M) to follow instructions: supervised finetuning on databricks-dolly-15k
# (15,011 instructions with answers written by people, CC BY-SA 3.0; prepare.py says why this one).
# On one GPU:
#   python prepare.py dolly                      # downloads about 13 MB, renders the chats with GPT-2's tokens
#   python train.py config/sft_gpt2_dolly.py
#   python chat.py --out_dir=out-dolly --prompt="Give me three tips for a good night's sleep."
# The loss is on the assistant's tokens only (sft.py), and the val loss is on held-out answers;
# conversations longer than 1,024 tokens are skipped and counted by prepare.py. Bigger GPT-2s
# answer better: --init_from=gpt2-medium, ...

out_dir = "out-dolly"
eval_interval = 100
eval_iters = 40
log_interval = 10
always_save_checkpoint = False  # keep the checkpoint with the best val loss (on held-out answers)
wandb_log = False
wandb_project = "sft"
wandb_run_name = "gpt2-dolly"

dataset = "dolly"
init_from = "gpt2"
# 8 conversations x 4 micro-steps = 32 conversations a step, each batch padded to its longest;
# about 13,300 train conversations, so ~415 steps an epoch: two epochs.
batch_size = 8
gradient_accumulation_steps = 4
block_size = 1024
dropout = 0.0

# AdamW at a small learning rate, decayed: nudge the pretrained weights towards answering, as
# instruction-tuning recipes for models of this size do, without overwriting what they know.
optimizer = "adamw"
learning_rate = 2e-5
min_lr = 2e-6
weight_decay = 0.0
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
decay_lr = True
warmup_iters = 40
max_iters = 830
lr_decay_iters = 830
