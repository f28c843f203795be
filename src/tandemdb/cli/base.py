"""The Typer every `tandem` command tree is built with: typer's, made cheaper to start.

Two choices, both measured with `tandem bench startup` (bench/README.md):

- typer (0.2x) declares each command's `--help` flag without a default, so every run reads
  the flag as None and coerces that through a pydantic TypeAdapter built on first use:
  importing pydantic and building the adapter cost more than all the rest of `tandem
  version`. With a False default the flag is already a bool and typer skips the coercion.
- Help and usage errors are click's plain text (`rich_markup_mode=None`), not typer's rich
  panels: rendering those imports rich's console, markdown and markdown-it, which alone
  took `tandem --help` from about 9x to about 19x a bare interpreter's start. The plain
  text has the same sections, options, defaults and wording, without boxes or colour.
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
    """`typer.Typer` whose groups and commands are `Group` and `Command`, plain help."""

    def __init__(self, **options: Any) -> None:
        super().__init__(cls=Group, rich_markup_mode=None, **options)

    def command(self, name: str | None = None, *, cls: type[TyperCommand] | None = None,
                **options: Any) -> Any:
        return super().command(name, cls=cls or Command, **options)
