"""A slow, independent re-implementation of the LRP rules with dense matrices (float64).

Used only to check the engine: every layer is turned into its matrix M (out x in) and bias
b by evaluating the torch module itself on unit vectors, and the rules are written from
their textbook formulas on the contribution matrix z_ji = M_ji x_i. Nothing here shares
code with the engine's operators, streams or graph walk.
"""

from __future__ import annotations

import torch


def layer_matrix(function, input_shape) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, b) with function(x).flatten() = M @ x.flatten() + b for an affine map, from
    evaluations of the function on 0 and on every unit vector (float64)."""
    n = 1
    for s in input_shape:
        n *= s
    with torch.no_grad():
        zero = torch.zeros((1,) + tuple(input_shape), dtype=torch.float64)
        bias = function(zero).reshape(-1)
        basis = torch.eye(n, dtype=torch.float64).reshape((n,) + tuple(input_shape))
        columns = function(basis).reshape(n, -1) - bias
    return columns.T.contiguous(), bias


def local_matrix(function, x) -> torch.Tensor:
    """The Jacobian of function at one sample x (for max pooling: the winners)."""
    jac = torch.autograd.functional.jacobian(lambda t: function(t.unsqueeze(0)).reshape(-1), x)
    return jac.reshape(jac.shape[0], -1)


def _stabilize(d, eps):
    return d + eps * torch.where(d >= 0, 1.0, -1.0).to(d.dtype)


def relevance(rule: str, M, b, x, r_out, *, epsilon=1e-6, stabilizer=1e-6, gamma=0.25, alpha=1.0,
              beta=0.0, bias=True, low=None, high=None):
    """Relevance at the input (flat, [n_in]) of one sample for relevance r_out ([n_out])."""
    Z = M * x[None, :]
    b_used = b if bias else torch.zeros_like(b)
    if rule in ("epsilon", "z", "norm"):
        eps = epsilon if rule == "epsilon" else stabilizer
        if rule == "norm":
            b_used = torch.zeros_like(b)
        den = _stabilize(Z.sum(1) + b_used, eps)
        return (Z / den[:, None] * r_out[:, None]).sum(0)
    if rule in ("alpha_beta", "zplus"):
        if rule == "zplus":
            alpha, beta = 1.0, 0.0
        Zp, Zn = Z.clamp(min=0), Z.clamp(max=0)
        den_p = _stabilize(Zp.sum(1) + b_used.clamp(min=0), stabilizer)
        den_n = _stabilize(Zn.sum(1) + b_used.clamp(max=0), stabilizer)
        return ((alpha * Zp / den_p[:, None] - beta * Zn / den_n[:, None]) * r_out[:, None]).sum(0)
    if rule == "gamma":
        z = Z.sum(1) + b  # the sign test uses the layer's true output, bias included
        up = Z + gamma * Z.clamp(min=0)
        down = Z + gamma * Z.clamp(max=0)
        den_up = _stabilize(up.sum(1) + b_used + gamma * b_used.clamp(min=0), stabilizer)
        den_down = _stabilize(down.sum(1) + b_used + gamma * b_used.clamp(max=0), stabilizer)
        pos = (z > 0).to(Z.dtype)[:, None]
        neg = (z < 0).to(Z.dtype)[:, None]
        share = pos * up / den_up[:, None] + neg * down / den_down[:, None]
        return (share * r_out[:, None]).sum(0)
    if rule == "zbox":
        Zb = Z - M.clamp(min=0) * low[None, :] - M.clamp(max=0) * high[None, :]
        den = _stabilize(Zb.sum(1), stabilizer)
        return (Zb / den[:, None] * r_out[:, None]).sum(0)
    if rule == "wsquare":
        W2 = M * M
        den = _stabilize(W2.sum(1) + (b_used * b_used), stabilizer)
        return (W2 / den[:, None] * r_out[:, None]).sum(0)
    if rule == "flat":
        ones = (M != 0).to(M.dtype)
        den = _stabilize(ones.sum(1), stabilizer)
        return (ones / den[:, None] * r_out[:, None]).sum(0)
    if rule == "gradient":
        return M.T @ r_out
    if rule == "identity":  # elementwise steps that pass relevance on (scaling by a number)
        return r_out.clone()
    raise ValueError(f"no reference for rule {rule!r}")


def engine_vs_reference(module, input_shape, method: str, options: dict, rule: str, rule_options: dict,
                        *, batch=2, targets=2, seed=0, bounds=(-3.0, 3.0), reference_function=None) -> float:
    """Largest error, relative to max(1, |reference|), between the engine's relevance and the
    reference for one layer, a random input (with exact zeros) and a random output relevance
    for several targets at once. The layer is run through the whole engine path."""
    from .composites import composite as build_composite
    from .graph import trace

    module = module.double()
    comp = build_composite(method, **options)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch,) + tuple(input_shape), generator=g, dtype=torch.float64)
    x[torch.rand(x.shape, generator=g) < 0.15] = 0.0
    graph = trace(torch.nn.Sequential(module)).to(torch.float64, x.device)
    state = {"composite": comp}
    values = graph.forward(x, state)
    if comp.needs_bounds():
        low, high = torch.full_like(x, bounds[0]), torch.full_like(x, bounds[1])
        for name, (layer_low, layer_high) in graph.map_bounds(low, high, values).items():
            state[("bounds", name)] = {"low": layer_low, "high": layer_high}
    output = values[graph.explained_name]
    r_out = torch.randn((targets * batch,) + tuple(output.shape[1:]), generator=g, dtype=torch.float64)
    relevance_in, _ = graph.relevance(values, r_out, state)
    worst = 0.0
    for row in range(targets * batch):
        sample = x[row % batch]
        if rule == "gradient":
            M = local_matrix(reference_function or module, sample)
            b = torch.zeros(M.shape[0], dtype=torch.float64)
        else:
            M, b = layer_matrix(reference_function or module, input_shape)
        extra = dict(rule_options)
        if rule == "zbox":
            extra["low"] = torch.full((M.shape[1],), bounds[0], dtype=torch.float64)
            extra["high"] = torch.full((M.shape[1],), bounds[1], dtype=torch.float64)
        if rule == "norm":
            extra.setdefault("stabilizer", comp.norm_stabilizer)
        expected = relevance(rule, M, b, sample.reshape(-1), r_out[row].reshape(-1),
                             bias=options.get("bias", True), **extra)
        error = (relevance_in[row].reshape(-1) - expected).abs().max() / max(1.0, float(expected.abs().max()))
        worst = max(worst, float(error))
    return worst
