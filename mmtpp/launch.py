"""What every job entry point shares: config from YAML + overrides, and a Ray connection.

A job runs the same way on a laptop (no ``RAY_ADDRESS``: a local Ray is started) and on a
cluster (``ray job submit`` sets ``RAY_ADDRESS``; ``--address`` overrides it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from mmtpp.config import Config, describe, load_config
from mmtpp.progress import quiet_third_party


def parse_job_args(
    description: str,
    argv: list[str] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> tuple[Config, argparse.Namespace]:
    """Config and arguments of a job; ``add_arguments`` declares the job's own options."""
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (override with key=value):\n" + "\n".join(describe()),
    )
    parser.add_argument("--config", type=Path, help="YAML config (see jobs/configs/)")
    parser.add_argument(
        "--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)"
    )
    parser.add_argument(
        "--num-cpus", type=int, help="CPUs for a local Ray (default: all of this machine)"
    )
    if add_arguments is not None:
        add_arguments(parser)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    return config, args


def connect_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to a cluster, or start a local Ray (with denormals flushed, see README)."""
    import ray
    import torch

    torch.set_flush_denormal(True)
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        # The dashboard serves the state API that Ray Train and Tune poll; keep it on.
        ray.init(num_cpus=num_cpus)


def run_job(
    description: str,
    body: Callable[[Config, argparse.Namespace], int | None],
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Parse, connect, run ``body``; a user error ends with a one-line message and code 1."""
    config, args = parse_job_args(description, add_arguments=add_arguments)
    quiet_third_party()
    connect_ray(args.address, args.num_cpus)
    try:
        code = body(config, args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)
