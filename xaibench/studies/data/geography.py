"""The Natural Earth 110m coastline and land shapefiles shipped with the package (natural_earth/,
cartopy's own folder layout; its README.txt gives source and licence), read without a network.

Reference data used by the ocean model's land mask (xaibench.studies.adjoint.ocean) and by the
report's maps (xaibench.studies.report.maps); it lives with the data so that neither has to
import the other.
"""

from __future__ import annotations

import functools
from pathlib import Path

from xaibench.errors import InputError

#: the folder given to cartopy as pre_existing_data_dir (holds shapefiles/natural_earth/...)
NATURAL_EARTH_DIR = Path(__file__).resolve().parent / "natural_earth"
#: the shipped Natural Earth layers: name -> (category, resolution)
SHIPPED_LAYERS = {"coastline": ("physical", "110m"), "land": ("physical", "110m")}
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj")

def natural_earth_path(name: str) -> Path:
    """Path of the shipped .shp file of layer `name` ("coastline" or "land"); raises
    InputError naming the missing file if the package is incomplete."""
    if name not in SHIPPED_LAYERS:
        raise ValueError(f"no shipped Natural Earth layer '{name}'; shipped: {', '.join(SHIPPED_LAYERS)}")
    category, resolution = SHIPPED_LAYERS[name]
    shp = NATURAL_EARTH_DIR / "shapefiles" / "natural_earth" / category / f"ne_{resolution}_{name}.shp"
    for part in SHAPEFILE_PARTS:
        if not shp.with_suffix(part).is_file():
            raise InputError(f"shipped Natural Earth file missing: {shp.with_suffix(part)} "
                             f"(see {NATURAL_EARTH_DIR / 'README.txt'})")
    return shp


@functools.lru_cache(maxsize=len(SHIPPED_LAYERS))
def shipped_geometries(name: str) -> tuple:
    """The shapely geometries of a shipped layer, read once per process from the shipped file."""
    from cartopy.io import shapereader

    reader = shapereader.Reader(natural_earth_path(name))
    try:
        return tuple(reader.geometries())
    finally:
        reader.close()
