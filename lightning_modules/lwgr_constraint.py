"""LWGR's constrained training (arXiv 2605.18771, §4.3.2, Eq. 12-20): never fall behind the reference model.

- ``sid_score`` (Eq. 12): s(u) = the mean log-probability of the target's SID tokens under a model (teacher forced).
- ``margin`` (Eq. 13-14): C_u = max(0, s_ref(u) - s_theta(u) - delta), the per-sample shortfall against the frozen
  reference theta_ref beyond a tolerance delta; C(theta) = its batch mean. The constraint is C(theta) <= epsilon.
- ``Lagrangian`` (Eq. 15, 17-20): min_theta max_{lambda >= 0} L_rec(theta) + lambda (C(theta) - epsilon). The primal
  step is the optimiser's on L_rec + lambda C; the dual step, once per optimiser step, is projected gradient ascent
  lambda <- max(0, lambda + eta_lambda (C - epsilon)) with its own learning rate (paper: lambda_0 0.05, eta_lambda
  5e-4, delta 1e-4). ``mode: fixed`` is the fixed-beta penalty of Eq. 16 (L_rec + beta C, no dual step) and
  ``mode: none`` drops the constraint (L_rec alone): the ablations of the paper's Table 3.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MODES = ("lagrangian", "fixed", "none")


def sid_score(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 12: ``logits`` [B, L, V], ``labels`` [B, L] -> mean log-probability of the labels per sample [B]."""
    logp = F.log_softmax(logits.float(), -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return logp.mean(-1)


def margin(s_theta: torch.Tensor, s_ref: torch.Tensor, delta: float) -> torch.Tensor:
    """Eq. 13-14: per-sample C_u = max(0, s_ref - s_theta - delta) [B] (s_ref carries no gradient)."""
    return (s_ref.detach() - s_theta - delta).clamp(min=0)


def dual_update(lam: float, constraint: float, epsilon: float, lr: float) -> float:
    """Eq. 19-20: projected dual ascent, lambda <- max(0, lambda + lr (C - epsilon))."""
    return max(0.0, lam + lr * (constraint - epsilon))


class Lagrangian:
    """The constraint's state: lambda, the running mean of C over the micro-batches of one optimiser step, and the
    trace of (step, C, lambda) the result keeps."""

    def __init__(self, mode: str = "lagrangian", lambda0: float = 0.05, lr: float = 5e-4, epsilon: float = 0.0,
                 delta: float = 1e-4, beta: float | None = None, trace_points: int = 2000) -> None:
        if mode not in MODES:
            raise ValueError(f"model.params.constraint.mode must be one of {MODES}, got {mode!r}")
        if lambda0 < 0 or lr < 0:
            raise ValueError(f"model.params.constraint: lambda0 and lr must be >= 0, got {lambda0} and {lr}")
        self.mode, self.lam, self.lr, self.epsilon, self.delta = mode, float(lambda0), float(lr), float(epsilon), delta
        self.lambda0 = float(lambda0)
        self.beta = float(lambda0 if beta is None else beta)
        self.trace_points = trace_points
        self.trace: list[tuple[int, float, float]] = []
        self._sum, self._n, self._steps, self._stride = 0.0, 0, 0, 1

    @property
    def weight(self) -> float:
        """The multiplier of C(theta) in this step's loss."""
        return {"lagrangian": self.lam, "fixed": self.beta, "none": 0.0}[self.mode]

    def loss(self, rec: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """L_rec + weight * C(theta); C is remembered for the dual step."""
        self._sum, self._n = self._sum + float(c.detach()), self._n + 1
        return rec + self.weight * c if self.weight else rec

    def step(self, global_step: int, constraint: float | None = None) -> tuple[float, float]:
        """End of an optimiser step: C = the mean over its micro-batches (or ``constraint``, e.g. averaged over
        ranks), the dual update (lagrangian mode) and a trace point; returns ``(C, lambda)``."""
        c = constraint if constraint is not None else self._sum / max(self._n, 1)
        self._sum, self._n = 0.0, 0
        if self.mode == "lagrangian":
            self.lam = dual_update(self.lam, c, self.epsilon, self.lr)
        if self._steps % self._stride == 0:
            self.trace.append((int(global_step), float(c), float(self.weight)))
            if len(self.trace) > self.trace_points:    # every other point from now on: bounded and evenly spread
                self.trace, self._stride = self.trace[::2], self._stride * 2
        self._steps += 1
        return c, self.weight

    def pending(self) -> float:
        return self._sum / max(self._n, 1)
