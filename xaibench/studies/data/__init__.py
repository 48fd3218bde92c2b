"""Data generators for the three reference cases. Each returns an xarray.Dataset with named
dimensions, CF attributes (long_name, units, standard_name where CF has one) on every variable
and coordinate, and dataset attributes saying what is synthetic and what is real: "source",
"synthetic" (bool), "generator", "seed", "config" (canonical JSON of the arguments),
"input_variable" and "target_variable" (what a training loop feeds the network and fits).

    make_enso(n_samples, ..., seed)       synthetic SST anomaly maps, real-sample statistics
    make_enso_real(...)                   the 50 real HadISST winters (held-out test set)
    make_convection(n_samples, size, shortcut, ..., seed)
    make_radar(n_samples, size, footprint_radius, ..., seed)
    make_groundtruth(n_samples, stride, n_breakpoints, shrinkage, seed)   exact attributions (Mamalakis et al.)
    split(ds, validation=0.2, test=0.2)   contiguous train/validation/test blocks (SPLIT_CONVENTION)
    data_hash(ds)                         sha256 over arrays + config, for training metadata
    write_dataset(ds, path) / read_dataset(path)   atomic netCDF (h5netcdf) write, checked read

This package knows nothing of models; the model shapes follow from the data's dimensions
(ENSO maps are 18 x 30 on the HadISST sample grid: build EnsoDense(n_lat=18, n_lon=30)).
"""

from xaibench.studies import lazy_exports

#: where each public name lives; imported on first use, so that importing a sibling module (the
#: `xaibench data` command, common.py) does not load every generator and scipy with it
_SOURCE = {
    "read_dataset": "xaibench.io", "write_dataset": "xaibench.io",
    **dict.fromkeys(["SPLIT_CONVENTION", "config_of", "data_hash", "generator_name", "split"],
                    "xaibench.studies.data.common"),
    "make_convection": "xaibench.studies.data.convection",
    **dict.fromkeys(["load_hadisst_sample", "make_enso", "make_enso_real", "nino34_index"],
                    "xaibench.studies.data.enso"),
    "make_groundtruth": "xaibench.studies.data.groundtruth",
    **dict.fromkeys(["footprint_kernel", "make_radar", "reflectivity_operator"], "xaibench.studies.data.radar"),
}
#: Name -> generator, for the workflow's config files (GENERATORS holds the functions themselves).
_GENERATOR_NAMES = {"enso": "make_enso", "enso_real": "make_enso_real", "convection": "make_convection",
                    "radar": "make_radar", "groundtruth": "make_groundtruth"}


def generate(name: str, **config):
    """Call the generator registered under `name` with its configuration."""
    if name not in _GENERATOR_NAMES:
        raise ValueError(f"unknown data set '{name}'; known: {', '.join(_GENERATOR_NAMES)}")
    return _exports(_GENERATOR_NAMES[name])(**config)


_exports = lazy_exports(__name__, _SOURCE)


def __getattr__(name):
    if name != "GENERATORS":
        return _exports(name)
    globals()[name] = {key: _exports(function) for key, function in _GENERATOR_NAMES.items()}
    return globals()[name]


__all__ = ["GENERATORS", "SPLIT_CONVENTION", "config_of", "data_hash", "footprint_kernel", "generate", "generator_name",
           "load_hadisst_sample", "make_convection", "make_enso", "make_enso_real", "make_radar",
           "nino34_index", "read_dataset", "reflectivity_operator", "split", "write_dataset"]
