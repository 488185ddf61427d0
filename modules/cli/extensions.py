"""``extensions`` (what loaded, failed or is disabled), and the extensions' own commands: loading them for a
command line and running one (its failure is one line, not a traceback)."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from modules.cli.base import Command
from modules.cli.settings import add_extension_flags, settings_from_args
from modules.errors import VisageError

log = logging.getLogger(__name__)


def configure(p) -> None:
    p.add_argument("--json", action="store_true")


def run(args) -> int:
    items = args.extensions.summary() if getattr(args, "extensions", None) is not None else []
    if args.json:
        print(json.dumps(items, ensure_ascii=False, indent=2))
        return 0
    for item in items:
        state = {"failed": f"failed: {item['error']}",
                 "disabled": f"disabled ({item['disabled_by']})"}.get(item["state"], item["state"])
        print(f"{item['name']}\t{item['version'] or '-'}\t{','.join(item['provides']) or '-'}\t{state}")
    return 0


def load_cli_extensions(argv: list[str] | None):
    """The extensions for this command line (its --extensions-dir / --disable-extension flags, given before
    the command). Cheap and torch-free: extensions do no heavy work when they register."""
    from modules.extensions import load_from_settings

    pre = argparse.ArgumentParser(add_help=False)
    add_extension_flags(pre)
    known, _rest = pre.parse_known_args(argv)
    return load_from_settings(settings_from_args(known))


def add_extension_commands(sub, extensions, taken) -> None:
    """The extensions' commands as sub-parsers (a name in ``taken`` or a broken ``configure`` is skipped)."""
    for cmd in (extensions.cli_commands if extensions is not None else ()):
        if cmd.name in taken:
            print(f"warning: extension {cmd.extension}: command {cmd.name!r} is Visage's own; skipped", file=sys.stderr)
            continue
        try:
            cmd.configure(argparse.ArgumentParser(prog=cmd.name))  # a dry run: a broken one is skipped
        except Exception as exc:  # noqa: BLE001 - an extension's broken configure is a warning, not a crash
            print(f"warning: extension {cmd.extension}: command {cmd.name!r} skipped: configure raised "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        help_text = f"{cmd.help} [extension {cmd.extension}]"
        p = sub.add_parser(cmd.name, help=help_text, description=help_text)
        cmd.configure(p)
        p.set_defaults(extension_command=cmd)


def run_extension_command(cmd, args) -> int:
    try:
        code = cmd.run(args)
    except VisageError:
        raise
    except Exception as exc:  # noqa: BLE001 - an extension's failure is one line, not a traceback
        log.debug("extension command failed", exc_info=True)
        print(f"error: {cmd.name} (extension {cmd.extension}) failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return int(code or 0)


COMMANDS = (Command("extensions", "list the extensions: loaded, failed (with the error) or disabled, and what they "
                    "provide", run, configure),)
