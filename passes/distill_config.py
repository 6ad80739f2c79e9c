"""Typed, frozen configuration of knowledge distillation (passes/distill.py): the float model teaches its
compressed copy on the calibration (or --train-data) inputs, inside the compile.

Validated when constructed, so a bad value fails at the CLI/API boundary, not after minutes of training.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import TvmcompressError

__all__ = ["DistillConfig"]


@dataclass(frozen=True)
class DistillConfig:
    """How to fine-tune the compressed student against the float teacher.

    - `minutes`: wall-clock budget of the whole distillation (both phases). Training stops early, with a
      warning, when it runs out; then the result depends on the machine's speed (the only non-deterministic case).
    - `epochs`: passes over the data of output distillation; `reconstruct_epochs`: of block-wise reconstruction
      (per-layer MSE against the teacher's activations, where the student layer has the teacher's shape).
    - `learning_rate`: Adam's step size on the float "latent" weights, with cosine decay to 0 over each phase
      when layers are on a weight grid (the compressed weights are projections of the latent ones: pruned weights
      masked, quantized weights rounded to their grid, straight-through gradients).
    - `temperature`: softening of classifier logits for the KL loss (Hinton et al.); MSE for other outputs.
    - `label_weight`: weight of the cross-entropy against the labels when the data has a 'label' array.
    - `seed`: the shuffling order of batches; with the same data, seed and a budget not hit, the result is
      bit-identical.
    """

    minutes: float = 3.0
    epochs: int = 30
    reconstruct_epochs: int = 3
    learning_rate: float = 1e-3
    temperature: float = 4.0
    label_weight: float = 0.3
    seed: int = 0

    def __post_init__(self):
        for name in ("minutes", "learning_rate", "temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise TvmcompressError(f"distill {name} must be a positive number, got {value!r}")
        for name in ("epochs", "reconstruct_epochs", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TvmcompressError(f"distill {name} must be an integer >= 0, got {value!r}")
        if self.epochs + self.reconstruct_epochs == 0:
            raise TvmcompressError("distill epochs and reconstruct_epochs are both 0: nothing to train")
        if isinstance(self.label_weight, bool) or not isinstance(self.label_weight, (int, float)) \
                or not 0.0 <= self.label_weight <= 1.0:
            raise TvmcompressError(f"distill label_weight must be in [0, 1], got {self.label_weight!r}")

    def to_json(self) -> dict:
        return asdict(self)
