"""The ``spangraph`` group, and how the command ends: its exit status and messages."""

from __future__ import annotations

from collections.abc import Sequence

import click

from ._cache import cache_group
from ._export import export_command
from ._log import log_command
from ._models import models_command
from ._run import INTERRUPTED, run_command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="spangraph", message="%(prog)s %(version)s")
def cli() -> None:
    """Run spangraph programs, and look at their logs, span cache and models.

    Exit status: 0 done, 1 failed, 2 a usage error, 130 interrupted.
    """


cli.add_command(run_command)
cli.add_command(log_command)
cli.add_command(export_command)
cli.add_command(cache_group)
cli.add_command(models_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: the process's) and return its exit status.

    A usage error prints the usage line and the error (status 2); a failure prints
    ``Error: ...`` (status 1); Ctrl-C ends with status 130. No traceback is shown for
    any of them.
    """
    try:
        status = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="spangraph",
            standalone_mode=False,
        )
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):
            click.echo("interrupted", err=True)
            return INTERRUPTED
        click.echo("Aborted.", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return INTERRUPTED
    return status if isinstance(status, int) else 0
