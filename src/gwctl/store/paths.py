"""Where gwctl's files live: the store and the activity log.

Precedence follows clig.dev and CLI.md: a command-line option, then an
environment variable, then platformdirs' per-user directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

STORE_ENV = "GWCTL_STORE"
ACTIVITY_ENV = "GWCTL_ACTIVITY"


def store_path(option: str | None, environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    if option is not None and not option.strip():  # `--store "$UNSET"`: not a silent switch to another store
        from gwctl.errors import Exit, GwctlError

        raise GwctlError(
            "--store is empty",
            "give the store file's path, or leave --store out to use $GWCTL_STORE or the default",
            code=Exit.USAGE,
        )
    if option:
        return Path(option).expanduser()
    if environ.get(STORE_ENV):
        return Path(environ[STORE_ENV]).expanduser()
    import platformdirs  # only when neither --store nor $GWCTL_STORE names the store

    return Path(platformdirs.user_config_dir("gwctl")) / "gwctl.toml"


def default_activity_path() -> Path:
    import platformdirs  # only the activity, proxy and paths commands ask for this default

    return Path(platformdirs.user_data_dir("gwctl")) / "activity.sqlite3"
