"""Relevance vs adjoint sensitivity: the XAIRT study (docs/papers.md section 5) in a controlled setting.

    xaibench adjoint --config '{"days": 12000, ...}' --out results/adjoint
    xaibench adjoint-figure --maps results/adjoint/maps.nc --lag 60 --out results/figures/adjoint_lag60.png

The experiment (run_experiment):
1. The linear ocean model of xaibench.studies.adjoint.ocean, driven by seeded, spatially correlated
   atmospheric noise, runs twice from the same noise: with the atmospheric bridge (NE Pacific
   forcing driven by tropical Atlantic SST, not part of the ocean operator A) and without.
2. Per lag: samples are the SST anomaly maps at t - lag (every sample_every_days days), labels
   the sign of Q(t), the NE Pacific SST anomaly averaged over a box and a centred running mean
   of window_days. Chronological train / validation / test split with gaps of window + lag
   days between the parts (a running mean must not straddle two parts).
3. The XAIRT network (Dense 8 ReLU -> Dense 8 ReLU -> Dense 2, L2 per layer 10 / 0.01 / 0 as in
   Keras' kernel_regularizer, SGD with Nesterov momentum, the epoch with the lowest validation
   cross-entropy kept) is trained per lag and bridge setting, `networks` times with different
   seeds (the same seeds with the bridge on and off).
4. Correctly classified test samples are explained for their class with the native LRP engine:
   `lrp.alpha1beta0_zbox` (alpha1-beta0 with the bias ignored on every dense layer and z^B on
   the first, bounds = each input's min and max over the lag's samples: innvestigate's
   lrp.alpha_1_beta_0_IB with a bounded first layer, as in the study) and `lrp.epsilon`.
   Each map is divided by its max |relevance| and the maps are averaged (the study's composite).
5. Per lag, bridge and method: the cos(lat)-weighted pattern correlation of the composite with
   the adjoint sensitivity dQ(t)/dT(t - lag) (and with sensitivity x the anomaly std); the
   remote fraction, the share of the mean |normalized relevance| on ocean cells the adjoint
   does not reach (sensitivity below reach_threshold x its max at that lag); the share in the
   bridge's source region; and the remote fraction of |composite| (remote relevance that is
   consistent across samples, not noise that cancels). In our model the sensitivity is >= 0
   everywhere (A has no negative entries) and relevance for the predicted class is mostly
   positive, so the signs compare.
   (alpha1-beta0 with z^B gives every input relevance of the sign of the explained logit: z^B's
   terms (x - low) w+ + (high - x) |w-| are >= 0 whatever x is, so it spreads relevance over
   every cell, a floor under its remote fraction that no composite cancels.)

Remote relevance with the bridge on minus with it off is attributable to the bridge; remote
relevance with the bridge off has no physical path to Q in the model: it is spurious
(remote_attribution.csv). Everything here is synthetic: only the coastlines are real.

Files: comparison.csv (one row per lag, bridge, method: means over the networks and the
standard deviation of the main numbers), comparison_networks.csv (one row per network),
remote_attribution.csv, maps.nc (sensitivity, composites averaged over the networks).
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import numpy as np

from xaibench.errors import InputError
from xaibench.progress import Progress

#: the experiment's settings and their defaults (workflows/config/schema.yaml's `adjoint` entry
#: repeats them; tests/test_adjoint.py checks that the two agree)
DEFAULTS = {
    "seed": 0,
    "resolution_deg": 4.0,
    "days": 12000,
    "spinup_days": 365,
    "sample_every_days": 3,
    "lags_days": [15, 60, 120],
    "window_days": 61,
    "reach_threshold": 0.01,
    "max_explained": 2000,
    "networks": 1,
    "qoi": {"region": [40.0, 50.0, 225.0, 237.0]},
    "ocean": {"damping_days": 90.0, "diffusivity_m2_s": 5.0e4, "equatorial_speed_m_s": 1.0,
              "coastal_speed_m_s": 0.8, "drift_speed_m_s": 0.05},
    "forcing": {"std_K_per_day": 0.1, "correlation_length_km": 1500.0},
    "bridge": {"source": [5.0, 25.0, 300.0, 340.0], "gain_per_day": 0.02, "lag_days": 10,
               "target_radius_km": 1500.0},
    "training": {"epochs": 40, "batch_size": 128, "lr": 0.01, "momentum": 0.9, "l2": [10.0, 0.01, 0.0],
                 "hidden": 8, "validation_fraction": 0.2, "test_fraction": 0.2},
}

#: the explanation methods compared: name in the tables -> what it is
METHODS = {
    "lrp.alpha1beta0_zbox": "alpha1-beta0 ignoring the bias, z^B on the first layer (innvestigate "
                            "lrp.alpha_1_beta_0_IB with a bounded first layer, the XAIRT study's choice)",
    "lrp.epsilon": "LRP-epsilon (epsilon 0.1) on every layer, bias included",
}

BRIDGE_SETTINGS = ("on", "off")


# ---------------------------------------------------------------------------------------------
# Configuration


def resolve_config(config=None) -> dict:
    """DEFAULTS updated with `config` (nested dicts merged one level deep); InputError names an
    unknown key or a bad value."""
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise InputError(f"the adjoint configuration must be a mapping, got {type(config).__name__}")
    resolved = copy.deepcopy(DEFAULTS)
    for key, value in config.items():
        if key not in DEFAULTS:
            raise InputError(f"unknown adjoint setting '{key}'; known: {', '.join(DEFAULTS)}")
        if isinstance(DEFAULTS[key], dict):
            if not isinstance(value, dict):
                raise InputError(f"adjoint setting '{key}' must be a mapping, got {value!r}")
            unknown = set(value) - set(DEFAULTS[key])
            if unknown:
                raise InputError(f"unknown adjoint.{key} setting(s) {sorted(unknown)}; known: "
                                 f"{', '.join(DEFAULTS[key])}")
            resolved[key].update(value)
        else:
            resolved[key] = value
    _check_config(resolved)
    return resolved


def _check_config(c: dict) -> None:
    def whole(name, value, minimum):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise InputError(f"adjoint setting {name} must be a whole number >= {minimum}, got {value!r}")

    def positive(name, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise InputError(f"adjoint setting {name} must be a positive number, got {value!r}")

    whole("seed", c["seed"], 0)
    positive("resolution_deg", c["resolution_deg"])
    whole("days", c["days"], 1)
    whole("spinup_days", c["spinup_days"], 0)
    whole("sample_every_days", c["sample_every_days"], 1)
    whole("window_days", c["window_days"], 1)
    if c["window_days"] % 2 == 0:
        raise InputError(f"adjoint setting window_days must be odd (a centred running mean), got {c['window_days']}")
    whole("max_explained", c["max_explained"], 1)
    whole("networks", c["networks"], 1)
    lags = c["lags_days"]
    if not isinstance(lags, list) or not lags or len(set(lags)) != len(lags):
        raise InputError(f"adjoint setting lags_days must be a non-empty list of distinct lags, got {lags!r}")
    for lag in lags:
        whole("lags_days[]", lag, 0)
    threshold = c["reach_threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise InputError(f"adjoint setting reach_threshold must be in (0, 1), got {threshold!r}")
    training = c["training"]
    for name in ("epochs", "batch_size", "hidden"):
        whole(f"training.{name}", training[name], 1)
    positive("training.lr", training["lr"])
    if not 0 <= training["momentum"] < 1:
        raise InputError(f"adjoint setting training.momentum must be in [0, 1), got {training['momentum']!r}")
    l2 = training["l2"]
    if not isinstance(l2, list) or len(l2) != 3 or any(not isinstance(v, (int, float)) or v < 0 for v in l2):
        raise InputError(f"adjoint setting training.l2 must be three non-negative numbers (one per layer), got {l2!r}")
    fractions = (training["validation_fraction"], training["test_fraction"])
    if any(not 0 < f < 0.5 for f in fractions):
        raise InputError(f"validation_fraction and test_fraction must be in (0, 0.5), got {fractions}")
    margin = max(lags) + c["window_days"]
    if c["days"] < 10 * margin:
        raise InputError(f"adjoint setting days={c['days']} is too short for lags up to {max(lags)} and a "
                         f"{c['window_days']}-day window: give at least {10 * margin} days")
    region = c["qoi"]["region"]
    if not isinstance(region, list) or len(region) != 4:
        raise InputError(f"adjoint setting qoi.region must be [lat_min, lat_max, lon_min, lon_max], got {region!r}")


# ---------------------------------------------------------------------------------------------
# The network and its training


def xairt_network(n_inputs: int, hidden: int = 8):
    """Dense(hidden) ReLU -> Dense(hidden) ReLU -> Dense(2) logits (the softmax belongs to the
    loss; LRP explains the logits, as innvestigate does after stripping the softmax).
    Keras' default initialisation: Glorot-uniform weights, zero biases."""
    from torch import nn

    network = nn.Sequential(nn.Linear(n_inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                            nn.Linear(hidden, 2))
    for layer in network:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return network


def train_network(x_train, y_train, x_validation, y_validation, training: dict, seed: int):
    """Seeded SGD (Nesterov) on cross-entropy + sum_k l2_k ||W_k||^2 (Keras' L2 on the kernels);
    returns the network of the epoch with the lowest validation cross-entropy and its history."""
    import torch
    from torch.nn import functional as F

    torch.manual_seed(seed)
    network = xairt_network(x_train.shape[1], training["hidden"])
    optimizer = torch.optim.SGD(network.parameters(), lr=training["lr"], momentum=training["momentum"],
                                nesterov=training["momentum"] > 0)
    kernels = [layer.weight for layer in network if isinstance(layer, torch.nn.Linear)]
    shuffler = torch.Generator().manual_seed(seed)
    best = (math.inf, -1, None)
    history = []
    for epoch in range(training["epochs"]):
        network.train()
        order = torch.randperm(x_train.shape[0], generator=shuffler)
        for start in range(0, order.numel(), training["batch_size"]):
            batch = order[start:start + training["batch_size"]]
            loss = F.cross_entropy(network(x_train[batch]), y_train[batch])
            loss = loss + sum(l2 * (w * w).sum() for l2, w in zip(training["l2"], kernels) if l2 > 0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        network.eval()
        with torch.no_grad():
            validation_loss = float(F.cross_entropy(network(x_validation), y_validation))
        history.append(validation_loss)
        if validation_loss < best[0]:
            best = (validation_loss, epoch, copy.deepcopy(network.state_dict()))
    network.load_state_dict(best[2])
    network.eval()
    return network, {"best_epoch": best[1], "validation_loss": best[0], "history": history}


def _accuracy(network, x, y) -> float:
    import torch

    with torch.no_grad():
        return float((network(x).argmax(1) == y).double().mean())


# ---------------------------------------------------------------------------------------------
# Explanations and the comparison


def explain_composite(network, x, target, method: str, low, high):
    """Relevance [n, n_inputs] (float64) of the native engine for the given classes.

    lrp.alpha1beta0_zbox is the engine's lrp.zbox with bias=False: z^B on the first layer and z+
    (= alpha1-beta0) on the others, every bias ignored, i.e. innvestigate's
    lrp.alpha_1_beta_0_IB with a bounded input layer, as the study ran it."""
    import torch

    from xaibench.api import explain

    if method == "lrp.alpha1beta0_zbox":
        explanation = explain(network, x, "lrp.zbox", target=target, dtype=torch.float64, low=low, high=high,
                              bias=False)
    elif method == "lrp.epsilon":
        explanation = explain(network, x, "lrp.epsilon", target=target, dtype=torch.float64)
    else:
        raise InputError(f"unknown method '{method}'; known: {', '.join(METHODS)}")
    return explanation.relevance.detach().numpy()


def normalized_maps(relevance: np.ndarray) -> np.ndarray:
    """Each map divided by its max |relevance| (the study's normalization); all-zero maps dropped."""
    peak = np.abs(relevance).max(axis=1)
    keep = peak > 0
    return relevance[keep] / peak[keep, None]


def comparison_metrics(composite, mean_absolute, sensitivity, anomaly_std, cell_lat, reached, bridge_source) -> dict:
    """The numbers of one (lag, bridge, method) row (all maps over ocean cells)."""
    from xaibench import metrics
    def correlation(a, b):  # maps shaped [cells, 1] with each cell's latitude: cos(lat) weights
        return float(metrics.pattern_correlation(a[:, None], b[:, None], cell_lat))

    def share(values, where):
        total = values.sum()
        return float(values[where].sum() / total) if total > 0 else math.nan

    return {
        "pattern_correlation": correlation(composite, sensitivity),
        "pattern_correlation_scaled": correlation(composite, sensitivity * anomaly_std),
        "remote_fraction": share(mean_absolute, ~reached),
        "bridge_region_fraction": share(mean_absolute, bridge_source),
        # of the composite: relevance that changes sign from sample to sample cancels here,
        # so this counts only remote relevance that is consistent across samples
        "remote_fraction_composite": share(np.abs(composite), ~reached),
    }


def lagged_samples(simulation, qoi_mean: np.ndarray, lag: int):
    """(inputs [n, n_ocean], labels [n], qoi day [n]) for one lag: SST at snapshot day d,
    label sign(Q(d + lag)) where the running mean is defined."""
    qoi_day = simulation.snapshot_days + lag
    valid = qoi_day < qoi_mean.size
    valid[valid] &= np.isfinite(qoi_mean[qoi_day[valid]])
    target = qoi_mean[qoi_day[valid]]
    return simulation.snapshots[valid], (target > 0).astype(np.int64), qoi_day[valid]


def chronological_split(days: np.ndarray, validation_fraction: float, test_fraction: float, gap_days: int):
    """Index arrays (train, validation, test) over samples ordered in time, with gap_days
    dropped before the validation and the test part."""
    first, last = days.min(), days.max()
    span = last - first
    validation_start = first + (1 - validation_fraction - test_fraction) * span
    test_start = first + (1 - test_fraction) * span
    train = np.flatnonzero(days < validation_start - gap_days)
    validation = np.flatnonzero((days >= validation_start) & (days < test_start - gap_days))
    test = np.flatnonzero(days >= test_start)
    if min(train.size, validation.size, test.size) < 10:
        raise InputError(f"too few samples after the split (train {train.size}, validation {validation.size}, "
                         f"test {test.size}); simulate more days")
    return train, validation, test


def run_experiment(config=None, out=None, log=print) -> dict:
    """Run the experiment; with `out`, write comparison.csv, remote_attribution.csv and maps.nc
    there. Returns {"comparison": DataFrame, "attribution": DataFrame, "maps": Dataset}."""
    import torch

    from xaibench.studies.adjoint import ocean

    c = resolve_config(config)
    started = time.perf_counter()
    grid = ocean.make_grid(c["resolution_deg"])
    model = ocean.OceanModel(grid, ocean.OceanParameters(**c["ocean"]))
    qoi = ocean.quantity_of_interest(grid, region=c["qoi"]["region"])
    lags = [int(lag) for lag in c["lags_days"]]
    sensitivity = model.sensitivity(qoi, lags, c["window_days"])
    reached = sensitivity >= c["reach_threshold"] * sensitivity.max(axis=1, keepdims=True)
    forcing = ocean.CorrelatedForcing(grid, std=c["forcing"]["std_K_per_day"],
                                      correlation_length_km=c["forcing"]["correlation_length_km"], seed=c["seed"])
    bridge_settings = c["bridge"]
    bridge = ocean.Bridge.over(grid, source_box=bridge_settings["source"], gain_per_day=bridge_settings["gain_per_day"],
                               lag_days=bridge_settings["lag_days"],
                               target_radius_km=bridge_settings["target_radius_km"],
                               target_centre=_box_centre(c["qoi"]["region"]))
    log(f"grid {grid.shape[0]} x {grid.shape[1]} at {grid.resolution} degrees, {grid.n_ocean} ocean cells; "
        f"forcing {forcing.modes} modes; {time.perf_counter() - started:.1f} s")

    rows, composites, absolutes, stds, qoi_means = [], {}, {}, {}, {}
    progress = Progress(len(BRIDGE_SETTINGS) * len(lags) * c["networks"])
    for setting in BRIDGE_SETTINGS:
        simulation = model.simulate(forcing, c["days"], spinup_days=c["spinup_days"],
                                    store_every=c["sample_every_days"], qoi=qoi,
                                    bridge=bridge if setting == "on" else None)
        stds[setting] = simulation.std
        qoi_mean = ocean.running_mean(simulation.qoi, c["window_days"])
        qoi_means[setting] = qoi_mean
        log(f"bridge {setting}: simulated {c['days']} days, Q std {np.nanstd(qoi_mean):.3f} K; "
            f"{time.perf_counter() - started:.1f} s")
        for index, lag in enumerate(lags):
            inputs, labels, days = lagged_samples(simulation, qoi_mean, lag)
            train, validation, test = chronological_split(
                days, c["training"]["validation_fraction"], c["training"]["test_fraction"], c["window_days"] + lag)
            scale = float(inputs[train].std())  # one number: the maps keep their relative sizes
            x = torch.as_tensor(inputs / scale, dtype=torch.float32)
            y = torch.as_tensor(labels)
            low, high = x.double().min(0).values, x.double().max(0).values
            for network_index in range(c["networks"]):
                # the same seeds with the bridge on and off: the runs differ only by the bridge
                network, history = train_network(x[train], y[train], x[validation], y[validation], c["training"],
                                                  seed=c["seed"] + 1000 * network_index + index)
                accuracy = {name: _accuracy(network, x[part], y[part])
                            for name, part in (("train", train), ("validation", validation), ("test", test))}
                with torch.no_grad():
                    correct = test[(network(x[test]).argmax(1) == y[test]).numpy()]
                correct = correct[:c["max_explained"]]
                for method in METHODS:
                    relevance = explain_composite(network, x[correct].double(), y[correct], method, low, high)
                    maps = normalized_maps(relevance)
                    composite = maps.mean(0) if maps.size else np.zeros(grid.n_ocean)
                    mean_absolute = np.abs(maps).mean(0) if maps.size else np.zeros(grid.n_ocean)
                    composites.setdefault((lag, setting, method), []).append(composite)
                    absolutes.setdefault((lag, setting, method), []).append(mean_absolute)
                    numbers = comparison_metrics(composite, mean_absolute, sensitivity[index], simulation.std,
                                                 grid.cell_lat, reached[index], bridge.source)
                    rows.append({"lag_days": lag, "bridge": setting, "method": method, "network": network_index,
                                 **numbers, "accuracy": accuracy["test"], "train_accuracy": accuracy["train"],
                                 "validation_accuracy": accuracy["validation"], "best_epoch": history["best_epoch"],
                                 "n_train": int(train.size), "n_test": int(test.size),
                                 "n_samples": int(maps.shape[0]),
                                 "reached_cell_fraction": float(reached[index].mean())})
                log(f"{progress.step()} bridge {setting}, lag {lag:>3d} d, network {network_index}: test accuracy "
                    f"{accuracy['test']:.3f} (train {accuracy['train']:.3f}, best epoch {history['best_epoch']}); "
                    + "; ".join(f"{row['method']}: r {row['pattern_correlation']:.2f}, remote "
                                f"{row['remote_fraction']:.2f}" for row in rows[-len(METHODS):])
                    + f"; {time.perf_counter() - started:.1f} s")

    import pandas as pd

    per_network = pd.DataFrame(rows)
    # Both runs share the forcing and the model is linear: Q(on) - Q(off) is exactly the part of
    # Q the bridge causes.
    per_network["bridge_variance_share"] = bridge_variance_share(qoi_means["on"], qoi_means["off"])
    comparison = summarize_networks(per_network)
    attribution = remote_attribution(per_network)
    dataset = _maps_dataset(grid, lags, sensitivity, reached, stds,
                            {key: np.mean(value, axis=0) for key, value in composites.items()},
                            {key: np.mean(value, axis=0) for key, value in absolutes.items()}, qoi, bridge, c)
    if out is not None:
        from xaibench.io import write_csv, write_dataset

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_csv(comparison, out / "comparison.csv")
        write_csv(per_network, out / "comparison_networks.csv")
        write_csv(attribution, out / "remote_attribution.csv")
        write_dataset(dataset, out / "maps.nc")
        log(f"wrote {out}/comparison.csv, comparison_networks.csv, remote_attribution.csv and maps.nc in "
            f"{time.perf_counter() - started:.1f} s")
    return {"comparison": comparison, "per_network": per_network, "attribution": attribution, "maps": dataset}


def bridge_variance_share(qoi_on: np.ndarray, qoi_off: np.ndarray) -> float:
    """var(Q_on - Q_off) / var(Q_on): the share of Q's variance the bridge causes."""
    both = np.isfinite(qoi_on) & np.isfinite(qoi_off)
    return float(np.var(qoi_on[both] - qoi_off[both]) / np.var(qoi_on[both]))


#: columns of comparison.csv that also get their standard deviation over the networks
SPREAD_COLUMNS = ("pattern_correlation", "remote_fraction", "bridge_region_fraction", "accuracy")


def summarize_networks(per_network):
    """One row per (lag, bridge, method): the mean over the networks, plus the standard deviation
    (ddof 1; NaN for one network) of the main numbers and the number of networks."""
    keys = ["lag_days", "bridge", "method"]
    grouped = per_network.drop(columns=["network"]).groupby(keys, sort=False)
    summary = grouped.mean().reset_index()
    spread = grouped[list(SPREAD_COLUMNS)].std(ddof=1).reset_index()
    summary = summary.merge(spread.rename(columns={c: f"{c}_std" for c in SPREAD_COLUMNS}), on=keys)
    summary["n_networks"] = grouped.size().to_numpy()
    return summary


def remote_attribution(per_network):
    """Per lag and method: remote relevance with the bridge on and off, the part attributable to
    the bridge (on - off, paired by network seed; total and in the bridge's source region) and the
    spurious part (off); means over the networks, with the standard deviation of the differences."""
    import pandas as pd

    rows = []
    for (lag, method), group in per_network.groupby(["lag_days", "method"], sort=False):
        on = group[group["bridge"] == "on"].set_index("network").sort_index()
        off = group[group["bridge"] == "off"].set_index("network").sort_index()
        attributable = on["remote_fraction"] - off["remote_fraction"]
        region = on["bridge_region_fraction"] - off["bridge_region_fraction"]
        rows.append({"lag_days": lag, "method": method, "n_networks": len(on),
                     "remote_fraction_bridge_on": on["remote_fraction"].mean(),
                     "remote_fraction_bridge_off": off["remote_fraction"].mean(),
                     "bridge_attributable": attributable.mean(),
                     "bridge_attributable_std": attributable.std(ddof=1),
                     "bridge_region_attributable": region.mean(),
                     "bridge_region_attributable_std": region.std(ddof=1),
                     "spurious": off["remote_fraction"].mean(),
                     "spurious_std": off["remote_fraction"].std(ddof=1),
                     "remote_fraction_composite_bridge_on": on["remote_fraction_composite"].mean(),
                     "remote_fraction_composite_bridge_off": off["remote_fraction_composite"].mean(),
                     "accuracy_bridge_on": on["accuracy"].mean(), "accuracy_bridge_off": off["accuracy"].mean()})
    return pd.DataFrame(rows)


def _box_centre(box) -> tuple[float, float]:
    lat_min, lat_max, lon_min, lon_max = (float(v) for v in box)
    span = (lon_max - lon_min) % 360.0
    return (lat_min + lat_max) / 2, (lon_min + span / 2) % 360.0


def _maps_dataset(grid, lags, sensitivity, reached, stds, composites, absolutes, qoi, bridge, c):
    import xarray as xr

    methods = list(METHODS)
    on_grid = grid.to_field
    relevance = np.stack([np.stack([np.stack([on_grid(composites[(lag, s, m)]) for m in methods])
                                    for s in BRIDGE_SETTINGS]) for lag in lags])
    absolute = np.stack([np.stack([np.stack([on_grid(absolutes[(lag, s, m)]) for m in methods])
                                   for s in BRIDGE_SETTINGS]) for lag in lags])
    coords = {"lag_days": ("lag_days", np.asarray(lags), {"long_name": "lag of the input before the QoI",
                                                          "units": "days"}),
              "bridge": ("bridge", list(BRIDGE_SETTINGS), {"long_name": "atmospheric bridge in the simulation"}),
              "method": ("method", methods, {"long_name": "LRP method (native engine)"}),
              "lat": ("lat", grid.lat, {"units": "degrees_north", "standard_name": "latitude"}),
              "lon": ("lon", grid.lon, {"units": "degrees_east", "standard_name": "longitude"})}
    space = ("lat", "lon")
    variables = {
        "sensitivity": (("lag_days",) + space, on_grid(sensitivity),
                        {"long_name": "adjoint sensitivity dQ(t)/dT(t - lag) of the ocean-only model",
                         "units": "1"}),
        "reached": (("lag_days",) + space, on_grid(reached.astype(np.float64)),
                    {"long_name": f"1 where the sensitivity is at least {c['reach_threshold']} of its max"}),
        "anomaly_std": (("bridge",) + space, np.stack([on_grid(stds[s]) for s in BRIDGE_SETTINGS]),
                        {"long_name": "standard deviation of the daily SST anomaly", "units": "K"}),
        "relevance": (("lag_days", "bridge", "method") + space, relevance,
                      {"long_name": "mean of the relevance maps each divided by its max |relevance|",
                       "units": "1"}),
        "relevance_absolute": (("lag_days", "bridge", "method") + space, absolute,
                               {"long_name": "mean |relevance| of the maps each divided by its max |relevance|",
                                "units": "1"}),
        "qoi_weights": (space, on_grid(qoi), {"long_name": "weights q of the quantity of interest Q = q . T"}),
        "bridge_source": (space, on_grid(bridge.source.astype(np.float64)),
                          {"long_name": "1 in the source region of the atmospheric bridge"}),
    }
    return xr.Dataset({name: xr.Variable(dims, values, attrs) for name, (dims, values, attrs) in variables.items()},
                      coords=coords,
                      attrs={"title": "relevance vs adjoint sensitivity of a linear ocean model (synthetic)",
                             "source": "xaibench.studies.adjoint.experiment", "config": json.dumps(c),
                             "qoi_region": json.dumps(c["qoi"]["region"]),
                             "bridge_source_region": json.dumps(c["bridge"]["source"]),
                             "note": "all data are synthetic (a linear ocean model with random forcing); "
                                     "only the land mask is real (Natural Earth 110m)"})


# ---------------------------------------------------------------------------------------------
# Command line
