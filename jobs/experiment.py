r"""Run an experiment: the variants of a config over several seeds, each through the whole
pipeline, reported with 95% intervals and paired differences to a reference variant.

    python jobs/experiment.py jobs/experiments/paper_ablations.yaml
    python jobs/experiment.py jobs/experiments/paper_ablations.yaml --report-only
    # the runs' scores kept in the repository: rebuild the report, or add seeds next to them
    python jobs/experiment.py jobs/experiments/paper_ablations.yaml \
        --import docs/results/paper_ablations [--report-only]
    python jobs/experiment.py jobs/experiments/paper_ablations.yaml --export DIR
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/experiment.py jobs/experiments/paper_ablations.yaml

Finished runs are skipped, so an interrupted experiment continues where it stopped. The report
(experiment.json, experiment.md, one plot per figure) lands in the file's report_dir (default:
its output_dir). Experiment files that share an output_dir share identical runs (a variant of
the same name and config is finished already). --export copies each finished run's config
stamp and per-target scores (no checkpoints) and the report to DIR; --import puts them back
under the output_dir, where a run they hold counts as finished if its config is unchanged.
"""

import argparse
import sys

from mmtpp.experiment import Experiment, export_scores, import_scores, report, run_experiment
from mmtpp.launch import connect_ray
from mmtpp.progress import quiet_third_party


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("experiment", help="experiment YAML (see jobs/experiments/)")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report")
    parser.add_argument(
        "--seeds", type=int, nargs="+", help="run only these of the file's seeds (a slice)"
    )
    parser.add_argument(
        "--import", dest="import_dir", metavar="DIR", help="first take the runs exported to DIR"
    )
    parser.add_argument(
        "--export", metavar="DIR", help="at the end copy the runs' scores and the report to DIR"
    )
    parser.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or local)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="for every run")
    args = parser.parse_args()
    quiet_third_party()
    try:
        exp = Experiment.load(args.experiment, args.overrides)
        if args.seeds:
            if unknown := set(args.seeds) - set(exp.seeds):
                raise ValueError(f"--seeds {sorted(unknown)} not among the file's {exp.seeds}")
            exp.seeds = [s for s in exp.seeds if s in args.seeds]
        for variant, seed in exp.runs():
            exp.config(variant, seed)  # every run's config is valid before anything runs
        if args.import_dir:
            taken = import_scores(exp, args.import_dir)
            print(f"imported {len(taken)} finished runs from {args.import_dir}", flush=True)
        if args.report_only:
            result = report(exp)
        else:
            connect_ray(args.address)
            result = run_experiment(exp)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print((exp.report_path / "experiment.md").read_text())
    print(f"report in {exp.report_path} ({len(result['variants'])} variants)")
    if args.export:
        copied = export_scores(exp, args.export)
        print(f"exported {len(copied)} finished runs and the report to {args.export}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
