"""The focal-al command line: thin wrappers over the public API (heavy imports inside commands)."""
from __future__ import annotations

import click

from focal_al import __version__


@click.group()
@click.version_option(__version__, "--version", package_name="focal-al", prog_name="focal-al")
def main():
    """focal-al: patch-wise active learning for cell and gland image segmentation (FocAnnot)."""


@main.command()
@click.option("--pattern", default="*", show_default=True, help="Glob pattern on the names to list.")
def plugins(pattern):
    """List the registered criteria and strategies, their source packages, and plugins that failed."""
    from focal_al import registry

    rows = [("name", "kind", "source", "summary")]
    for name in registry.list_criteria(pattern):
        info = registry.criterion_info(name)
        rows.append((name, f"criterion/{info.kind}", f"{info.source} {info.version}".strip(), info.summary))
    for name in registry.list_strategies(pattern):
        info = registry.strategy_info(name)
        rows.append((name, f"strategy/{info.kind}", f"{info.source} {info.version}".strip(), info.summary))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3])
    failed = registry.failed_plugins()
    if failed:
        click.echo("\nPlugins that failed to load:")
        for f in failed:
            click.echo(f"  {f.source} {f.version} ({f.group}: {f.entry_point} = {f.value}): {f.error}")
