"""Speed and memory of the DEU activation against ReLU, PReLU and two baselines.

Run ``python -m deu.benchmark`` (``make bench``); ``--quick`` is a seconds-long
smoke run with tiny shapes.  One Markdown table is printed, every number in it
measured in this process:

* **Activation cases**, a ``(512, 1024)`` and a conv-shaped ``(32, 64, 32, 32)``
  float32 input (neuron axis 1): ReLU, PReLU (one weight per neuron), one
  ``torch.exp`` over the tensor (the floor for the transcendental work), and
  the DEU paths on a mixed population of neurons and on each single-subspace
  population.  On the mixed population two baselines are measured as well:

  - the masked "every subspace on every element" method of the paper's
    Algorithm 1 (:func:`masked_every_subspace`);
  - the paper's per-neuron loop (:func:`per_neuron_loop`), timed on a subset of
    the neurons and extrapolated linearly to all of them.

* **Layer cases**, small shapes where the per-call cost is most of the time
  (issue 18): ``(32, 64)`` and ``(128, 256)``, each activation as a module
  with its parameters' gradients: ReLU, PReLU, ``deu.DEU`` from its default
  ReLU start and on the mixed population, and the mixed layer through the
  custom operator with the traced parametrisation (the eager path's "before").

* **Training cases**: one SGD step (forward, cross-entropy, backward, update)
  of a 784-1024-512-10 MLP at batch 256 and of the paper's stunted ResNet-18
  on 32x32 inputs, with ReLU, PReLU or DEU activations.

* **GPU cases** (issue 12), only where a CUDA or ROCm device is present
  (otherwise the output says that they were not run, and why): ``(8192,
  4096)`` float32 on the mixed population, ReLU, PReLU, ``torch.exp``, a
  device-to-device copy (its bandwidth, and each forward's traffic over its
  time as a fraction of it), the DEU with the Triton kernels, the generated
  PyTorch kernels eager and the same kernels compiled by inductor inside the
  operator (:func:`in_operator_compiled`).  ``--gpu`` runs only these (with
  ``--device cpu``: on CPU tensors, for the tests).

"fwd+bwd" is a forward and a backward pass to the gradients of the input and
of every parameter (for the training cases: the whole training step);
"inference" is a forward pass under ``torch.inference_mode``.  Times are the
median of repeated runs after warm-up runs (``time.perf_counter``, with CUDA
synchronised around every run).  Peak memory is that of one fwd+bwd above
what was allocated before it (see :func:`peak_memory_mb`).

The package, by concern: ``populations``, ``baselines``, ``measurement``
(timing, memory, workloads), ``cases`` (activation and training), ``gpu``,
``table`` (the Markdown table) and ``report`` (the report and the command
line). Every public name is importable from ``deu.benchmark`` itself.
"""

from __future__ import annotations

from deu.benchmark.baselines import DEFAULTS, masked_every_subspace, per_neuron_loop
from deu.benchmark.cases import (
    ACTIVATIONS,
    DEFAULT_PATH,
    TORCH_PATH,
    ActivationFactory,
    BasicBlock,
    activation_workload,
    activation_workloads,
    baseline_workloads,
    calibrate_batch_norm,
    deu_workloads,
    layer_workloads,
    mlp,
    reference_workloads,
    stunted_resnet,
    training_workload,
    training_workloads,
)
from deu.benchmark.gpu import (
    COPY_PATH,
    GPU_SHAPE,
    IN_OPERATOR_PATH,
    TRITON_PATH,
    GpuReport,
    GpuSettings,
    bandwidth_fraction,
    copy_bandwidth_gbps,
    forward_traffic_bytes,
    gpu_settings,
    gpu_unavailable_reason,
    gpu_workloads,
    in_operator_compiled,
    render_gpu,
    run_gpu,
)
from deu.benchmark.measurement import (
    Row,
    Settings,
    Workload,
    full_settings,
    measure,
    median_ms,
    peak_memory_mb,
    quick_settings,
)
from deu.benchmark.populations import (
    INSIDE_POINTS,
    MIXED_PROPORTIONS,
    mixed_population,
    neuron_counts,
    subspace_population,
)
from deu.benchmark.report import (
    cpu_model,
    describe_load,
    git_commit,
    gpu_section,
    header_lines,
    load_average,
    machine_description,
    main,
    not_run_line,
    parse_arguments,
    render,
    run,
)
from deu.benchmark.table import COLUMNS, caption, table_cells

__all__ = [
    "ACTIVATIONS",
    "ActivationFactory",
    "BasicBlock",
    "COLUMNS",
    "COPY_PATH",
    "DEFAULTS",
    "DEFAULT_PATH",
    "GPU_SHAPE",
    "GpuReport",
    "GpuSettings",
    "INSIDE_POINTS",
    "IN_OPERATOR_PATH",
    "MIXED_PROPORTIONS",
    "Row",
    "Settings",
    "TORCH_PATH",
    "TRITON_PATH",
    "Workload",
    "activation_workload",
    "activation_workloads",
    "bandwidth_fraction",
    "baseline_workloads",
    "calibrate_batch_norm",
    "caption",
    "copy_bandwidth_gbps",
    "cpu_model",
    "describe_load",
    "layer_workloads",
    "deu_workloads",
    "forward_traffic_bytes",
    "full_settings",
    "git_commit",
    "gpu_section",
    "gpu_settings",
    "gpu_unavailable_reason",
    "gpu_workloads",
    "header_lines",
    "in_operator_compiled",
    "load_average",
    "machine_description",
    "main",
    "masked_every_subspace",
    "measure",
    "median_ms",
    "mixed_population",
    "mlp",
    "neuron_counts",
    "not_run_line",
    "parse_arguments",
    "peak_memory_mb",
    "per_neuron_loop",
    "quick_settings",
    "reference_workloads",
    "render",
    "render_gpu",
    "run",
    "run_gpu",
    "stunted_resnet",
    "subspace_population",
    "table_cells",
    "training_workload",
    "training_workloads",
]
