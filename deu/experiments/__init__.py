"""The paper's experiments on data that ships with the project.

    python -m deu.experiments NAME [--quick] [--out DIR] [--seed N]

Each experiment is a module of this package with a ``run(args) -> dict``
function; it writes Markdown and CSV tables and PNG figures under ``args.out``
and returns a summary (used by the tests). ``--quick`` shrinks every
experiment to seconds, for the tests; the numbers it gives mean nothing.
EXPERIMENTS.md at the repository root reports full runs beside the paper's.
"""

from __future__ import annotations

# name -> (module, one-line description); modules are imported on demand so
# that ``--help`` does not pay for matplotlib and scikit-learn.
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "circles": ("circles", "nested noisy circles: 2 DEUs vs Maxout and ReLU nets (Figure 1)"),
    "fit": ("fit", "fit the paper's Figure 2 function: 30 DEUs vs 250 ReLU / Maxout units"),
    "sine": ("sine", "one DEU neuron initialised as ReLU learns sin(t) (with/without gravitation)"),
    "diabetes": ("diabetes", "diabetes regression, 1-16 hidden neurons, 3-fold CV (Figure 6)"),
    "digits": ("digits", "8x8 digits (or MNIST/Fashion-MNIST IDX files): MLP and CNN (Table 2)"),
    "timing": (
        "timing",
        "ms per training batch of a 784-x-10 MLP: DEU/Maxout/PReLU/ReLU (Table 4)",
    ),
    "gallery": ("gallery", "one panel per subspace: y, dy/dt, dy/da, dy/db, dy/dc (Figure 3)"),
    "stability": (
        "stability",
        "finite runs and loss spikes of ReLU/PReLU/SiLU/DEU over optimisers and learning rates",
    ),
    "ablation": ("ablation", "each candidate fix for DEU training stability on its own"),
    "broad": (
        "broad",
        "forecasting, tabular, a library ResNet: finite runs, spikes, metric, adaptation",
    ),
}

__all__ = ["EXPERIMENTS"]
