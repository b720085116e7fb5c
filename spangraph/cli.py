"""The ``spangraph`` command: inspect a run's log written as OTLP/JSON."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .tracing import LogDAG


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spangraph", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("log", help="summarise a LogDAG from an OTLP/JSON file")
    show.add_argument("path", help="an OTLP/JSON lines file (Run.log.write_otlp_json)")
    show.add_argument("--render", metavar="OUT", help="also draw it (.svg, .png or .pdf)")
    args = parser.parse_args(argv)
    try:
        dag = LogDAG.from_otlp_json(args.path)
    except (OSError, ValueError, KeyError) as exc:
        print(f"spangraph: cannot read {args.path}: {exc}", file=sys.stderr)
        return 2
    totals = dag.totals()
    print(dag)
    print(
        f"generations {totals.generations} (attempts {totals.attempts}), tasks {totals.tasks}, "
        f"tokens {totals.input_tokens} in / {totals.output_tokens} out, "
        f"{totals.cached_tokens} cached, {totals.cache_hits} cache hits, "
        f"{totals.failures} failed, {totals.skipped} skipped"
    )
    path = dag.critical_path()
    print(
        f"critical path ({sum(n.duration for n in path):.3f} s): "
        + " -> ".join(n.label for n in path)
    )
    if args.render:
        suffix = args.render.rsplit(".", 1)[-1]
        print(f"drawn to {dag.render(args.render, format=suffix)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
