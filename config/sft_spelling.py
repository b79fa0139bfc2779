# Finetune the quick start to answer: spell a word letter by letter ("spell brother" ->
# "b-r-o-t-h-e-r"), the built-in chat task of sft.py. Once the quick start has written out/:
#   python train.py config/sft_spelling.py
#   python eval.py task --out_dir=out-spelling        # exact match on the held-out words
#   python chat.py --out_dir=out-spelling
# The dataset (prepare.py spelling) is made on first use: 4 chat tokens after the quick start's
# 65 characters, the words of tiny Shakespeare, one in ten held out (no word in both splits).

out_dir = "out-spelling"
eval_interval = 200
eval_iters = 20
log_interval = 10
always_save_checkpoint = True

dataset = "spelling_char"
init_from = "checkpoint"  # the quick start's weights, as a new run: a fresh optimizer, step 0
init_dir = "out"
gradient_accumulation_steps = 1
batch_size = 32
block_size = 64
dropout = 0.0

optimizer = "muon"
learning_rate = 4e-3
min_lr = 4e-4
weight_decay = 0.0
beta1 = 0.9
beta2 = 0.99
muon_lr_ratio = 1.0
muon_lr_scaling = "match_rms_adamw"
grad_clip = 1.0
decay_lr = True
warmup_iters = 50
max_iters = 600
lr_decay_iters = 600
