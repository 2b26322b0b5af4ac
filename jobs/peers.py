r"""EasyTPP's neural TPPs next to mmtpp, on the targets an evaluation scored (docs/peers.md).

    python jobs/peers.py --run runs/tiny_cpu                      # after jobs/pipeline.py
    python jobs/peers.py --prepared DIR --report DIR --peers THP,NHP,IntensityFree --epochs 10

Trains each peer on the training split the run was prepared from (times and types only),
scores exactly the report's targets and writes peers.json / peers.md next to the report:
every figure with its 95% interval and each row minus mmtpp, paired on the targets. Needs
the 'peers' extra (pip install -e '.[peers]').
"""

import argparse
import json
import sys
from pathlib import Path

from mmtpp.peer_compare import compare, format_comparison
from mmtpp.peer_models import PEER_NAMES, PeerSettings


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, help="a pipeline's output_dir (prepared/, report/)")
    parser.add_argument("--prepared", type=Path, help="prepared data dir (default RUN/prepared)")
    parser.add_argument("--report", type=Path, help="evaluation report dir (default RUN/report)")
    parser.add_argument(
        "--peers", default=",".join(PEER_NAMES), help=f"comma-separated, from {PEER_NAMES}"
    )
    defaults = PeerSettings()
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="at most (early stop)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="peer initialisation")
    args = parser.parse_args()
    prepared = args.prepared or (args.run / "prepared" if args.run else None)
    report = args.report or (args.run / "report" if args.run else None)
    if prepared is None or report is None:
        parser.error("give --run, or both --prepared and --report")
    try:
        settings = PeerSettings(epochs=args.epochs, seed=args.seed)
        result = compare(prepared, report, args.peers.split(","), settings)
    except (ValueError, FileNotFoundError, KeyError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    text = format_comparison(result)
    (report / "peers.json").write_text(json.dumps(result, indent=1))
    (report / "peers.md").write_text(text)
    print(text)
    print(f"wrote {report / 'peers.md'} and peers.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
