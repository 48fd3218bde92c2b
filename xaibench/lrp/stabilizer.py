"""The stabilizer convention shared by every rule.

A denominator z is replaced by z + epsilon * sign(z) with sign(0) = +1, so a zero
denominator becomes +epsilon. This is zennit's convention; innvestigate uses the same
shift but with sign(0) = -1 in some rules. The shift itself is returned too, because
the relevance it swallows is booked in the ledger as absorbed by the stabilizer.
"""

import torch


def stabilize(denominator: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (stabilized denominator, the added shift)."""
    step = denominator.new_tensor(epsilon)  # 0-d, in the denominator's dtype and device
    shift = torch.where(denominator >= 0, step, -step)
    return denominator + shift, shift
