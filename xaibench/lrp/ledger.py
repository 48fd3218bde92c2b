"""The conservation ledger: where every unit of relevance went, layer by layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LedgerRow:
    layer: str            # the module path or the function node
    kind: str             # module type or function
    rule: str             # the rule applied
    relevance_out: torch.Tensor   # relevance arriving at the layer's output, per sample
    relevance_in: torch.Tensor    # relevance passed to the layer's inputs
    absorbed_bias: torch.Tensor
    absorbed_stabilizer: torch.Tensor
    absorbed_dropped: torch.Tensor
    absorbed_constant: torch.Tensor

    @property
    def absorbed(self) -> torch.Tensor:
        return self.absorbed_bias + self.absorbed_stabilizer + self.absorbed_dropped + self.absorbed_constant

    @property
    def residual(self) -> torch.Tensor:
        """relevance_out - relevance_in - absorbed: zero up to rounding for a correct rule."""
        return self.relevance_out - self.relevance_in - self.absorbed


class Ledger:
    """Rows from the explained output back to the input, each with per-sample sums shaped
    like Explanation.output ([B] or [B, T])."""

    columns = ("layer", "kind", "rule", "relevance_out", "relevance_in", "absorbed",
               "absorbed_bias", "absorbed_stabilizer", "absorbed_dropped", "absorbed_constant")

    def __init__(self, rows: list[LedgerRow]):
        self.rows = rows

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def absorbed(self) -> torch.Tensor:
        """Total absorbed relevance per sample."""
        if not self.rows:
            return 0.0
        return sum(row.absorbed for row in self.rows)

    def to_frame(self):
        """One line per layer and sample (and target): a pandas DataFrame."""
        import pandas as pd

        records = []
        for order, row in enumerate(self.rows):
            flat = {c: getattr(row, c).detach().reshape(-1).double().cpu()
                    for c in self.columns[3:]}
            shape = row.relevance_out.shape
            for k in range(flat["relevance_out"].shape[0]):
                sample, target = (k, 0) if len(shape) == 1 else divmod(k, shape[1])
                record = {"order": order, "layer": row.layer, "kind": row.kind, "rule": row.rule,
                          "sample": sample, "target": target}
                record.update({c: float(v[k]) for c, v in flat.items()})
                records.append(record)
        return pd.DataFrame.from_records(records)

    def summary(self):
        """Per layer: relevance and absorption summed over samples, as a DataFrame."""
        frame = self.to_frame()
        numeric = list(self.columns[3:])
        return frame.groupby(["order", "layer", "kind", "rule"], sort=True)[numeric].sum().reset_index()

    def __str__(self):
        lines = [f"{'layer':<28} {'rule':<40} {'R_out':>12} {'R_in':>12} {'absorbed':>12}"]
        for row in self.rows:
            lines.append(
                f"{row.layer[:28]:<28} {row.rule[:40]:<40} {float(row.relevance_out.sum()):>12.6g} "
                f"{float(row.relevance_in.sum()):>12.6g} {float(row.absorbed.sum()):>12.6g}")
        return "\n".join(lines)
