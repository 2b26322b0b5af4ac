"""What a synthetic city alert looks like: its type, its zone, a sentence and a map image.

Each alert happens in a zone of a 3×3 city grid: the sequence's home zone shifted by the
type, or anywhere (25%). The zone is named in the text and drawn as the marker position of a
small map image whose marker colour and shape show the type, so text and image carry what
the alert was and where it happened.

The map's background colour is the latent view of the process (``mmtpp.sources.synthetic``):
pale sand for the plain Hawkes process, the regime for process 'regime'
(``REGIME_BACKGROUNDS``), the hinted next type for process 'profile' (``HINT_BACKGROUNDS``),
each image's brightness nudged by a tint (``TINTS``) so that no colour is one exact value.
"""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image, ImageDraw

TYPE_NAMES = ("traffic", "power", "water", "noise", "fire", "medical")
ZONES = (
    "north-west",
    "north",
    "north-east",
    "west",
    "centre",
    "east",
    "south-west",
    "south",
    "south-east",
)
STREETS = (
    "Elm Street",
    "Harbour Road",
    "Mill Lane",
    "King Avenue",
    "Station Square",
    "Oak Boulevard",
    "Canal Walk",
    "Bridge Street",
    "Market Place",
    "Hill Road",
    "Chapel Row",
    "Quarry Lane",
    "Foundry Yard",
    "Willow Crescent",
)
TIMES_OF_DAY = ("early", "this morning", "around noon", "this afternoon", "tonight", "just now")
SEVERITY = ("minor", "moderate", "serious", "major")
TEMPLATES: dict[str, tuple[str, ...]] = {
    "traffic": (
        "Traffic jam near {street} in the {zone} district, about {n} cars queued {when}.",
        "{Sev} collision reported on {street} ({zone}); {n} vehicles delayed.",
        "Signal failure at {street}, {zone} side: expect {n} minutes of delay.",
        "Lane closure on {street} in the {zone} quarter after a {sev} breakdown.",
        "Bus diverted around {street} ({zone}), {n} stops skipped {when}.",
    ),
    "power": (
        "Power outage across {n} buildings in the {zone} district {when}.",
        "Voltage drop reported on {street} ({zone}), {n} homes affected.",
        "Substation alarm in the {zone} quarter; crews dispatched to {street}.",
        "{Sev} cable fault under {street} leaves the {zone} side dark.",
        "Streetlights out along {street} in the {zone} district, {n} lamps dark.",
    ),
    "water": (
        "Water main leak on {street} in the {zone} district, pressure down {n} percent.",
        "Flooded underpass near {street} ({zone}) with {n} cm of water {when}.",
        "Boil-water notice issued for {n} streets in the {zone} quarter.",
        "{Sev} burst pipe on {street}, {zone} side, road partly closed.",
        "Low water pressure reported by {n} households around {street} ({zone}).",
    ),
    "noise": (
        "Noise complaint from {street} in the {zone} district, {n} dB measured {when}.",
        "Late construction work on {street} ({zone}) reported by {n} residents.",
        "Street party near {street}, {zone} side, {n} complaints so far.",
        "Car alarm sounding for {n} minutes on {street} in the {zone} quarter.",
        "{Sev} disturbance from a bar on {street} ({zone}) reported {when}.",
    ),
    "fire": (
        "Smoke seen above {street} in the {zone} district {when}, {n} crews sent.",
        "{Sev} kitchen fire in a flat on {street} ({zone}), building evacuated.",
        "Bin fire next to {street}, {zone} side, put out in {n} minutes.",
        "Fire alarm at a warehouse on {street} in the {zone} quarter, {n} staff outside.",
    ),
    "medical": (
        "Ambulance called to {street} in the {zone} district {when}, {n} minutes away.",
        "{Sev} fall reported on {street} ({zone}); paramedics on scene.",
        "Heat exhaustion cases near {street}, {zone} side, {n} people treated.",
        "First aid requested at the market on {street} in the {zone} quarter.",
    ),
}
TYPE_COLOURS = (
    (220, 40, 40),
    (240, 190, 0),
    (30, 110, 230),
    (150, 60, 200),
    (240, 120, 20),
    (20, 160, 90),
)
MARKER_SHAPES = ("circle", "square", "triangle", "diamond", "circle", "square")
HOME_ZONE_SHIFT_PROB = 0.75  # otherwise the zone is uniform
JITTER_STEPS = 3  # marker jitter, quantised so a few hundred distinct images are cached
# Map background per regime (pale, so the type markers stay clear); TINTS nudge each image's
# background brightness so that the colour is not one exact value per regime.
REGIME_BACKGROUNDS = (
    (236, 232, 218),  # sand (the plain Hawkes maps' colour)
    (196, 232, 192),  # green
    (196, 214, 250),  # blue
    (248, 204, 200),  # rose
    (230, 196, 250),  # lilac
    (248, 242, 176),  # yellow
)
TINTS = (-6, 0, 6)  # colours >= 50 apart (L1), a tint moves one by <= 18: each names a regime
# Map background per hinted type (process 'profile'): an index into REGIME_BACKGROUNDS, a pale
# shade of the type's marker colour (traffic red → rose, power yellow → yellow, water blue →
# blue, noise purple → lilac, fire orange → sand, medical green → green).
HINT_BACKGROUNDS = (3, 5, 2, 4, 0, 1)


