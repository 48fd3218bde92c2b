"""ENSO (Toms et al. 2020; docs/papers.md section 1): the El Nino logit (index 1; the softmax is
not part of the model) of correctly classified El Nino samples, from the test block of the
training data (the model's own split) and from the real HadISST winters (subset "real_winters":
the file given in `evaluation`, or make_enso_real with the data's threshold and detrending, as
training scores them). Region: the Nino3.4 box (the data's nino34_region: ocean cells of 5S-5N,
170W-120W). z^B bounds: the min and max over the data file and every explained map (anomalies
have no natural bounds). Extra measure: the cos(lat)-weighted pattern correlation with the
native reference."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xaibench.studies.cases.case import ClassifierCase, call_text, own_coords, predict
from xaibench.studies.data.common import generator_name


@dataclass(frozen=True)
class EnsoCase(ClassifierCase):
    def default_evaluation(self, data, n_samples):
        if generator_name(data) != "xaibench.studies.data.enso.make_enso":
            return {}
        from xaibench.studies.data import config_of, make_enso_real

        settings = config_of(data)
        kwargs = {"threshold": settings.get("threshold", 0.5), "detrend": settings.get("detrend", True)}
        return {"real_winters": (make_enso_real(**kwargs), "generated: make_enso_real(" + call_text(kwargs) + ")")}

    def pick(self, model, subset, n_samples):
        """Correctly classified El Nino samples (Toms et al.)."""
        label = np.asarray(subset["label"].values)
        prediction = predict(model, self.model_input(subset[self.input_variable].values)).argmax(1).numpy()
        return np.flatnonzero((label == 1) & (prediction == 1))[:n_samples]

    def data_region(self, data):
        region = data["nino34_region"]
        return region.astype(bool).drop_vars(own_coords(region, self.coords))

    def model_input(self, inputs):
        return super().model_input(inputs).unsqueeze(1)   # maps get a channel axis

    def pattern_correlation(self, ds, reference):
        from xaibench import metrics as M

        return M.pattern_correlation(ds["relevance"].values, reference["relevance"].values, ds["lat"].values)

    def figure(self, files, out_png, subset=None):
        from xaibench.studies.report import enso_composite_maps

        return enso_composite_maps(files, out_png, subset=subset)


CASES = (EnsoCase("enso", "enso", "sst_anomaly", ("lat", "lon"), ("lat", "lon"), ("lat", "lon"), 1,
                  "El Nino logit (softmax stripped)", "1", "Nino3.4 box (ocean cells of 5S-5N, 170W-120W)",
                  figure_files=("lrp.epsilon__native", "lrp.alpha1beta0__native", "input_x_gradient__native",
                                "integrated_gradients__native", "deep_taylor__innvestigate",
                                "lrp.alpha1beta0__innvestigate"),
                  no_sample_hint="(no correctly classified El Nino sample: is the model trained?)"),)
