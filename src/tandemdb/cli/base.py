"""The Typer every `tandem` command tree is built with: typer's, with a cheaper --help flag.

typer (0.2x) declares each command's `--help` flag without a default, so every run reads
the flag as None and coerces that through a pydantic TypeAdapter built on first use:
importing pydantic and building the adapter costs more than the rest of `tandem version`
(about 10x a bare interpreter's start on its own). With a False default the flag is
already a bool and typer skips the coercion. Nothing else changes: same options, same help.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption


def _false_by_default(option: TyperOption | None) -> TyperOption | None:
    if option is not None and option.default is None:
        option.default = False
    return option


class Command(TyperCommand):
    """A command whose --help flag defaults to False."""

    def get_help_option(self, ctx: Any) -> TyperOption | None:
        return _false_by_default(super().get_help_option(ctx))


class Group(TyperGroup):
    """A command group whose --help flag defaults to False."""

    def get_help_option(self, ctx: Any) -> TyperOption | None:
        return _false_by_default(super().get_help_option(ctx))


class Typer(typer.Typer):
    """`typer.Typer` whose groups and commands are `Group` and `Command`."""

    def __init__(self, **options: Any) -> None:
        super().__init__(cls=Group, **options)

    def command(self, name: str | None = None, *, cls: type[TyperCommand] | None = None,
                **options: Any) -> Any:
        return super().command(name, cls=cls or Command, **options)
