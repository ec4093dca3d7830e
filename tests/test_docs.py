"""Every command has --help with an example and is documented in the README."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import typer

from gwctl.cli import GROUPS, _LazyGroup, app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def leaf_commands():
    root = typer.main.get_command(app)
    ctx = click.Context(root)
    for name in GROUPS:
        cmd = _LazyGroup.get_command(root, ctx, name)
        if isinstance(cmd, click.Group):
            for sub in cmd.list_commands(ctx):
                yield f"{name} {sub}", cmd.get_command(ctx, sub)
        else:
            yield name, cmd


COMMANDS = list(leaf_commands())


def test_the_tree_has_every_contract_command():
    names = {n for n, _ in COMMANDS}
    for required in [
        "source add",
        "source edit",
        "source list",
        "source show",
        "source remove",
        "source test",
        "source refresh",
        "source probe",
        "model list",
        "model enable",
        "model disable",
        "model default",
        "catalog set",
        "catalog show",
        "catalog list",
        "catalog remove",
        "catalog export",
        "catalog import",
        "catalog price",
        "route set",
        "route list",
        "route remove",
        "route dry-run",
        "key create",
        "key list",
        "key revoke",
        "proxy",
        "activity list",
        "activity summary",
        "validate",
    ]:
        assert required in names


@pytest.mark.parametrize("name, cmd", COMMANDS, ids=[n for n, _ in COMMANDS])
def test_help_has_an_example_and_readme_documents_it(name, cmd):
    assert "Example: gwctl " in (cmd.help or ""), f"gwctl {name} --help has no example"
    assert f"gwctl {name}" in README, f"gwctl {name} is not in the README"
