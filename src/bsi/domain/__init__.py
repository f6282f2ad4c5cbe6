"""Pure domain logic: no I/O, no clock. Time is always a parameter.

Importable without FastAPI, SQLAlchemy or httpx, so the server, the Linux agent
and the Apple compliance report share one implementation of every rule.
"""
