"""Alembic migrations, applied programmatically by ``Store.open`` (no alembic.ini needed).

To add one: ``alembic -c monitor/migrations/alembic.ini revision -m "what"`` then edit
the new file under ``versions/``; it runs on the next start of any command.
"""

from __future__ import annotations

import os

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

HERE = os.path.dirname(os.path.abspath(__file__))


def config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", HERE)
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    cfg = config()
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # instances starting together: one at a time
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7466218)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
