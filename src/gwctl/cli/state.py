"""Process-wide CLI state set by the root callback (the --store option)."""

STORE_OPTION: str | None = None
