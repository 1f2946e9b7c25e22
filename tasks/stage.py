"""The entry point shared by every `python -m tasks.<stage>` command that dvc.yaml runs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from tasks.config import Paths, load_params
from tasks.errors import NichetuneError
from tasks.layout import stage
from tasks.runtime import quiet_offline_defaults


def stage_main(name: str, argv: list[str] | None = None) -> None:
    """Parse `--params FILE` and `--set K=V`, run stage `name`'s function from tasks.layout from the project root,
    print errors as one line."""
    parser = argparse.ArgumentParser(description=(sys.modules["__main__"].__doc__ or "").strip())
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    quiet_offline_defaults()
    try:
        params = load_params(Path(args.params), args.overrides)
        result = stage(name).function()(params, Paths.of(Path.cwd(), params))
    except NichetuneError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(_describe(result))


def _describe(result: object) -> str:
    """What a stage returned, as readable text: strings as they are, records as indented JSON."""
    if isinstance(result, str):
        return result
    record = dataclasses.asdict(result) if dataclasses.is_dataclass(result) else result
    return json.dumps(record, indent=2, default=str)
