"""Bring the case store's schema up to date: what the worker does at start and what
``python -m starter db upgrade`` runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL

from activities.db import async_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | URL) -> Config:
    """An Alembic config built in code, so no alembic.ini has to ship or be found."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Passed as an attribute, not a main option: ConfigParser would choke on a "%" in a password.
    config.attributes["url"] = async_url(url).render_as_string(hide_password=False)
    return config


async def upgrade(url: str | URL, revision: str = "head") -> None:
    # env.py runs its own event loop (asyncio.run), which cannot nest in the caller's loop.
    await asyncio.to_thread(command.upgrade, alembic_config(url), revision)


async def downgrade(url: str | URL, revision: str) -> None:
    await asyncio.to_thread(command.downgrade, alembic_config(url), revision)
