# The "baby GPT" on one GPU: a 6-layer, ~10M-parameter character-level model of Shakespeare.
# A few minutes on a modern GPU. nanoGPT reports a best val loss of ~1.47 for this recipe.
#   python train.py config/train_shakespeare_char.py
#   python sample.py --out_dir=out-shakespeare-char

out_dir = "out-shakespeare-char"
eval_interval = 250  # small data, so evaluate often...
eval_iters = 200
log_interval = 10  # ...and print often
# The model overfits this small dataset, so keep the best checkpoint, not the last.
always_save_checkpoint = False

wandb_log = False
wandb_project = "shakespeare-char"
wandb_run_name = "mini-gpt"

dataset = "shakespeare_char"
init_from = "scratch"
gradient_accumulation_steps = 1
batch_size = 64
block_size = 256  # context of up to 256 previous characters

# the baby GPT
n_layer = 6
n_head = 6
n_embd = 384
bias = True  # as nanoGPT's baby GPT, and as the quoted result was measured
dropout = 0.2  # ~1M characters is little data for 10M parameters: regularise

optimizer = "adamw"
learning_rate = 1e-3  # small networks can take a higher learning rate
max_iters = 5000
decay_lr = True
lr_decay_iters = 5000  # usually equal to max_iters
min_lr = 1e-4  # learning_rate / 10, as the Chinchilla paper recommends
warmup_iters = 100  # not very necessary at this size
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.99  # a little higher than GPT-2's 0.95: few tokens per step
grad_clip = 1.0
