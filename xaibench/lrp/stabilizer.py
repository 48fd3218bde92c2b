"""The stabilizer convention shared by every rule.

A denominator z is replaced by z + epsilon * sign(z) with sign(0) = +1, so a zero
denominator becomes +epsilon. This is zennit's convention; innvestigate uses the same
shift but with sign(0) = -1 in some rules. The shift itself is returned too, because
the relevance it swallows is booked in the ledger as absorbed by the stabilizer.

The shift is copysign(epsilon, z): one vectorized pass, where torch.where with a boolean
mask took 5x as long as the division it serves (radar N=3: 21 ms against 4 ms per call on one
thread). copysign reads the sign bit, so z = -0.0 gets -epsilon. That never changes a
relevance or the ledger: a sum is -0.0 only when every term of it is a zero (x + (-x) and
0.0 + (-0.0) are +0.0), so every input's share x_i w_ij R_j / (z_j + shift_j) is a zero
whatever the sign of the shift, and the stabilizer absorbs R_j whole either way
(shift_j / (0 + shift_j) = 1). tests/test_stabilizer.py checks both.
"""

import torch


def stabilize(denominator: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (stabilized denominator, the added shift)."""
    step = denominator.new_tensor(epsilon)  # 0-d, in the denominator's dtype and device
    shift = torch.copysign(step, denominator)
    return denominator + shift, shift
