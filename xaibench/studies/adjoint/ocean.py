"""A linear SST-anomaly ocean model on a lat-lon grid, its exact adjoint, and its forcing.

    grid = make_grid(resolution=4.0)                  # Pacific + Atlantic, Natural Earth land mask
    model = OceanModel(grid, OceanParameters())       # T(t+1) = A T(t) + forcing(t)
    qoi = quantity_of_interest(grid, region=NE_PACIFIC_BOX)
    sensitivity = model.sensitivity(qoi, lags=[0, 30, 90], window=61)   # dQ(t)/dT(t - lag)
    forcing = CorrelatedForcing(grid, std=0.1, correlation_length_km=1500, seed=0)
    run = model.simulate(forcing, n_days=10000, bridge=Bridge.over(grid, ...))

The state is the vector of SST anomalies (K) on the ocean cells (land is not part of the
state). One step of one day is T(t+1) = A T(t) + forcing(t) with A = I + dt L, where L holds

- damping -T/tau (air-sea heat flux feedback and mixing; tau of order three months);
- diffusion in flux form between ocean neighbours (no flux through coasts);
- upwind advection along three pathways: a fast eastward equatorial waveguide (rows within a
  few degrees of the equator), a poleward coastal waveguide along eastern boundaries (the
  cells west of a continent, linked equator -> pole), and a slow eastward mid-latitude drift
  (the North Pacific Current). These stand in for the pathways along which the XAIRT study's
  ECCO adjoint found NE Pacific SST sensitive (equatorial and coastal Kelvin waves, advection).

Every off-diagonal entry of A is non-negative and every row sums to 1 - dt/tau, so
||A||_inf < 1: the model is stable, and a positive anomaly never makes a negative one. The
constructor checks that the diagonal stays non-negative (a CFL-type time-step limit) and says
which term is too fast when it does not.

The atmospheric bridge (Bridge) adds forcing over the NE Pacific proportional to the SST
averaged over a remote region some days earlier. It is part of the forcing, not of A: the
ocean-only adjoint (A transposed) knows nothing of it, which is what the experiment in
adjoint_experiment.py exploits.

The land mask comes from the Natural Earth 110m land shipped in xaibench/studies/data/natural_earth
(a cell is land when its centre is on land); the Central American isthmus is closed wherever
a cell touches land there, because at a few degrees the 110m isthmus falls between cell
centres and would join the Pacific and the Atlantic.

Everything is float64 numpy/scipy; A is a scipy.sparse CSR matrix and the adjoint step is its
exact transpose.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sparse

from xaibench.errors import InputError

EARTH_RADIUS_M = 6.371e6
SECONDS_PER_DAY = 86400.0

#: (lat_min, lat_max, lon_min, lon_max), degrees north / east: the default quantity of interest,
#: SST off Oregon and Washington (the study's NE Pacific point lies in this box)
NE_PACIFIC_BOX = (40.0, 50.0, 225.0, 237.0)
#: the default remote source of the atmospheric bridge: the tropical North Atlantic
TROPICAL_ATLANTIC_BOX = (5.0, 25.0, 300.0, 340.0)
#: where a cell touching land counts as land (closes the isthmus between Pacific and Atlantic)
CENTRAL_AMERICA_BOX = (5.0, 20.0, 255.0, 285.0)


# ---------------------------------------------------------------------------------------------
# The grid


@dataclass(frozen=True)
class Grid:
    """Cell centres (degrees north, degrees east in [0, 360)) and the ocean mask [lat, lon]."""

    lat: np.ndarray
    lon: np.ndarray
    ocean: np.ndarray
    resolution: float

    def __post_init__(self):
        if self.ocean.shape != (self.lat.size, self.lon.size):
            raise InputError(f"ocean mask of shape {self.ocean.shape} does not match the grid "
                             f"({self.lat.size} lat x {self.lon.size} lon)")
        if not self.ocean.any():
            raise InputError("the grid has no ocean cell")

    @property
    def shape(self) -> tuple[int, int]:
        return self.ocean.shape

    @property
    def n_ocean(self) -> int:
        return int(self.ocean.sum())

    @property
    def cell_lat(self) -> np.ndarray:
        """Latitude of each ocean cell (state order: row-major over the ocean mask)."""
        return np.broadcast_to(self.lat[:, None], self.shape)[self.ocean]

    @property
    def cell_lon(self) -> np.ndarray:
        return np.broadcast_to(self.lon[None, :], self.shape)[self.ocean]

    @property
    def cell_area(self) -> np.ndarray:
        """Relative area of each ocean cell (cos of its latitude)."""
        return np.cos(np.deg2rad(self.cell_lat))

    def to_field(self, vector, fill: float = np.nan) -> np.ndarray:
        """State vector(s) [..., n_ocean] -> maps [..., lat, lon] with `fill` over land."""
        vector = np.asarray(vector)
        if vector.shape[-1] != self.n_ocean:
            raise InputError(f"expected {self.n_ocean} ocean values in the last axis, got shape {vector.shape}")
        field_ = np.full(vector.shape[:-1] + self.shape, fill, dtype=np.result_type(vector.dtype, np.float64))
        field_[..., self.ocean] = vector
        return field_

    def to_vector(self, field_) -> np.ndarray:
        """Maps [..., lat, lon] -> state vectors [..., n_ocean] (land dropped)."""
        field_ = np.asarray(field_)
        if field_.shape[-2:] != self.shape:
            raise InputError(f"expected maps [..., {self.shape[0]}, {self.shape[1]}], got shape {field_.shape}")
        return field_[..., self.ocean]

    def region(self, box) -> np.ndarray:
        """Boolean over ocean cells: centres inside box (lat_min, lat_max, lon_min, lon_max); the
        longitudes run eastward from lon_min to lon_max (degrees east, may cross 0)."""
        lat_min, lat_max, lon_min, lon_max = _check_box(box)
        lon = self.cell_lon
        east = (lon - lon_min) % 360.0 <= (lon_max - lon_min) % 360.0
        return (self.cell_lat >= lat_min) & (self.cell_lat <= lat_max) & east

    def distances_km(self, lat0: float, lon0: float) -> np.ndarray:
        """Great-circle distance of every ocean cell from (lat0, lon0), km."""
        return _great_circle_km(self.cell_lat, self.cell_lon, lat0, lon0)


def _check_box(box) -> tuple[float, float, float, float]:
    try:
        lat_min, lat_max, lon_min, lon_max = (float(v) for v in box)
    except (TypeError, ValueError):
        raise InputError(f"a region is (lat_min, lat_max, lon_min, lon_max) in degrees, got {box!r}") from None
    if not (-90.0 <= lat_min < lat_max <= 90.0):
        raise InputError(f"region latitudes must satisfy -90 <= lat_min < lat_max <= 90, got {lat_min}, {lat_max}")
    if not all(np.isfinite([lon_min, lon_max])):
        raise InputError(f"region longitudes must be finite, got {lon_min}, {lon_max}")
    return lat_min, lat_max, lon_min % 360.0, lon_max % 360.0


def _great_circle_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    lat1, lon1, lat2, lon2 = (np.deg2rad(np.asarray(v, dtype=np.float64)) for v in (lat1, lon1, lat2, lon2))
    cosine = np.sin(lat1) * np.sin(lat2) + np.cos(lat1) * np.cos(lat2) * np.cos(lon1 - lon2)
    return EARTH_RADIUS_M / 1e3 * np.arccos(np.clip(cosine, -1.0, 1.0))


def make_grid(resolution: float = 4.0, lat_range=(-30.0, 62.0), lon_range=(110.0, 350.0),
              min_basin_cells: int = 10) -> Grid:
    """A regular grid over lat_range x lon_range (degrees east, eastward) with the Natural Earth
    110m land mask. Ocean pieces smaller than min_basin_cells (enclosed seas, single cells
    between islands) become land: they would only hold isolated noise."""
    from scipy import ndimage

    resolution = float(resolution)
    if not (0.25 <= resolution <= 10.0):
        raise InputError(f"grid resolution must be between 0.25 and 10 degrees, got {resolution}")
    lat_min, lat_max, lon_min, lon_max = _check_box(tuple(lat_range) + tuple(lon_range))
    lon_span = (lon_max - lon_min) % 360.0 or 360.0
    if lat_max - lat_min < 3 * resolution or lon_span < 3 * resolution:
        raise InputError(f"the region {lat_range} x {lon_range} is smaller than three cells of {resolution} degrees")
    lat = np.arange(lat_min + resolution / 2, lat_max, resolution)
    lon = (lon_min + np.arange(resolution / 2, lon_span, resolution)) % 360.0
    land = _land_mask(lat, lon, resolution)
    labels, count = ndimage.label(~land)
    sizes = ndimage.sum(~land, labels, np.arange(1, count + 1))
    ocean = np.isin(labels, 1 + np.flatnonzero(sizes >= min_basin_cells))
    return Grid(lat=lat, lon=lon, ocean=ocean, resolution=resolution)


def _land_mask(lat: np.ndarray, lon: np.ndarray, resolution: float) -> np.ndarray:
    import shapely
    from shapely.ops import unary_union

    from xaibench.studies.data.geography import shipped_geometries

    land = unary_union(shipped_geometries("land"))
    lon_grid, lat_grid = np.meshgrid(lon, lat)
    lon_180 = (lon_grid + 180.0) % 360.0 - 180.0  # Natural Earth longitudes are -180..180
    mask = shapely.contains_xy(land, lon_180, lat_grid)
    lat_a, lat_b, lon_a, lon_b = CENTRAL_AMERICA_BOX
    isthmus = (lat_grid >= lat_a) & (lat_grid <= lat_b) & (lon_grid >= lon_a) & (lon_grid <= lon_b)
    half = resolution / 2
    for row, column in zip(*np.nonzero(isthmus & ~mask)):
        cell = shapely.box(lon_180[row, column] - half, lat_grid[row, column] - half,
                           lon_180[row, column] + half, lat_grid[row, column] + half)
        mask[row, column] = cell.intersects(land)
    return mask


# ---------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class OceanParameters:
    """Physical parameters (SI units where named so; one time step = time_step_days)."""

    time_step_days: float = 1.0
    damping_days: float = 90.0               # e-folding time of an SST anomaly without transport
    diffusivity_m2_s: float = 5.0e4          # eddy diffusivity of a coarse grid
    equatorial_speed_m_s: float = 1.0        # eastward, within equatorial_half_width_deg of the equator
    equatorial_half_width_deg: float = 5.0
    coastal_speed_m_s: float = 0.8           # poleward, along eastern boundaries
    drift_speed_m_s: float = 0.05            # eastward, between drift_lat_deg (the North Pacific Current)
    drift_lat_deg: tuple = (35.0, 50.0)
    continent_min_cells: int = 20            # land pieces at least this big count as continents

    def __post_init__(self):
        positive = {"time_step_days": self.time_step_days, "damping_days": self.damping_days}
        for name, value in positive.items():
            if not (np.isfinite(value) and value > 0):
                raise InputError(f"ocean parameter {name} must be positive, got {value}")
        non_negative = {"diffusivity_m2_s": self.diffusivity_m2_s, "equatorial_speed_m_s": self.equatorial_speed_m_s,
                        "equatorial_half_width_deg": self.equatorial_half_width_deg,
                        "coastal_speed_m_s": self.coastal_speed_m_s, "drift_speed_m_s": self.drift_speed_m_s}
        for name, value in non_negative.items():
            if not (np.isfinite(value) and value >= 0):
                raise InputError(f"ocean parameter {name} must be non-negative, got {value}")
        if len(self.drift_lat_deg) != 2 or not self.drift_lat_deg[0] < self.drift_lat_deg[1]:
            raise InputError(f"drift_lat_deg must be (south, north) with south < north, got {self.drift_lat_deg}")


@dataclass
class Simulation:
    """What simulate() returns: snapshots of T every `store_every` days, the daily QoI series
    (when a qoi was given) and the per-cell standard deviation of the daily anomalies."""

    snapshots: np.ndarray          # [n_snapshots, n_ocean] float64
    snapshot_days: np.ndarray      # day index of each snapshot (0 = first day after spin-up)
    qoi: np.ndarray | None         # [n_days] daily q . T(t)
    std: np.ndarray                # [n_ocean]
    bridge_forcing: np.ndarray | None = None   # [n_days] the bridge's amplitude (K/day) each day


@dataclass(frozen=True)
class Bridge:
    """Forcing over `target` (weights per ocean cell, K/day per K) equal to gain times the
    area-weighted mean SST anomaly over `source` lag_days earlier."""

    source: np.ndarray    # bool [n_ocean]
    target: np.ndarray    # [n_ocean], max 1
    gain_per_day: float
    lag_days: int

    @classmethod
    def over(cls, grid: Grid, source_box=TROPICAL_ATLANTIC_BOX, target_centre=(45.0, 230.0),
             target_radius_km: float = 1500.0, gain_per_day: float = 0.02, lag_days: int = 10) -> Bridge:
        source = grid.region(source_box)
        if not source.any():
            raise InputError(f"the bridge source region {source_box} holds no ocean cell of the grid")
        if not (np.isfinite(gain_per_day) and gain_per_day >= 0):
            raise InputError(f"bridge gain_per_day must be non-negative, got {gain_per_day}")
        if int(lag_days) != lag_days or lag_days < 1:
            raise InputError(f"bridge lag_days must be a positive integer, got {lag_days}")
        if not target_radius_km > 0:
            raise InputError(f"bridge target_radius_km must be positive, got {target_radius_km}")
        distance = grid.distances_km(*target_centre)
        target = np.exp(-0.5 * (distance / target_radius_km) ** 2)
        return cls(source=source, target=target, gain_per_day=float(gain_per_day), lag_days=int(lag_days))


class OceanModel:
    """T(t+1) = A T(t) + forcing(t) on the ocean cells of `grid` (see the module docstring)."""

    def __init__(self, grid: Grid, parameters: OceanParameters | None = None):
        self.grid = grid
        self.parameters = parameters or OceanParameters()
        self.tendency, self.pathways = _tendency(grid, self.parameters)   # L, per day
        dt = self.parameters.time_step_days
        self.matrix = (sparse.identity(grid.n_ocean, format="csr") + dt * self.tendency).tocsr()
        self.matrix.sort_indices()
        self.matrix_transpose = self.matrix.T.tocsr()   # the exact transpose: the adjoint step
        diagonal = self.matrix.diagonal()
        if diagonal.min() < 0:
            worst = int(np.argmin(diagonal))
            raise InputError(
                f"time step {dt} day(s) too long for the grid: A's diagonal is {diagonal[worst]:.3f} < 0 at "
                f"{grid.cell_lat[worst]:.1f}N {grid.cell_lon[worst]:.1f}E (too fast transport or diffusion "
                f"for cells of {grid.resolution} degrees); shorten the step or slow the waveguides")

    # -- one step and its adjoint ---------------------------------------------------------------
    def step(self, state: np.ndarray) -> np.ndarray:
        """A T for one state [n_ocean] or a batch [n_ocean, k]."""
        return self.matrix @ self._check_state(state)

    def adjoint_step(self, adjoint_state: np.ndarray) -> np.ndarray:
        """A^T y: one step of the adjoint model (backward in time)."""
        return self.matrix_transpose @ self._check_state(adjoint_state)

    def _check_state(self, state) -> np.ndarray:
        state = np.asarray(state, dtype=np.float64)
        if state.ndim == 0 or state.shape[0] != self.grid.n_ocean:
            raise InputError(f"a state has {self.grid.n_ocean} ocean values, got shape {state.shape}")
        if not np.all(np.isfinite(state)):
            raise InputError("the state holds NaN or Inf")
        return state

    # -- the adjoint sensitivity ---------------------------------------------------------------
    def sensitivity(self, qoi: np.ndarray, lags, window: int = 1) -> np.ndarray:
        """dQ(t)/dT(t - lag) for each lag, [n_lags, n_ocean].

        Q(t) = (1/window) sum_{j=-h..h} qoi . T(t + j), h = (window - 1) / 2 (a centred running
        mean; window 1: the instantaneous value). T(t + j) depends on T(t - lag) through
        A^(lag + j) when lag + j >= 0, and not at all otherwise, so
        dQ/dT(t - lag) = (1/window) sum_{j: lag + j >= 0} (A^T)^(lag + j) qoi:
        one backward sweep of the adjoint model from the QoI gives every lag."""
        qoi = self._check_state(qoi)
        lags = _check_lags(lags)
        window = _check_window(window)
        half = (window - 1) // 2
        deepest = max(lags) + half
        sensitivities = np.zeros((len(lags), self.grid.n_ocean))
        adjoint_state = qoi.copy()   # (A^T)^k qoi, k = 0, 1, ...
        for k in range(deepest + 1):
            for index, lag in enumerate(lags):
                if lag - half <= k <= lag + half:   # k = lag + j with |j| <= h
                    sensitivities[index] += adjoint_state
            if k < deepest:
                adjoint_state = self.matrix_transpose @ adjoint_state
        return sensitivities / window

    # -- the forward model -----------------------------------------------------------------------
    def propagate(self, state: np.ndarray, n_steps: int) -> np.ndarray:
        """A^n T (no forcing): the linear response to an initial anomaly."""
        state = self._check_state(state)
        for _ in range(int(n_steps)):
            state = self.matrix @ state
        return state

    def simulate(self, forcing: CorrelatedForcing, n_days: int, *, spinup_days: int = 365,
                 store_every: int = 1, qoi: np.ndarray | None = None, bridge: Bridge | None = None,
                 chunk_days: int = 1000, perturbation: tuple | None = None) -> Simulation:
        """Step the model n_days after spinup_days from rest, driven by `forcing` (drawn in
        chunks, so the same seed gives the same forcing whatever the bridge does) plus the
        bridge when given. Keeps every store_every-th state, the daily QoI and per-cell std.
        perturbation=(day, vector) adds the vector to T(day) (for checking the adjoint)."""
        n_days, spinup_days, store_every = int(n_days), int(spinup_days), int(store_every)
        if n_days < 1 or spinup_days < 0 or store_every < 1:
            raise InputError(f"need n_days >= 1, spinup_days >= 0, store_every >= 1; got {n_days}, "
                             f"{spinup_days}, {store_every}")
        perturbation_day, perturbation_vector = -spinup_days - 1, None   # never, unless given
        if perturbation is not None:
            perturbation_day, perturbation_vector = int(perturbation[0]), self._check_state(perturbation[1])
            if not 0 <= perturbation_day < n_days:
                raise InputError(f"the perturbation day must be in [0, {n_days}), got {perturbation_day}")
        if forcing.grid is not self.grid and forcing.n_ocean != self.grid.n_ocean:
            raise InputError("the forcing was made for another grid")
        qoi = None if qoi is None else self._check_state(qoi)
        n_ocean = self.grid.n_ocean
        state = np.zeros(n_ocean)
        snapshots, snapshot_days = [], []
        qoi_series = np.zeros(n_days) if qoi is not None else None
        bridge_series = np.zeros(n_days) if bridge is not None else None
        total, total_square = np.zeros(n_ocean), np.zeros(n_ocean)
        if bridge is not None:
            source_weights = self.grid.cell_area * bridge.source
            source_weights = source_weights / source_weights.sum()
            # source means of the last lag_days days (zeros before the start: the run starts at rest)
            history = deque([0.0] * bridge.lag_days, maxlen=bridge.lag_days)
        draws = forcing.stream(chunk_days)
        chunk, position = next(draws), 0
        for day in range(-spinup_days, n_days):
            if position == chunk.shape[0]:
                chunk, position = next(draws), 0
            daily_forcing = chunk[position]
            position += 1
            if bridge is not None:
                amplitude = bridge.gain_per_day * history[0]   # the source mean lag_days ago
                history.append(float(source_weights @ state))
                daily_forcing = daily_forcing + amplitude * bridge.target
                if day >= 0:
                    bridge_series[day] = amplitude
            state = self.matrix @ state + daily_forcing
            if day == perturbation_day:
                state = state + perturbation_vector
            if day < 0:
                continue
            if qoi_series is not None:
                qoi_series[day] = qoi @ state
            total += state
            total_square += state * state
            if day % store_every == 0:
                snapshots.append(state.copy())
                snapshot_days.append(day)
        mean = total / n_days
        std = np.sqrt(np.maximum(total_square / n_days - mean * mean, 0.0))
        return Simulation(np.asarray(snapshots), np.asarray(snapshot_days), qoi_series, std, bridge_series)


def _check_lags(lags) -> list[int]:
    lags = [lags] if np.isscalar(lags) else list(lags)
    if not lags:
        raise InputError("give at least one lag")
    for lag in lags:
        if int(lag) != lag or lag < 0:
            raise InputError(f"lags are whole days >= 0 (the input precedes the QoI), got {lag!r}")
    return [int(lag) for lag in lags]


def _check_window(window) -> int:
    if int(window) != window or window < 1 or window % 2 == 0:
        raise InputError(f"the running-mean window must be an odd whole number of days >= 1, got {window!r}")
    return int(window)


def running_mean(series: np.ndarray, window: int) -> np.ndarray:
    """Centred running mean; NaN where the window leaves the series."""
    window = _check_window(window)
    series = np.asarray(series, dtype=np.float64)
    half = (window - 1) // 2
    result = np.full(series.shape, np.nan)
    if series.size >= window:
        cumulative = np.concatenate([[0.0], np.cumsum(series)])
        result[half:series.size - half] = (cumulative[window:] - cumulative[:-window]) / window
    return result


def quantity_of_interest(grid: Grid, region=NE_PACIFIC_BOX, point=None, radius_km: float = 300.0) -> np.ndarray:
    """Weights q over ocean cells with Q = q . T: the area-weighted mean over `region` (a box),
    or, with point=(lat, lon), a Gaussian-smoothed point of e-folding radius radius_km."""
    if point is not None:
        if not radius_km > 0:
            raise InputError(f"radius_km must be positive, got {radius_km}")
        weights = grid.cell_area * np.exp(-0.5 * (grid.distances_km(*point) / radius_km) ** 2)
        if weights.max() < 1e-6:
            raise InputError(f"no ocean cell within a few radii ({radius_km} km) of the point {point}")
        weights[weights < 1e-6 * weights.max()] = 0.0  # a compact footprint
    else:
        inside = grid.region(region)
        if not inside.any():
            raise InputError(f"the QoI region {region} holds no ocean cell of the grid")
        weights = grid.cell_area * inside
    return weights / weights.sum()


# ---------------------------------------------------------------------------------------------
# The tendency matrix L (per day)


def _tendency(grid: Grid, p: OceanParameters):
    """L = -1/tau + diffusion + advection along the pathways, as a CSR matrix (per day), and
    the pathway of each cell ('equatorial', 'coastal', 'drift' flags) for plotting and tests."""
    n_lat, n_lon = grid.shape
    index = np.full(grid.shape, -1)
    index[grid.ocean] = np.arange(grid.n_ocean)
    lat_rad = np.deg2rad(grid.lat)
    step = np.deg2rad(grid.resolution)
    rows, columns, values = [], [], []

    def couple(i, j, rate):  # dT_i/dt += rate (T_j - T_i), rate per day >= 0
        rows.extend((i, i))
        columns.extend((j, i))
        values.extend((rate, -rate))

    per_day = SECONDS_PER_DAY
    # Diffusion in flux form: (1 / area_i) kappa (T_j - T_i) edge_ij / distance_ij.
    kappa = p.diffusivity_m2_s
    if kappa > 0:
        for r in range(n_lat):
            for c in range(n_lon):
                i = index[r, c]
                if i < 0:
                    continue
                if c + 1 < n_lon and index[r, c + 1] >= 0:   # east-west neighbours
                    rate = kappa * per_day / (EARTH_RADIUS_M * np.cos(lat_rad[r]) * step) ** 2
                    couple(i, index[r, c + 1], rate)
                    couple(index[r, c + 1], i, rate)
                if r + 1 < n_lat and index[r + 1, c] >= 0:   # north-south neighbours
                    edge = np.cos((lat_rad[r] + lat_rad[r + 1]) / 2)
                    base = kappa * per_day * edge / (EARTH_RADIUS_M * step) ** 2
                    couple(i, index[r + 1, c], base / np.cos(lat_rad[r]))
                    couple(index[r + 1, c], i, base / np.cos(lat_rad[r + 1]))

    def advect(downstream, upstream, speed_m_s):
        """Upwind transport from cell `upstream` into `downstream`: speed / centre distance."""
        distance = 1e3 * _great_circle_km(grid.cell_lat[downstream], grid.cell_lon[downstream],
                                          grid.cell_lat[upstream], grid.cell_lon[upstream])
        couple(downstream, upstream, speed_m_s * per_day / distance)

    pathways = {name: np.zeros(grid.n_ocean, dtype=bool) for name in ("equatorial", "coastal", "drift")}
    # Eastward transport along rows: the equatorial waveguide and the mid-latitude drift.
    south, north = p.drift_lat_deg
    for r in range(n_lat):
        speed = 0.0
        if abs(grid.lat[r]) <= p.equatorial_half_width_deg:
            speed, name = p.equatorial_speed_m_s, "equatorial"
        elif south <= grid.lat[r] <= north:
            speed, name = p.drift_speed_m_s, "drift"
        if speed <= 0:
            continue
        for c in range(1, n_lon):
            if index[r, c] >= 0 and index[r, c - 1] >= 0:
                advect(index[r, c], index[r, c - 1], speed)
                pathways[name][index[r, c]] = True
    # The coastal waveguide: cells with a continent immediately east, linked poleward from the
    # equatorial band (each coastal cell takes its upstream from the nearest coastal cell one
    # row closer to the equator, so the chain follows a coast that steps east or west).
    if p.coastal_speed_m_s > 0:
        from scipy import ndimage

        coastal = _eastern_boundary(grid, p.continent_min_cells)
        basins = ndimage.label(grid.ocean)[0]
        for r in range(n_lat):
            if abs(grid.lat[r]) <= p.equatorial_half_width_deg:
                continue
            toward_equator = r - 1 if grid.lat[r] > 0 else r + 1
            if not 0 <= toward_equator < n_lat:
                continue
            upstream_columns = np.flatnonzero(coastal[toward_equator])
            for c in np.flatnonzero(coastal[r]):
                # the same coast in the same basin, at most four cells away (a coast may step
                # several cells east or west from one row to the next at coarse resolution)
                near = upstream_columns[(np.abs(upstream_columns - c) <= 4)
                                        & (basins[toward_equator, upstream_columns] == basins[r, c])]
                if near.size == 0:
                    continue
                upstream = near[np.argmin(np.abs(near - c))]
                advect(index[r, c], index[toward_equator, upstream], p.coastal_speed_m_s)
                pathways["coastal"][index[r, c]] = True
    damping = -1.0 / p.damping_days   # per day
    rows.extend(range(grid.n_ocean))
    columns.extend(range(grid.n_ocean))
    values.extend([damping] * grid.n_ocean)
    tendency = sparse.coo_matrix((values, (rows, columns)), shape=(grid.n_ocean,) * 2).tocsr()
    tendency.sum_duplicates()
    return tendency, pathways


def _eastern_boundary(grid: Grid, continent_min_cells: int) -> np.ndarray:
    """[lat, lon] bool: ocean cells whose eastern neighbour belongs to a continent (a land piece
    of at least continent_min_cells cells, so islands make no coastal waveguide)."""
    from scipy import ndimage

    land = ~grid.ocean
    labels, count = ndimage.label(land, structure=np.ones((3, 3)))
    sizes = ndimage.sum(land, labels, np.arange(1, count + 1))
    continent = np.isin(labels, 1 + np.flatnonzero(sizes >= continent_min_cells))
    coastal = np.zeros(grid.shape, dtype=bool)
    coastal[:, :-1] = grid.ocean[:, :-1] & continent[:, 1:]
    return coastal


# ---------------------------------------------------------------------------------------------
# Stochastic atmospheric forcing


class CorrelatedForcing:
    """Daily forcing (K/day), white in time, Gaussian in space with covariance
    std^2 exp(-distance / correlation_length) between ocean cells (a valid covariance on the
    sphere with great-circle distance). Atmospheric heat-flux anomalies decorrelate over
    roughly 1000-2000 km; 1500 km is the default. Drawn through the leading eigenvectors of the
    covariance that hold `variance_kept` of its variance (the small-scale rest is dropped:
    that keeps long runs fast), from numpy's PCG64 seeded with `seed`."""

    def __init__(self, grid: Grid, std: float = 0.1, correlation_length_km: float = 1500.0, seed: int = 0,
                 variance_kept: float = 0.99):
        if not (np.isfinite(std) and std > 0):
            raise InputError(f"forcing std must be positive, got {std}")
        if not correlation_length_km > 0:
            raise InputError(f"correlation_length_km must be positive, got {correlation_length_km}")
        if not 0 < variance_kept <= 1:
            raise InputError(f"variance_kept must be in (0, 1], got {variance_kept}")
        import torch
        self.grid, self.n_ocean, self.seed = grid, grid.n_ocean, int(seed)
        lat, lon = grid.cell_lat, grid.cell_lon
        distance = _great_circle_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
        covariance = np.exp(-distance / correlation_length_km)
        # torch's LAPACK, not numpy's: its threads follow torch.set_num_threads, so the factor (and
        # every run) is bit-identical for a fixed thread count; numpy's OpenBLAS picks its own.
        values, vectors = torch.linalg.eigh(torch.from_numpy(covariance))
        eigenvalues, eigenvectors = values.numpy()[::-1].clip(0.0, None), vectors.numpy()[:, ::-1]
        kept = int(np.searchsorted(np.cumsum(eigenvalues) / eigenvalues.sum(), variance_kept) + 1)
        kept = min(kept, eigenvalues.size)
        # Rescaled so each cell keeps variance std^2 after the truncation.
        factor = eigenvectors[:, :kept] * np.sqrt(eigenvalues[:kept])
        factor *= (std / np.sqrt((factor**2).sum(axis=1)))[:, None]
        self.factor = np.ascontiguousarray(factor)          # [n_ocean, modes]
        self._factor_transposed = torch.from_numpy(np.ascontiguousarray(factor.T))
        self.modes = kept

    def stream(self, chunk_days: int = 1000):
        """An endless iterator of [chunk_days, n_ocean] forcing chunks (same seed, same stream)."""
        import torch

        generator = np.random.Generator(np.random.PCG64(self.seed))
        while True:
            draws = torch.from_numpy(generator.standard_normal((int(chunk_days), self.modes)))
            yield (draws @ self._factor_transposed).numpy()   # torch threads, as above

    def draw(self, n_days: int, chunk_days: int = 1000) -> np.ndarray:
        """The first n_days of the stream, [n_days, n_ocean]."""
        chunks, have = [], 0
        for chunk in self.stream(chunk_days):
            chunks.append(chunk)
            have += chunk.shape[0]
            if have >= n_days:
                break
        return np.concatenate(chunks)[:n_days]
