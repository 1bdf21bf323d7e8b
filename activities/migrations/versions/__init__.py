# A package only so the revisions ship with the wheel; Alembic skips this file.
