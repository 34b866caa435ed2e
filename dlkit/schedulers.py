"""Learning-rate schedules that ``torch.optim.lr_scheduler`` builds from parts but has no name for.

Each is a plain function of the optimiser returning a torch scheduler, so a Hydra
config can name it (``_target_``, ``_partial_: true``) like torch's own, and its
state (including every part's) goes into checkpoints as usual.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR

__all__ = ["warmup_cosine"]


def warmup_cosine(
    optimizer: Optimizer,
    T_max: int,
    warmup: int | None = None,
    start_factor: float = 0.01,
    eta_min: float = 0.0,
) -> LRScheduler:
    """Linear warm-up from ``start_factor * lr`` to ``lr``, then cosine annealing to ``eta_min``.

    The usual recipe for large batches and fresh heads on pretrained backbones (Goyal
    et al., 2017): the first updates, taken while batch-norm statistics and the loss
    surface are far from settled, use a small rate. Intervals are epochs, or optimiser
    steps when the task steps its scheduler per step (``task.scheduler_interval=step``).

    Args:
        optimizer: The optimiser whose rate is scheduled.
        T_max: Length of the whole schedule, warm-up included (dlkit fills a null
            ``T_max`` with ``trainer.max_epochs``, or the run's steps).
        warmup: Intervals of linear warm-up; 0 gives plain cosine annealing. Defaults
            to 5 % of ``T_max``, at least one interval when ``T_max > 1``, so the default
            fits a run of any length.
        start_factor: Fraction of ``lr`` the warm-up starts from, in (0, 1].
        eta_min: Rate at the end of the schedule.

    Returns:
        A ``SequentialLR`` of ``LinearLR`` and ``CosineAnnealingLR``.

    Raises:
        ValueError: ``warmup`` not in ``[0, T_max)`` or ``start_factor`` not in (0, 1]
            (the message names the ``scheduler.*`` key).

    Example:
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
        >>> sched = warmup_cosine(opt, T_max=10, warmup=2)
        >>> rates = []
        >>> for _ in range(10):
        ...     rates.append(round(opt.param_groups[0]["lr"], 4))
        ...     opt.step()
        ...     sched.step()
        >>> rates[:4]
        [0.001, 0.0505, 0.1, 0.0962]
    """
    if warmup is None:
        warmup = min(max(1, round(0.05 * T_max)), T_max - 1)
    if not 0 <= warmup < T_max:
        raise ValueError(
            f"scheduler.warmup must lie in [0, T_max) = [0, {T_max}), got {warmup}: the warm-up has to end "
            "before the schedule does (T_max is trainer.max_epochs, or the run's steps, unless set)."
        )
    if not 0 < start_factor <= 1:
        raise ValueError(f"scheduler.start_factor must lie in (0, 1], got {start_factor}.")
    cosine = CosineAnnealingLR(optimizer, T_max=T_max - warmup, eta_min=eta_min)
    if warmup == 0:
        return cosine
    linear = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, schedulers=[linear, cosine], milestones=[warmup])
