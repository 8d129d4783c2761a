"""Which groups are held out for evaluation: a fixed fraction chosen by a stable hash of ``group_id``.

A group is held out when :func:`schemas.stable_fraction` of its id (``sha256(group_id)`` read as a number
in ``[0, 1)``) falls below ``holdout``.
The choice depends on nothing but the id, so it is the same for every seed, rank, language selection and
shard layout, and it never changes between a training run and its evaluation. It is also monotone: the
groups held out at ``holdout = 0.05`` are among those held out at ``0.1``, so evaluating with a fraction no
larger than the one training used never scores a group that was trained on.
"""

from __future__ import annotations

from typing import Literal, get_args

from schemas import ConfigError, stable_fraction

Split = Literal["train", "eval", "all"]
SPLITS: tuple[Split, ...] = get_args(Split)


def in_split(group_id: str, split: Split, holdout: float) -> bool:
    """Whether ``group_id`` belongs to ``split``: ``eval`` are the held-out groups, ``train`` the others."""
    if split == "all":
        return True
    return (stable_fraction(group_id) < holdout) == (split == "eval")


def check_split(split: str, holdout: float) -> None:
    """Refuse a split that cannot select anything, naming the value to change."""
    if split not in SPLITS:
        msg = f"split={split!r} is invalid: expected one of {SPLITS}"
        raise ValueError(msg)
    if not 0 <= holdout < 1:
        msg = f"holdout={holdout} is invalid: expected a fraction of groups in [0, 1)"
        raise ValueError(msg)
    if split == "eval" and holdout == 0:
        msg = "split='eval' selects the held-out groups, but holdout=0 holds none out: set holdout > 0 or split='all'"
        raise ConfigError(msg)
