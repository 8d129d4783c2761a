"""The optimizer of a run: AdamW with weight decay on matrices only, fused where the parameters allow."""

from __future__ import annotations

import torch


def adamw(model: torch.nn.Module, *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``model``, ``weight_decay`` on matrices only: decaying norms
    and biases only hurts.

    The fused kernel (one pass over each parameter instead of a dozen elementwise ops) on a CPU or a GPU,
    as ``transformers.Trainer`` uses by default.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in params)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, fused=fused)
