"""Offline prediction: next events for every target of a dataset, on a pool of Ray Data actors
(design §7; ``jobs/predict.py``, and the evaluation's own predictions).

A target is (sequence, event index i): event i predicted from events < i (i = the sequence's
length predicts the event after its end). The driver cuts each Parquet row group's targets
into units of work of a few scoring batches; each ``PredictionActor`` (one ``Predictor`` for its
life, on a GPU each on a GPU cluster) reads its units' sequences, validates the sequences (a bad
one yields an error row per target, never a silent gap), scores them with
``scoring.score_sequences`` and writes ``part-<unit>.parquet``. ``manifest.json`` records
counts, errors, invalid counts and seconds. A rerun with the same model, data, targets,
options and code reuses the output (fingerprint); outputs are identical across runs.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mmtpp.decoding import DecodeOptions
from mmtpp.events import sequence_files, table_to_sequences
from mmtpp.scoring import PREDICTION_SCHEMA, PredictionRequest, PredictionRows, score_sequences

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
UNIT_BATCHES = 4  # scoring batches per unit of work: enough units to keep every actor busy


# --- the Ray Data job ---------------------------------------------------------------------


class PredictionActor:
    """Ray Data actor: one ``Predictor`` for its life; scores the units it is given
    (validated: a bad sequence's targets get an error row each) and writes each unit's
    ``part-<unit>.parquet``; returns counts."""

    def __init__(self, request: dict[str, Any], root: str, out_dir: str):
        from mmtpp.images import ImageSpec
        from mmtpp.predict import Predictor
        from mmtpp.progress import quiet_third_party

        quiet_third_party()
        self.request = _request(request)
        self.predictor = Predictor(
            self.request.model_dir, image_root=self.request.image_root, dtype=self.request.dtype
        )
        self.root = root
        self.out = Path(out_dir)
        self.spec = ImageSpec(self.predictor.spec.min_pixels, self.predictor.spec.max_pixels)

    def __call__(self, units: pa.Table) -> pa.Table:
        from mmtpp.validation import Checks, conform_table, validate_table

        counts = []
        for unit in units.to_pylist():
            table = conform_table(
                pq.ParquetFile(unit["file"]).read_row_group(unit["row_group"]), unit["file"]
            )
            wanted = dict(zip(unit["seq_ids"], unit["targets"], strict=True))
            table = table.filter(pa.array([s in wanted for s in table["seq_id"].to_pylist()]))
            checks = Checks(
                self.predictor.num_types, self.root, self.spec, trusted_root=self.request.image_root
            )
            good, rejected, _ = validate_table(table, unit["file"], checks)
            seqs = table_to_sequences(good)
            out = score_sequences(
                self.predictor, seqs, [wanted[s.seq_id] for s in seqs], self.request
            )
            errors = PredictionRows()
            for bad in rejected.to_pylist():
                reasons = "; ".join(f"{p['field']}: {p['message']}" for p in bad["problems"])
                for target in wanted[bad["seq_id"]]:
                    errors.add(seq_id=bad["seq_id"], target=target, error=f"invalid: {reasons}")
            table = pa.concat_tables([out, errors.table()])
            pq.write_table(table, self.out / f"part-{unit['unit']:05d}.parquet")
            counts.append({"unit": unit["unit"], "rows": table.num_rows})
        return pa.Table.from_pylist(counts)


def _request(data: dict[str, Any]) -> PredictionRequest:
    return PredictionRequest(
        **{
            **data,
            "curve_targets": frozenset(tuple(x) for x in data["curve_targets"]),
            "forecast_targets": frozenset(tuple(x) for x in data["forecast_targets"]),
            "options": DecodeOptions(**data["options"]),
            "tasks": tuple(data["tasks"]),
            "history_lengths": tuple(data["history_lengths"]),
        }
    )


def _request_dict(request: PredictionRequest) -> dict[str, Any]:
    return {
        **asdict(request),
        "options": request.options.model_dump(),
        "curve_targets": sorted(request.curve_targets),
        "forecast_targets": sorted(request.forecast_targets),
    }


@dataclass
class OfflineResult:
    output_dir: Path
    manifest: dict[str, Any]
    reused: bool

    def read(self) -> pa.Table:
        return read_predictions(self.output_dir)


def read_predictions(out_dir: str | Path) -> pa.Table:
    """Every prediction row, in unit order then target order (deterministic)."""
    files = sorted(Path(out_dir).glob("part-*.parquet"))
    if not files:
        return PREDICTION_SCHEMA.empty_table()
    return pa.concat_tables(pq.read_table(f) for f in files)


def _units(root: Path, targets: dict[str, list[int]], unit_targets: int) -> list[dict[str, Any]]:
    """Units of work: each row group's targets in file order, cut every ``unit_targets``
    (a multiple of the scoring batch, so every batch holds the targets it would hold if the
    row group were one unit: outputs do not depend on the cut nor on the number of actors).
    A row group holds up to 32 sequences, so one unit per row group would leave actors idle."""
    units = []
    for path in sequence_files(root):
        file = pq.ParquetFile(path)
        for g in range(file.num_row_groups):
            ids = [str(s) for s in file.read_row_group(g, columns=["seq_id"])["seq_id"].to_pylist()]
            items = [(s, t) for s in ids if s in targets for t in targets[s]]
            for start in range(0, len(items), unit_targets):
                chunk: dict[str, list[int]] = {}
                for s, t in items[start : start + unit_targets]:
                    chunk.setdefault(s, []).append(t)
                units.append(
                    {
                        "file": str(path),
                        "row_group": g,
                        "seq_ids": list(chunk),
                        "targets": list(chunk.values()),
                    }
                )
    for unit, row in enumerate(units):
        row["unit"] = unit
    return units


def _fingerprint(request: PredictionRequest, root: Path, targets: dict[str, list[int]]) -> str:
    from mmtpp.prepare import code_version, input_fingerprint

    model = hashlib.sha256()
    for f in sorted(Path(request.model_dir).rglob("*")):
        if f.is_file():
            model.update(f.relative_to(request.model_dir).as_posix().encode() + f.read_bytes())
    payload = {
        "request": _request_dict(request),
        "model": model.hexdigest(),
        "input": input_fingerprint(root),
        "targets": sorted((k, v) for k, v in targets.items()),
        "code": code_version(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def predict_dataset(
    request: PredictionRequest,
    dataset_root: str | Path,
    out_dir: str | Path,
    targets: dict[str, list[int]] | None = None,
    actors: int | None = None,
    gpus_per_actor: float = 0.0,
) -> OfflineResult:
    """Score ``targets`` (seq_id → event indices; None: the event after each sequence's end)
    of the dataset at ``dataset_root`` into ``out_dir`` on the connected Ray cluster, on
    ``actors`` actors (default: one per CPU, or per GPU with ``gpus_per_actor``)."""
    from mmtpp.events import read_info

    root = Path(dataset_root).resolve()
    read_info(root)  # a clear error if this is not a dataset
    out = Path(out_dir)
    if targets is None:
        targets = _next_event_targets(root)
    fp = _fingerprint(request, root, targets)
    old = _reusable_manifest(out, fp)
    if old is not None:
        print(f"predict: reusing {out} (model, data, targets and options unchanged)", flush=True)
        return OfflineResult(out, old, reused=True)
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for f in out.glob("part-*.parquet"):
        f.unlink()
    units = _units(root, targets, UNIT_BATCHES * request.batch_size)
    total = sum(len(t) for t in targets.values())
    pool = _pool_size(actors, gpus_per_actor, len(units))
    print(
        f"predict: {total} targets of {len(targets)} sequences in {len(units)} units on "
        f"{pool} actor(s)",
        flush=True,
    )
    _run_actors(units, request, root, out, pool, gpus_per_actor)
    table = read_predictions(out)
    manifest = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fp,
        "dataset": str(root),
        "model_dir": str(request.model_dir),
        "request": _request_dict(request),
        "targets": total,
        "rows": table.num_rows,
        "errors": _count(table, "error"),
        "invalid": {task: _count(table, f"{task}_invalid") for task in request.tasks},
        "actors": pool,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    print(
        f"predict: {table.num_rows} rows in {manifest['seconds']} s "
        f"({total / max(manifest['seconds'], 1e-9):.1f} targets/s), errors "
        f"{sum(manifest['errors'].values())}, invalid {manifest['invalid']}",
        flush=True,
    )
    return OfflineResult(out, manifest, reused=False)


def _reusable_manifest(out: Path, fingerprint: str) -> dict[str, Any] | None:
    """The manifest of a previous run in ``out`` with the same fingerprint and format, if
    any: its output can be reused as it is."""
    path = out / MANIFEST
    if not path.is_file():
        return None
    old = json.loads(path.read_text())
    if old.get("fingerprint") == fingerprint and old.get("format_version") == FORMAT_VERSION:
        return old
    return None


def _pool_size(actors: int | None, gpus_per_actor: float, units: int) -> int:
    """Actors to run: ``actors`` or one per CPU (per ``gpus_per_actor`` GPUs) of the
    cluster, at most one per unit and at least one."""
    import ray

    resources = ray.cluster_resources()
    if gpus_per_actor:
        pool = int(resources.get("GPU", 0) // gpus_per_actor)
    else:
        pool = int(resources.get("CPU", 1))
    return max(1, min(actors or pool, units or 1))


def _run_actors(
    units: list[dict[str, Any]],
    request: PredictionRequest,
    root: Path,
    out: Path,
    pool: int,
    gpus_per_actor: float,
) -> None:
    """Score every unit on ``pool`` ``PredictionActor``s (each writes its parts to ``out``)."""
    import ray

    ray.data.DataContext.get_current().execution_options.preserve_order = True
    if units:
        ray.data.from_items(units, override_num_blocks=len(units)).map_batches(
            PredictionActor,
            fn_constructor_kwargs={
                "request": _request_dict(request),
                "root": str(root),
                "out_dir": str(out.resolve()),
            },
            batch_size=1,
            batch_format="pyarrow",
            concurrency=pool,
            num_gpus=gpus_per_actor or None,
        ).take_all()


def _count(table: pa.Table, column: str) -> dict[str, int]:
    values = [v for v in table[column].to_pylist() if v is not None]
    if column == "error":
        values = [v.split(":", 1)[0] for v in values]
    return dict(Counter(values))


def _next_event_targets(root: Path) -> dict[str, list[int]]:
    """The event after each sequence's end (what "predict every open sequence" means)."""
    out = {}
    for path in sequence_files(root):
        table = pq.read_table(path, columns=["seq_id", "time"])
        for seq_id, times in zip(
            table["seq_id"].to_pylist(), table["time"].to_pylist(), strict=True
        ):
            out[str(seq_id)] = [len(times or [])]
    return out
