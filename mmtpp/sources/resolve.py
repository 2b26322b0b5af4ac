"""The dataset directory a config names: a given directory, or data generated or imported
under the run (``data.source`` = ``synthetic`` or ``nycflights``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmtpp.config import Config
from mmtpp.events import read_info, write_dataset
from mmtpp.progress import progress_printer

GENERATED_MARKERS = {"synthetic": "synth_config.json", "nycflights": "flights_config.json"}


def _wanted(config: Config) -> dict[str, Any]:
    """What the generated dataset must be made from (recorded in its marker file)."""
    d = config.data
    if d.source == "nycflights":
        return {"source": "nycflights", "max_sequences": d.synth_sequences or None}
    from mmtpp.sources.synthetic import SynthConfig

    synth = SynthConfig(num_sequences=d.synth_sequences, seed=d.synth_seed, process=d.synth_process)
    return synth.to_dict()


def resolve_dataset(config: Config) -> Path:
    """The dataset directory of a config; 'synthetic' generates it under the run and
    'nycflights' imports the NYC flights (``synth_sequences`` aircraft, 0 = all), again
    whenever the source or its settings change (a marker file records them)."""
    d = config.data
    if d.source not in GENERATED_MARKERS:
        root = Path(d.source)
        read_info(root)  # a clear error if this is not a dataset
        return root
    root = Path(config.output_dir) / "data"
    wanted = _wanted(config)
    marker = root / GENERATED_MARKERS[d.source]
    text = json.dumps(wanted, sort_keys=True, default=str)
    if marker.is_file() and marker.read_text() == text:
        return root
    for name in GENERATED_MARKERS.values():  # what the directory held is being replaced
        (root / name).unlink(missing_ok=True)
    if d.source == "nycflights":
        from mmtpp.sources.flights import load_nycflights

        print(f"importing NYC flights into {root}", flush=True)
        info, sequences = load_nycflights(max_sequences=wanted["max_sequences"])
        write_dataset(root, info, sequences)
    else:
        from mmtpp.sources.synthetic import SynthConfig, synthesize

        synthesize(SynthConfig(**wanted), root, progress=progress_printer("synthesizing"))
    marker.write_text(text)
    return root
