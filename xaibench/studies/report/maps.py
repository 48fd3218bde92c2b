"""Cartopy set-up for the report's maps: offline coastlines and land, Pacific-centred axes.

cartopy downloads Natural Earth shapefiles on first use, which fails on machines without a
network (and would make the report depend on a server). The 110m coastline and land
shapefiles ship inside the package (xaibench/studies/data/natural_earth/, cartopy's own folder
layout; see its README.txt for source and licence; xaibench.studies.data.geography reads them), and:

- configure_cartopy() points cartopy.config["pre_existing_data_dir"] at them, so that
  cartopy.feature.NaturalEarthFeature("physical", "coastline" | "land", "110m") resolves to the
  shipped files instead of a download;
- the drawing helpers here read the shipped files directly (cartopy.io.shapereader.Reader on
  their path) and never go through cartopy's downloader at all. Do not use ax.coastlines() or
  cartopy.feature.COASTLINE/LAND in the report: their automatic scale asks for the 50m or 10m
  files on small extents, which are not shipped and would be downloaded.

Longitudes: the ENSO grid runs 117.5E ... 262.5E (across the date line), so maps use a
Robinson projection centred on 180 and data are given to cartopy in PlateCarree(central_longitude=180)
coordinates (longitude - 180, continuous across the date line). cartopy is imported inside the
functions: the rest of xaibench.studies.report works without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xaibench.errors import InputError
from xaibench.studies.data.geography import (
    NATURAL_EARTH_DIR,
    SHIPPED_LAYERS,
    natural_earth_path,
    shipped_geometries,
)

#: central longitude of every report map (the Pacific in the middle)
CENTRAL_LONGITUDE = 180.0


def configure_cartopy() -> Path:
    """Point cartopy.config["pre_existing_data_dir"] at the shipped Natural Earth files (checked
    to be present) and return that folder. Called by every map function; safe to call again."""
    import cartopy

    for name in SHIPPED_LAYERS:
        natural_earth_path(name)
    cartopy.config["pre_existing_data_dir"] = NATURAL_EARTH_DIR
    return NATURAL_EARTH_DIR


def map_projection():
    """The report's map projection: Robinson centred on 180 (the Pacific)."""
    import cartopy.crs as ccrs

    return ccrs.Robinson(central_longitude=CENTRAL_LONGITUDE)


def data_crs():
    """The CRS of longitudes given as relative_longitude(lon): PlateCarree centred on 180."""
    import cartopy.crs as ccrs

    return ccrs.PlateCarree(central_longitude=CENTRAL_LONGITUDE)


def relative_longitude(lon) -> np.ndarray:
    """Degrees east (any convention) -> degrees from the central longitude, in [-180, 180)."""
    return (np.asarray(lon, dtype=np.float64) - CENTRAL_LONGITUDE + 180.0) % 360.0 - 180.0


def cell_edges(centres) -> np.ndarray:
    """Edges of cells given their centres (monotonic; ends half a step beyond the end centres)."""
    centres = np.asarray(centres, dtype=np.float64)
    if centres.size == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    middle = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[2 * centres[0] - middle[0]], middle, [2 * centres[-1] - middle[-1]]])


def add_land_and_coastlines(ax, land_color: str = "0.85", coast_color: str = "0.2", linewidth: float = 0.5,
                            zorder: float = 3) -> None:
    """Land (filled) and coastlines from the shipped 110m files, drawn above the data."""
    import cartopy.crs as ccrs
    from cartopy.feature import ShapelyFeature

    configure_cartopy()
    geodetic = ccrs.PlateCarree()
    ax.add_feature(ShapelyFeature(shipped_geometries("land"), geodetic, facecolor=land_color,
                                  edgecolor="none"), zorder=zorder)
    ax.add_feature(ShapelyFeature(shipped_geometries("coastline"), geodetic, facecolor="none",
                                  edgecolor=coast_color, linewidth=linewidth), zorder=zorder + 0.1)


def add_box(ax, lon_min: float, lon_max: float, lat_min: float, lat_max: float, points: int = 64,
            **style) -> None:
    """A lon/lat box (degrees east, any convention; lon_min -> lon_max eastward) drawn as a
    closed line, densified so its edges follow parallels and meridians in any projection."""
    west, east = _west_east(lon_min, lon_max)
    along = np.linspace(0.0, 1.0, points)
    lon = np.concatenate([west + (east - west) * along, np.full(points, east),
                          east - (east - west) * along, np.full(points, west)])
    lat = np.concatenate([np.full(points, lat_min), lat_min + (lat_max - lat_min) * along,
                          np.full(points, lat_max), lat_max - (lat_max - lat_min) * along])
    style = {"color": "k", "linewidth": 1.2, "zorder": 5, **style}
    ax.plot(lon, lat, transform=data_crs(), **style)


def set_region(ax, lon_min: float, lon_max: float, lat_min: float, lat_max: float) -> None:
    """Show the lon/lat region (degrees east, lon_min -> lon_max eastward; may cross 180)."""
    west, east = _west_east(lon_min, lon_max)
    if east > 180.0:
        raise InputError(f"map region {lon_min}..{lon_max} E does not fit a map centred on "
                         f"{CENTRAL_LONGITUDE:g} E")
    ax.set_extent([west, east, lat_min, lat_max], crs=data_crs())


def _west_east(lon_min: float, lon_max: float) -> tuple[float, float]:
    """Relative longitudes of a box's west and east edges, east >= west (eastward span)."""
    span = (float(lon_max) - float(lon_min)) % 360.0
    if span == 0.0 and lon_max != lon_min:
        span = 360.0
    west = float(relative_longitude(lon_min))
    return west, west + span
