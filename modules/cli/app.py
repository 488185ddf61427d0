"""``python -m modules.cli <command> ...``: the parser over every command group, and ``main``.
Typed errors become one-line messages here."""
from __future__ import annotations

import argparse
import logging
import sys

from modules.cli import edge, extensions, faces, generate, lora, models, presets, tiny
from modules.cli.base import Command
from modules.cli.settings import add_extension_flags
from modules.errors import VisageError

#: the command groups, in the order ``--help`` lists them
GROUPS = (tiny, models, faces, generate, presets, lora, edge, extensions)


def commands() -> dict[str, Command]:
    """Visage's own commands by name."""
    return {c.name: c for group in GROUPS for c in group.COMMANDS}


def build_parser(loaded_extensions=None) -> argparse.ArgumentParser:
    """Visage's commands, then the extensions' (an ExtensionSet; a name Visage uses is skipped)."""
    parser = argparse.ArgumentParser(prog="python -m modules.cli", description="Visage command line")
    add_extension_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    own = commands()
    for command in own.values():
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        if command.configure:
            command.configure(p)
    extensions.add_extension_commands(sub, loaded_extensions, own)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    loaded = extensions.load_cli_extensions(argv)
    args = build_parser(loaded).parse_args(argv)
    args.extensions = loaded
    try:
        ext_cmd = getattr(args, "extension_command", None)
        if ext_cmd is not None:
            return extensions.run_extension_command(ext_cmd, args)
        return commands()[args.command].run(args)
    except VisageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
