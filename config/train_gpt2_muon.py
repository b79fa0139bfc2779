# GPT-2 small (124M) on FineWeb with Muon for the blocks' matrices and AdamW for the rest.
# The same data, model and batch as config/train_gpt2.py; only the optimizer settings differ.
#   python prepare.py fineweb10B --num_shards=103
#   python train.py config/train_gpt2_muon.py               # one GPU
#   torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_muon.py
#
# The optimizer settings are the ones Keller Jordan publishes with Muon (github.com/KellerJordan/
# Muon, README, "Usage"): Muon at lr 0.02 with his per-matrix scaling sqrt(max(1, rows/cols))
# (PyTorch's adjust_lr_fn="original"), momentum 0.95, Nesterov, 5 Newton-Schulz steps; AdamW at
# lr 3e-4, betas (0.9, 0.95) for embeddings, head, gains and biases; weight decay 0.01 for both.
# The NanoGPT speedrun records (github.com/KellerJordan/modded-nanogpt) reach GPT-2's loss in far
# fewer tokens, but with architecture and schedule changes this code does not make (rotary
# embeddings, QK-norm, ReLU^2, untied head, ...). The step count below is ours: half of
# train_gpt2.py's 10B tokens. Compare the two runs' val loss at equal steps before trusting it.

out_dir = "out-gpt2-muon"
wandb_log = False
wandb_project = "gpt2-124M"
wandb_run_name = "gpt2-124M-muon"

dataset = "fineweb10B"
init_from = "scratch"
batch_size = 32
block_size = 1024
gradient_accumulation_steps = 524288 // (batch_size * block_size)  # = 16: 0.5M tokens per step

n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0
bias = True

optimizer = "muon"
learning_rate = 3e-4  # AdamW's, and the schedule's peak
muon_lr_ratio = 0.02 / learning_rate  # Muon's peak: 0.02
muon_lr_scaling = "original"  # Keller Jordan's scaling, which his lr 0.02 was tuned with
weight_decay = 0.01
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
min_lr = learning_rate / 10
warmup_iters = 700
max_iters = 9536  # 5B tokens
lr_decay_iters = 9536
decay_lr = True

eval_interval = 250
eval_iters = 40
log_interval = 10
always_save_checkpoint = True
compile = True
