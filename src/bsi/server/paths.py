"""Admin API paths that clients outside the server call, written once.

Importable without FastAPI: ``bsi supplement publish --server`` and the
fleet simulator call them; the admin router mounts them.
"""

ADMIN_PREFIX = "/v1/admin"
#: Re-read the TUF repository the server hosts into its catalogue, and wake
#: devices waiting on the long poll (``bsi serve --tuf-repo-dir``).
SYNC_REPOSITORY_PATH = f"{ADMIN_PREFIX}/catalog/sync-repository"

# The bounds of the admin API's numeric inputs: the routes validate with them, and
# ``bsi admin`` checks its options against them before asking (exit 2 naming the option).
MAX_PAGE = 10_000
"""Devices or security events in one page (``limit``)."""
MAX_STALE_HOURS = 24 * 365 * 100
"""``stale_hours``: beyond a century would only overflow the date arithmetic."""
MAX_TOKEN_HOURS = 24 * 365
"""How long an enrollment token may stay valid (``expires_in_hours``)."""
