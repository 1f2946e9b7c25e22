"""Progress a person can see: a bar with an ETA on a terminal, and one printed line per training epoch (and
per stage of ingesting a big file).

`nichetune --quiet` sets QUIET_ENV, which turns both off; the variable also reaches the DVC stages and the
Prefect runs the command starts. The lines are printed, not logged: the flows use `log_prints=True`, so a print
reaches the Prefect UI as well as the console."""

from __future__ import annotations

import multiprocessing
import os
import sys

from tqdm import tqdm

QUIET_ENV = "NICHETUNE_QUIET"


def quiet() -> bool:
    """True when the user asked for no progress output (QUIET_ENV set to anything but empty, 0 or false)."""
    return os.environ.get(QUIET_ENV, "").strip().lower() not in ("", "0", "false", "no")


def bars_shown() -> bool:
    """Bars only on a terminal (CI logs stay readable), only when not quiet, and only in the main process:
    parallel trials on Dask workers would draw over each other."""
    return not quiet() and sys.stderr.isatty() and multiprocessing.parent_process() is None


def bar(total: int, description: str, unit: str, shown: bool = True) -> tqdm:
    """A progress bar on stderr, counting `total` `unit`s with an ETA; a no-op object where bars are not shown,
    or with `shown` False (a step over before a bar could help). It clears itself when closed, so the lines
    printed meanwhile stay and the bar does not."""
    return tqdm(total=total, desc=description, unit=unit, disable=not (shown and bars_shown()), leave=False,
                dynamic_ncols=True, file=sys.stderr)


def epoch_line(epoch: int, epochs: int, loss: float, seconds: float, metric: str | None = None,
               value: float | None = None) -> str:
    """`epoch 2/5: loss 0.8123, validation macro_f1 0.6420, 3.1 s` (no validation part without a value)."""
    validation = f", validation {metric} {value:.4f}" if metric is not None and value is not None else ""
    return f"epoch {epoch}/{epochs}: loss {loss:.4f}{validation}, {seconds:.1f} s"


def say(line: str) -> None:
    """Print a progress line unless quiet, lifting any bar on the terminal out of its way first."""
    if quiet():
        return
    with tqdm.external_write_mode():
        print(line, flush=True)
