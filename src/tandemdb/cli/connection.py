"""What every API command shares: the connection options, the client, and error reporting.

A command finds the gateways from `--url`/`TANDEM_URL` (one URL, or several separated by
commas: a call moves on to the next when one cannot be reached, see client/gateways.py) and
`--token`/`TANDEM_TOKEN`, and whatever of the two is missing from the local deployment in
`--data` (default `./tandem-data`, every gateway it has). Failures are one line on stderr
and exit code 1, never a traceback.

Start-up: every command module is imported for any `tandem …` (Typer builds the whole
command tree), so modules import only typer and the standard library at the top. The SDK
(httpx), rich and the renderings are imported where a command runs (`console`,
`LazyConsole`, local imports), and the command modules do not postpone their annotations
(no `from __future__ import annotations`): typer reads every command's signature at each
start, and evaluating some 400 annotation strings cost ~20 ms. So `tandem version` and
`tandem --help` stay fast (`tandem bench startup` measures them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from tandemdb.client import Client

DEFAULT_DATA = Path("tandem-data")

Json = Annotated[bool, typer.Option("--json", help="Print JSON (one object) for scripts.")]
Url = Annotated[str | None, typer.Option(
    "--url", envvar="TANDEM_URL", show_default=False,
    help="Gateway URL, or several separated by commas (http://a:7070,http://b:7070). "
         "Default: the gateways of the local deployment in --data.")]
Token = Annotated[str | None, typer.Option(
    "--token", envvar="TANDEM_TOKEN", show_default=False,
    help="Admin token. Default: the token of the local deployment in --data.")]
Data = Annotated[Path, typer.Option(
    "--data", help="Local deployment directory, read when --url or --token is not given.")]


class CliError(Exception):
    """A failure to report as one line (the message already says what to do)."""


def fail(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(1)


@contextmanager
def reported() -> Iterator[None]:
    """Turn the failures a command can meet into one clear line and exit code 1."""
    from tandemdb.client import TandemError

    try:
        yield
    except TandemError as exc:
        fail(str(exc))
    except CliError as exc:
        fail(f"error: {exc}")
    except OSError as exc:  # local files: the input to upload, the output to write
        where = f": {exc.filename}" if exc.filename else ""
        fail(f"error: {exc.strerror or exc}{where}")
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def connect(url: str | None, token: str | None, data: Path) -> Client:
    """A client for `--url`/`--token`, completing what is missing from the deployment."""
    from tandemdb.client import Client
    from tandemdb.common.deployment import Deployment

    url, token = url or None, token or None  # an empty TANDEM_URL counts as unset
    urls: str | list[str] | None = url
    if urls is None or token is None:
        try:
            deployment = Deployment.load(data)
        except FileNotFoundError as exc:
            raise CliError(f"{exc}; or pass --url and --token "
                           "(or set TANDEM_URL and TANDEM_TOKEN)") from None
        except (OSError, ValueError, TypeError) as exc:
            raise CliError(f"cannot read the deployment in {data}: {exc}") from None
        urls = urls or getattr(deployment, "gateway_urls", lambda: [deployment.gateway_url])()
        token = token or deployment.token
    try:
        return Client(urls, token)
    except ValueError as exc:
        source = "--url (or TANDEM_URL)" if url else f"the deployment in {data}"
        raise CliError(f"bad gateway URL from {source}: {exc}") from None


def print_json(value: Any) -> None:
    print(json.dumps(value))


def console(**options: Any) -> Console:
    """A rich Console (stdout unless `stderr=True`); rich is imported on first use."""
    from rich.console import Console

    return Console(**options)


class LazyConsole:
    """A module's shared Console, made at its first use rather than at import."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            self._console = console(**self._options)
        return getattr(self._console, name)
