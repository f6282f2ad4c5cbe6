"""Admin API paths that clients outside the server call, written once.

Importable without FastAPI: ``bsi supplement publish --server`` and the
fleet simulator call them; the admin router mounts them.
"""

ADMIN_PREFIX = "/v1/admin"
#: Re-read the TUF repository the server hosts into its catalogue, and wake
#: devices waiting on the long poll (``bsi serve --tuf-repo-dir``).
SYNC_REPOSITORY_PATH = f"{ADMIN_PREFIX}/catalog/sync-repository"
