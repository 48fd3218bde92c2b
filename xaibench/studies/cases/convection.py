"""Convection (Lee et al. 2021; docs/papers.md section 2): the convection logit (index 1) of test
samples, half convective cells and half non-convective clouds (clear sky only where too few
clouds), from the test block of the training data (shortcut=True: brightness separates the
classes) and from every evaluation set (default: subset "no_shortcut", make_convection with the
data's configuration but shortcut=False, seed + 1 and 4 x n_samples scenes, where only the
temporal texture separates the classes). Region: the sample's core_mask (empty for
non-convective scenes: NaN there). z^B bounds: [0, 1] (the generator clips every scaled input).
Extra measures: the share of |R| on each channel (visible reflectance, IR brightness
temperature) and the static / temporal split of the relevance over the frames
(metrics.temporal_shares): the shortcut finding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xaibench.studies.cases.case import ClassifierCase, call_text, own_coords

#: convection channel names (the data's channel coordinate) -> share columns
CONVECTION_CHANNELS = {"reflectance": "share_visible", "brightness_temperature": "share_ir"}


@dataclass(frozen=True)
class ConvectionCase(ClassifierCase):
    def default_evaluation(self, data, n_samples):
        from xaibench.studies.data import config_of, make_convection

        if not config_of(data).get("shortcut", False):
            return {}
        settings = config_of(data)
        settings.update(shortcut=False, seed=int(settings.get("seed", 0)) + 1, n_samples=4 * n_samples)
        return {"no_shortcut": (make_convection(**settings), "generated: make_convection(" + call_text(settings) + ")")}

    def pick(self, model, subset, n_samples):
        """Half convective, half non-convective cloud (clear sky only to fill up)."""
        label = np.asarray(subset["label"].values)
        convective = np.flatnonzero(label == 1)[: n_samples - n_samples // 2]
        scene = np.asarray(subset["scene"].values) if "scene" in subset else np.where(label == 1, 2, 1)
        others = np.concatenate([np.flatnonzero((label == 0) & (scene == 1)),
                                 np.flatnonzero((label == 0) & (scene != 1))])
        return np.sort(np.concatenate([convective, others[: n_samples - convective.size]]))

    def sample_variables(self, subset, chosen):
        core = subset["core_mask"]
        variables = {"region": core.isel(sample=chosen).drop_vars(own_coords(core, self.coords))}
        if "scene" in subset:
            variables["scene"] = ("sample", np.asarray(subset["scene"].values[chosen]), subset["scene"].attrs)
        return variables

    def shares(self, ds):
        from xaibench import metrics as M

        shares = {}
        per_channel = M.channel_shares(ds["relevance"], "channel")
        names = [str(c) for c in ds["channel"].values]
        for name, column in CONVECTION_CHANNELS.items():
            if name in names:
                shares[column] = per_channel[:, names.index(name)]
        shares["share_static"], shares["share_temporal"] = M.temporal_shares(ds["relevance"], "time")
        return shares

    def figure(self, files, out_png, subset=None):
        from xaibench.studies.report import convection_relevance

        return convection_relevance(files, out_png, subset=subset)


CASES = (ConvectionCase("convection", "convection", "inputs", ("channel", "time", "y", "x"),
                        ("channel", "time", "y", "x"), ("sample", "y", "x"), 1,
                        "convection logit (softmax stripped)", "1",
                        "convective core (core_mask; empty for non-convective scenes)",
                        figure_files=("lrp.epsilon__native", "lrp.alpha1beta0__native", "input_x_gradient__native"),
                        input_bounds=(0.0, 1.0)),)
