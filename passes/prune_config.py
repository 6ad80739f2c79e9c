"""Typed, frozen configuration of pruning, and the `--prune SPEC` parser.

A spec is a comma-separated list of steps, applied in a fixed order whatever order they are written in
(layer removal, then channel removal, then unstructured, block and N:M sparsity; see `tvmcompress.passes.prune`):

    unstructured:S[:global|:layer]   magnitude pruning of conv/matmul weights to sparsity S in [0, 1), under
                                     one threshold for all layers (the default) or each layer to S
    channel:R                        remove a fraction R in [0, 1) of the channels of every prunable group
    block:S:RxC                      block sparsity S of Dense/MatMul weights in R x C blocks
    N:M                              keep N of every M consecutive weights (2:4)
    layer:K                          remove the K residual blocks whose residual branch has the least norm

Criteria rank channels (and, for unstructured, weights): l1 / l2 norm of the weights, bn (|gamma| of the
BatchNormalization after the layer) or activation (from calibration data: for channels, the energy each channel
feeds into the layers that read it, E[x_c^2] * ||W[c]||^2; for weights, |w| * mean |x| as in Wanda).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import TvmcompressError

__all__ = ["PruneStep", "PruneConfig", "parse_prune_spec", "CRITERIA", "STEP_ORDER", "OVERRIDABLE"]

Criterion = Literal["l1", "l2", "bn", "activation"]
CRITERIA: tuple[str, ...] = ("l1", "l2", "bn", "activation")
# The order in which steps run: removing whole layers and channels first lets the sparsity steps rank the
# weights that are left, and reconstruction after channel removal re-fits layers before they are sparsified.
STEP_ORDER: tuple[str, ...] = ("layer", "channel", "unstructured", "block", "nm")
# Steps whose amount can be set per channel group / layer (PruneConfig.overrides).
OVERRIDABLE: tuple[str, ...] = ("channel", "unstructured")

_SPEC_HELP = "use unstructured:S, channel:R, block:S:RxC, N:M (2:4) or layer:K, comma-separated"


@dataclass(frozen=True)
class PruneStep:
    """One step of a spec. `amount`: sparsity (unstructured, block), removed fraction (channel) or number of
    blocks (layer). `block`: (rows, cols) of block sparsity. `n`, `m`: N:M keeps n of every m weights."""

    kind: Literal["layer", "channel", "unstructured", "block", "nm"]
    amount: float = 0.0
    # global by default: one magnitude threshold lets small layers (a first conv with 9 weights per filter)
    # keep more of their weights and large, redundant ones give up more, for the same total sparsity.
    scope: Literal["layer", "global"] = "global"
    block: tuple[int, int] | None = None
    n: int = 0
    m: int = 0

    def __str__(self) -> str:
        if self.kind == "nm":
            return f"{self.n}:{self.m}"
        if self.kind == "block":
            return f"block:{self.amount:g}:{self.block[0]}x{self.block[1]}"
        if self.kind == "layer":
            return f"layer:{int(self.amount)}"
        if self.kind == "unstructured" and self.scope == "layer":
            return f"unstructured:{self.amount:g}:layer"
        return f"{self.kind}:{self.amount:g}"


def _fraction(text: str, token: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TvmcompressError(f"bad --prune step '{token}': {what} must be a number in [0, 1), got '{text}'") from None
    if not 0.0 <= value < 1.0:
        raise TvmcompressError(f"bad --prune step '{token}': {what} must be in [0, 1), got {value:g}")
    return value


def _positive_int(text: str, token: str, what: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise TvmcompressError(f"bad --prune step '{token}': {what} must be a whole number >= 1, got '{text}'")
    return int(text)


def _parse_step(token: str) -> PruneStep:
    parts = token.split(":")
    kind = parts[0]
    if kind == "unstructured" and len(parts) in (2, 3):
        scope = parts[2] if len(parts) == 3 else "global"
        if scope not in ("layer", "global"):
            raise TvmcompressError(f"bad --prune step '{token}': the scope is 'layer' or 'global', got '{scope}'")
        return PruneStep("unstructured", _fraction(parts[1], token, "the sparsity"), scope=scope)
    if kind == "channel" and len(parts) == 2:
        return PruneStep("channel", _fraction(parts[1], token, "the ratio"))
    if kind == "layer" and len(parts) == 2:
        return PruneStep("layer", float(_positive_int(parts[1], token, "the number of blocks")))
    if kind == "block" and len(parts) == 3:
        rows, x, cols = parts[2].partition("x")
        if not x:
            raise TvmcompressError(f"bad --prune step '{token}': the block shape is RxC, such as 1x4 or 4x4")
        block = (_positive_int(rows, token, "the block rows"), _positive_int(cols, token, "the block columns"))
        return PruneStep("block", _fraction(parts[1], token, "the sparsity"), block=block)
    if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
        n, m = int(parts[0]), int(parts[1])
        if not 1 <= n < m:
            raise TvmcompressError(f"bad --prune step '{token}': N:M keeps N of every M weights, 1 <= N < M (2:4)")
        return PruneStep("nm", n=n, m=m)
    raise TvmcompressError(f"bad --prune step '{token}': {_SPEC_HELP}")


def parse_prune_spec(spec: str) -> tuple[PruneStep, ...]:
    """`channel:0.5,unstructured:0.8` -> steps in STEP_ORDER. Each kind may appear once."""
    tokens = [t.strip() for t in spec.split(",") if t.strip()]
    if not tokens:
        raise TvmcompressError(f"empty --prune spec: {_SPEC_HELP}")
    steps = [_parse_step(t) for t in tokens]
    kinds = [s.kind for s in steps]
    for kind in STEP_ORDER:
        if kinds.count(kind) > 1:
            raise TvmcompressError(f"--prune names '{kind}' twice in '{spec}': give each kind of step once")
    if "block" in kinds and "nm" in kinds:
        raise TvmcompressError(f"--prune '{spec}' asks for both block and N:M sparsity: choose one")
    return tuple(sorted(steps, key=lambda s: STEP_ORDER.index(s.kind)))


@dataclass(frozen=True)
class PruneConfig:
    """What to prune and how.

    - `steps`: parsed from a spec (`PruneConfig.parse("channel:0.5")`), run in STEP_ORDER.
    - `criterion`: how channels and weights are ranked (see the module docstring).
    - `reconstruct`: after channel and unstructured pruning, re-fit the following (channel) or the pruned
      (unstructured) layers' weights by ridge least squares so that their outputs on the calibration data match
      the unpruned model's; for unstructured, each layer's surviving weights (as many as the criterion's mask
      keeps) are first re-chosen by their effect on its output, w^2 * E[x^2]. Needs calibration data; without it
      this flag is ignored (the record's `reconstructed` says so).
    - `multiple_of`: kept channel counts are rounded to a multiple of this (8: one AVX2 float32 vector), where a
      layer has at least 2 * multiple_of channels, so that pruned layers stay vectorizable and latency falls with
      the MACs.
    - `ridge`: relative Tikhonov regularization of reconstruction (times the mean diagonal of X^T X).
    - `overrides`: ((step kind, name, ratio), ...) replacing the spec's amount for one channel group (named by the
      binding of its first source conv/matmul; `channel`) or one layer (its binding; `unstructured`, per-layer
      sparsity whatever the scope). `--prune-budget` chooses them (passes/prune_budget.py) and the manifest
      records them, so that a budgeted result can be rebuilt exactly. 0 leaves the group / layer whole.
    """

    steps: tuple[PruneStep, ...] = ()
    criterion: Criterion = "l1"
    reconstruct: bool = True
    multiple_of: int = 8
    ridge: float = 1e-3
    overrides: tuple[tuple[str, str, float], ...] = ()

    def __post_init__(self):
        if self.criterion not in CRITERIA:
            raise TvmcompressError(f"unknown pruning criterion {self.criterion!r}: use one of {', '.join(CRITERIA)}")
        if not isinstance(self.steps, tuple) or not all(isinstance(s, PruneStep) for s in self.steps):
            raise TvmcompressError("PruneConfig.steps must be a tuple of PruneStep (use PruneConfig.parse)")
        if self.multiple_of < 1:
            raise TvmcompressError(f"multiple_of must be at least 1, got {self.multiple_of}")
        if not self.ridge >= 0.0:
            raise TvmcompressError(f"ridge must be >= 0, got {self.ridge}")
        seen = set()
        for override in self.overrides:
            if not (isinstance(override, tuple) and len(override) == 3):
                raise TvmcompressError(f"a pruning override is (step kind, name, ratio), got {override!r}")
            kind, name, ratio = override
            if kind not in OVERRIDABLE or self.step(kind) is None:
                raise TvmcompressError(f"pruning override {override!r}: the spec {self.spec!r} has no '{kind}' step "
                                       f"(overrides apply to {' and '.join(OVERRIDABLE)} steps)")
            if not 0.0 <= ratio < 1.0:
                raise TvmcompressError(f"pruning override {override!r}: the ratio must be in [0, 1)")
            if (kind, name) in seen:
                raise TvmcompressError(f"pruning override for {kind} {name!r} is given twice")
            seen.add((kind, name))

    @classmethod
    def parse(cls, spec: str, criterion: str = "l1", reconstruct: bool = True) -> "PruneConfig":
        return cls(parse_prune_spec(spec), criterion, reconstruct)

    def step(self, kind: str) -> PruneStep | None:
        return next((s for s in self.steps if s.kind == kind), None)

    def ratios(self, kind: str) -> dict[str, float]:
        """{group or layer name: ratio} of the overrides of one step kind."""
        return {name: ratio for k, name, ratio in self.overrides if k == kind}

    @property
    def needs_calibration(self) -> bool:
        return self.criterion == "activation"

    @property
    def spec(self) -> str:
        return ",".join(str(s) for s in self.steps)

    def to_json(self) -> dict:
        data = {"spec": self.spec, "criterion": self.criterion, "reconstruct": self.reconstruct,
                "multiple_of": self.multiple_of, "ridge": self.ridge}
        if self.overrides:  # only when set: plain specs keep their manifests (and cache keys) unchanged
            data["overrides"] = [{"step": kind, "name": name, "ratio": ratio} for kind, name, ratio in self.overrides]
        return data

    def to_dict(self) -> dict:
        """Plain values (a recipe's [options.prune] table); from_dict gives back an equal config."""
        return self.to_json()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PruneConfig":
        known = ("spec", "criterion", "reconstruct", "multiple_of", "ridge", "overrides")
        unknown = sorted(set(data) - set(known))
        if unknown or "spec" not in data:
            raise TvmcompressError(f"prune needs 'spec' (such as 'channel:0.5') and takes {', '.join(known[1:])}; "
                                   f"got {', '.join(sorted(data)) or 'nothing'}")
        overrides = tuple((o["step"], o["name"], float(o["ratio"])) for o in data.get("overrides", ()))
        rest = {k: data[k] for k in known[1:-1] if k in data}
        return cls(parse_prune_spec(data["spec"]), overrides=overrides, **rest)