@functools.lru_cache(maxsize=4096)
def draw_map(
    zone: int,
    type_id: int,
    size: int,
    jitter: tuple[int, int] = (0, 0),
    background: tuple[int, int, int] = REGIME_BACKGROUNDS[0],
) -> bytes:
    """A small map patch as PNG bytes: blocks and streets on a 3×3 grid, and a marker in the
    event's zone whose colour and shape show its type. ``jitter`` (each in −1..1) nudges the
    marker by up to 15% of a cell; ``background`` is the land colour (the regime, for process
    'regime'). Cached: a dataset has only zones × types × 9 (× backgrounds) images."""
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    cell = size / 3
    road = max(1, size // 28)
    for i in (1, 2):
        draw.line([(i * cell, 0), (i * cell, size)], fill=(255, 255, 255), width=road + 1)
        draw.line([(0, i * cell), (size, i * cell)], fill=(255, 255, 255), width=road + 1)
    draw.line([(0, size * 0.8), (size, size * 0.55)], fill=(150, 190, 230), width=road)  # river
    cx = (zone % 3 + 0.5 + 0.15 * jitter[0]) * cell
    cy = (zone // 3 + 0.5 + 0.15 * jitter[1]) * cell
    r = cell * 0.32
    colour = TYPE_COLOURS[type_id % len(TYPE_COLOURS)]
    shape = MARKER_SHAPES[type_id % len(MARKER_SHAPES)]
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    buf = io.BytesIO()
    image.quantize(colors=16).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def zones_for(types: np.ndarray, home: int, rng: np.random.Generator) -> np.ndarray:
    """Zone per event: the home zone shifted by the type, or (25%) anywhere."""
    zones = (home + types) % len(ZONES)
    wander = rng.random(types.size) >= HOME_ZONE_SHIFT_PROB
    zones[wander] = rng.integers(0, len(ZONES), int(wander.sum()))
    return zones


def make_text(type_id: int, zone: int, rng: np.random.Generator) -> str:
    """One sentence about the alert, naming its zone (8–20 words)."""
    templates = TEMPLATES[TYPE_NAMES[type_id]]
    sev = SEVERITY[int(rng.integers(len(SEVERITY)))]
    return templates[int(rng.integers(len(templates)))].format(
        zone=ZONES[zone],
        street=STREETS[int(rng.integers(len(STREETS)))],
        n=int(rng.integers(2, 95)),
        when=TIMES_OF_DAY[int(rng.integers(len(TIMES_OF_DAY)))],
        sev=sev,
        Sev=sev.capitalize(),
    )


def land_colour(regime_id: int, tint: int) -> tuple[int, int, int]:
    """The map's land colour: background ``regime_id`` of ``REGIME_BACKGROUNDS`` with tint
    ``tint`` (an index into ``TINTS``), clipped to 0..255."""
    red, green, blue = (min(255, max(0, c + TINTS[tint])) for c in REGIME_BACKGROUNDS[regime_id])
    return red, green, blue
