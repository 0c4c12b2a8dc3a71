import os

import torch

# Two cores shared with other processes: more threads only add contention.
torch.set_num_threads(min(2, torch.get_num_threads()))

if os.environ.get("DEU_PRELOAD_CPU_KERNEL"):
    # make mutmut: load the fused CPU kernel once, in the process mutmut forks its
    # workers from, so that no worker stopped at its time limit while holding
    # torch's build lock can leave that lock behind for the others to wait on.
    from deu import _cpp

    _cpp.load()
