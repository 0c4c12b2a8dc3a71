import torch

# Two cores shared with other processes: more threads only add contention.
torch.set_num_threads(min(2, torch.get_num_threads()))
