"""Persistence: SQLAlchemy 2 models, the Store, and Alembic migrations.

SQLite (a file in the data directory) by default, PostgreSQL for scale; the
same code and the same conformance tests serve both.
"""
