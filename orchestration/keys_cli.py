"""`pulse keys`: make API keys and the hashes that PULSE_*_KEYS and PULSE_KEYS_FILE store
(docs/security.md)."""

from __future__ import annotations

import secrets
import sys

import click
import yaml

from streaming.api.auth import Scope, hash_key

KEY_BYTES = 32  # 256 random bits: a SHA-256 digest of such a key cannot be reversed by guessing


@click.group()
def keys() -> None:
    """Make API keys and their hashes (for PULSE_*_KEYS and PULSE_KEYS_FILE)."""


@keys.command(name="hash")
@click.argument("key", required=False)
def hash_command(key: str | None) -> None:
    """Print sha256:<hex> of KEY, or of each line on stdin (keeps the key out of shell history)."""
    if key is not None:
        click.echo(hash_key(key))
        return
    if sys.stdin.isatty():
        click.echo(hash_key(click.prompt("key", hide_input=True)))
        return
    lines = [line.strip() for line in sys.stdin.read().splitlines() if line.strip()]
    if not lines:
        raise click.UsageError("no key given: pass it as an argument or on stdin")
    for line in lines:
        click.echo(hash_key(line))


@keys.command(name="new")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    default=["write"],
    show_default=True,
    type=click.Choice([s.value for s in Scope]),
    help="Scope of the key; repeat for several.",
)
@click.option("--name", default=None, help="Name of the entry in the keys file (shown in logs).")
def new_command(scopes: tuple[str, ...], name: str | None) -> None:
    """Generate a random key: print it once, then its keys-file entry (stderr and stdout)."""
    key = secrets.token_urlsafe(KEY_BYTES)
    entry = {
        "name": name or f"{'-'.join(scopes)}-key",
        "hash": hash_key(key),
        "scopes": list(dict.fromkeys(scopes)),
    }
    click.echo(f"key (shown once; give it to its client, store only the hash): {key}", err=True)
    click.echo(yaml.safe_dump([entry], sort_keys=False), nl=False)
