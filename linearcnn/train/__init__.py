"""Training: the linear CNN and deep CNNs, true or random labels, checkpoints that carry everything.

    result = train(TrainConfig(arch="vgg11", data="builtin", labels="random", epochs=10, out="runs/x"))
    results = train_seeds(config, [0, 1, 2])                  # DIR/seed0, DIR/seed1, ... one after another
    results = train_seeds(config, [0, 1, 2], together=True)   # the same models, trained as one vmapped stack

Where each job lives:

* `config`: `TrainConfig`, its choices and validation; `targets`: true, random and parity labels;
  `device_data`: the data normalised and resident on the device (`prepare_training_data`);
* `stability`: the linear models' learning-rate bound; `distributed`: torchrun / DDP;
* `stepper`: one optimizer step of one model or of a vmapped stack of seeds; `loop`: the one
  training loop (`train`, `train_together`); `stopping`: when a run stops (epochs, steps, or a
  train-accuracy / loss target with a cap) and its `stop` record; `seeds`: several seeds (`train_seeds`);
* `metrics`: losses, the metrics book, summaries; `run_files`: the output folder, resume and
  saving; `progress`: the progress bar. The checkpoint format itself is
  `linearcnn.checkpoints.training`.
"""

from linearcnn.checkpoints.training import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    CHECKPOINT_VERSION,
    checkpoint_dict,
    load_training_checkpoint,
    model_from_checkpoint,
    model_spec,
)
from linearcnn.models import ARCHS
from linearcnn.train.config import TrainConfig
from linearcnn.train.device_data import HeldOutData, TrainingData, load_test_dataset, prepare_test_data, prepare_training_data
from linearcnn.train.loop import TrainResult, iter_first_layers, train, train_together
from linearcnn.train.metrics import METRIC_KEYS, METRICS_NAME, book_segment, final_metrics
from linearcnn.train.progress import progress_enabled
from linearcnn.train.seeds import parse_seeds, seed_out_dir, train_seeds
from linearcnn.train.stability import check_linear_lr, linear_gd_hessian_max_eigenvalue
from linearcnn.train.stepper import optimizer_state_slice, seeded_model_for, stack_optimizer_states
from linearcnn.train.targets import draw_random_labels, parity_targets, training_targets

__all__ = [
    "ARCHS",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "CHECKPOINT_VERSION",
    "METRICS_NAME",
    "METRIC_KEYS",
    "HeldOutData",
    "TrainConfig",
    "TrainResult",
    "TrainingData",
    "book_segment",
    "check_linear_lr",
    "checkpoint_dict",
    "draw_random_labels",
    "final_metrics",
    "iter_first_layers",
    "linear_gd_hessian_max_eigenvalue",
    "load_test_dataset",
    "load_training_checkpoint",
    "model_from_checkpoint",
    "model_spec",
    "optimizer_state_slice",
    "parity_targets",
    "parse_seeds",
    "prepare_test_data",
    "prepare_training_data",
    "progress_enabled",
    "seed_out_dir",
    "seeded_model_for",
    "stack_optimizer_states",
    "train",
    "train_seeds",
    "train_together",
    "training_targets",
]
