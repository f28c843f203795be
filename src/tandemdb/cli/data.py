"""`tandem sql` and `tandem files put | get | ls | rm`: an environment's rows and files."""

import base64
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .base import Typer
from .connection import (
    DEFAULT_DATA,
    CliError,
    Data,
    Json,
    Token,
    Url,
    connect,
    console,
    print_json,
    reported,
)

files_app = Typer(help="Store, fetch, list and remove an environment's files.",
                        no_args_is_help=True)

Env = Annotated[str, typer.Argument(help="Environment name.", show_default=False)]
FilePath = Annotated[str, typer.Argument(help="File path inside the environment, e.g. "
                                              "invoices/1.pdf.", show_default=False)]
ReadRegion = Annotated[str | None, typer.Option(
    "--read-region", show_default=False,
    help="Read from this region's replica (a secondary) instead of the primary.")]
MinLsn = Annotated[int | None, typer.Option(
    "--min-lsn", min=0, show_default=False,
    help="Wait until the replica has applied this lsn (read-your-writes).")]


def parse_param(text: str) -> Any:
    """A command-line parameter: JSON when it parses (1, 2.5, null, true, "x"), else text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def sql(
    env: Env,
    statement: Annotated[str, typer.Argument(metavar="SQL", help="One SQL statement.",
                                             show_default=False)],
    params: Annotated[list[str] | None, typer.Argument(
        metavar="PARAM", show_default=False,
        help="Values for the statement's ? placeholders; each is read as JSON when it "
             "parses (42, 2.5, null, true), else as text. Use -- before negative numbers.")
    ] = None,
    read_region: ReadRegion = None,
    min_lsn: MinLsn = None,
    as_json: Json = False, url: Url = None, token: Token = None, data: Data = DEFAULT_DATA,
) -> None:
    """Run one SQL statement in an environment and print its rows (or JSON)."""
    from .tables import rows_table

    values = [parse_param(p) for p in params or []]
    with reported(), connect(url, token, data) as client:
        answer = client.sql(env, statement, values, read_region=read_region, min_lsn=min_lsn)
    if as_json:
        print_json(answer)
        return
    out = console()
    for result in answer.get("results", []):
        if result.get("columns"):
            out.print(rows_table(result))
            out.print(f"{len(result.get('rows') or [])} row(s)", style="dim")
        else:
            line = f"{result.get('rows_affected', 0)} row(s) affected"
            if result.get("last_insert_rowid"):
                line += f", last insert rowid {result['last_insert_rowid']}"
            out.print(line)
    out.print(f"lsn {answer.get('lsn')} · epoch {answer.get('epoch')} · "
              f"region {answer.get('region')}", style="dim")


@files_app.command("put")
def put(
    env: Env, path: FilePath,
    local: Annotated[str, typer.Argument(metavar="[LOCAL_FILE|-]",
                                         help="File to upload; - (default) reads stdin.")] = "-",
    as_json: Json = False, url: Url = None, token: Token = None, data: Data = DEFAULT_DATA,
) -> None:
    """Store a file (from LOCAL_FILE or stdin) at PATH."""
    with reported(), connect(url, token, data) as client:
        if local == "-":
            answer = client.put_file(env, path, sys.stdin.buffer.read())
        else:
            with open(local, "rb") as source:
                answer = client.put_file(env, path, source,
                                         size=os.fstat(source.fileno()).st_size)
    if as_json:
        print_json(answer)
        return
    console().print(f"put {answer.get('path', path)}: {answer.get('size')} bytes, "
                    f"lsn {answer.get('lsn')} (region {answer.get('region')})")


@files_app.command("get")
def get(
    env: Env, path: FilePath,
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", show_default=False,
        help="Write to this file instead of stdout.")] = None,
    read_region: ReadRegion = None,
    min_lsn: MinLsn = None,
    as_json: Json = False, url: Url = None, token: Token = None, data: Data = DEFAULT_DATA,
) -> None:
    """Fetch a file; writes its bytes to stdout, or to -o FILE."""
    if output == Path("-"):
        output = None
    with reported():
        with connect(url, token, data) as client:
            content = client.get_file(env, path, read_region=read_region, min_lsn=min_lsn)
        if output is not None:
            if output.is_dir():
                raise CliError(f"{output} is a directory; give a file name")
            output.write_bytes(content)
    if as_json:
        described: dict[str, Any] = {"path": path, "size": len(content)}
        if output is None:
            described["content_base64"] = base64.b64encode(content).decode()
        else:
            described["output"] = str(output)
        print_json(described)
    elif output is not None:
        console().print(f"wrote {len(content)} bytes to {output}")
    else:
        sys.stdout.buffer.write(content)
        sys.stdout.flush()


@files_app.command("ls")
def ls(
    env: Env,
    prefix: Annotated[str, typer.Option("--prefix", help="Only paths under this prefix.")] = "",
    read_region: ReadRegion = None,
    min_lsn: MinLsn = None,
    as_json: Json = False, url: Url = None, token: Token = None, data: Data = DEFAULT_DATA,
) -> None:
    """List files, optionally under a prefix."""
    from .tables import files_table

    with reported(), connect(url, token, data) as client:
        files = client.list_files(env, prefix, read_region=read_region, min_lsn=min_lsn)
    if as_json:
        print_json({"files": files})
        return
    console().print(files_table(files))


@files_app.command("rm")
def rm(env: Env, path: FilePath, as_json: Json = False, url: Url = None, token: Token = None,
       data: Data = DEFAULT_DATA) -> None:
    """Remove a file."""
    with reported(), connect(url, token, data) as client:
        answer = client.delete_file(env, path)
    if as_json:
        print_json(answer)
        return
    console().print(f"deleted {answer.get('deleted', path)} (lsn {answer.get('lsn')})")
