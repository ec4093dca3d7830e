"""Resolving a source's credential at use time.

The store may hold a literal value (``auth_value``) or the name of an
environment variable (``auth_env``) so that the file can live in git. The
variable is read only when a request or a test needs it; a missing variable is
a user error that says which source and which variable.
"""

from __future__ import annotations

import os
from typing import Mapping

from gwctl.core.config import Source
from gwctl.core.headers import auth_header_pair
from gwctl.errors import GwctlError


def resolve(source: Source, environ: Mapping[str, str] | None = None) -> str | None:
    """The credential's value, or None when the source has none."""
    environ = os.environ if environ is None else environ
    if source.auth.env:
        from gwctl.core.validate import env_name_problem

        problem = env_name_problem(source.auth.env, f"the auth_env of source {source.name}")
        if problem:  # said without repeating it: a credential pasted there must not be printed
            raise GwctlError(
                problem, f"fix it with: gwctl source edit {source.name} --auth-env VAR (or --auth-value -)"
            )
        value = environ.get(source.auth.env)
        if not value:
            raise GwctlError(
                f"source {source.name} reads its credential from ${source.auth.env}, which is not set",
                f"export {source.auth.env}=... or store a value with: gwctl source edit {source.name} --auth-value -",
            )
        return value
    return source.auth.value or None


def auth_headers(source: Source, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The header(s) that carry the source's credential upstream."""
    value = resolve(source, environ)
    if value is None:
        return {}
    from gwctl.core.validate import auth_header_problem

    problem = source.auth_header and auth_header_problem(source.auth_header, f"the auth header of source {source.name}")
    if problem:  # said without repeating it: a credential pasted there must not be printed
        raise GwctlError(
            problem,
            f"fix it with: gwctl source edit {source.name} --auth-header NAME "
            "(or --auth-header '' for Authorization: Bearer)",
        )
    try:
        name, sent = auth_header_pair(source.auth_header, value)
    except ValueError as exc:
        raise GwctlError(
            f"the credential of source {source.name} cannot be sent as a header: {exc}",
            f"store it again with: gwctl source edit {source.name} --auth-value -",
        ) from None
    return {name: sent}
