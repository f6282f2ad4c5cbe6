"""The admin API under ``/v1/admin``, one module per concern.

- :mod:`.credentials`: enrollment tokens and API keys;
- :mod:`.declarations`: declarations and the device groups they are assigned to;
- :mod:`.catalog`: the catalogue, the hosted TUF repository, steering supplements;
- :mod:`.devices`: device lists and detail, imports, lifecycle, wake-ups;
- :mod:`.compliance`: compliance per supplement and CVE, patch windows;
- :mod:`.events`: security events;
- :mod:`.rollouts`: rollouts, maintenance windows and the event history.

Who may call is :class:`~bsi.server.admin.common.Access` (API key roles).
"""

from pathlib import Path

from fastapi import APIRouter

from bsi.server.admin.catalog import catalog_routes
from bsi.server.admin.common import Access
from bsi.server.admin.compliance import compliance_routes
from bsi.server.admin.credentials import credential_routes
from bsi.server.admin.declarations import declaration_routes
from bsi.server.admin.devices import device_routes
from bsi.server.admin.events import event_routes
from bsi.server.admin.rollouts import rollout_routes
from bsi.server.http import StrictRoute
from bsi.server.paths import ADMIN_PREFIX
from bsi.server.service import BsiService
from bsi.server.wakeup import Wakeups


def admin_router(
    service: BsiService, wakeups: Wakeups, tuf_repo_dir: Path | None = None
) -> APIRouter:
    """Every admin route, authenticated by :class:`Access`."""
    router = APIRouter(prefix=ADMIN_PREFIX, tags=["admin"], route_class=StrictRoute)
    access = Access(service)
    credential_routes(router, service, access)
    catalog_routes(router, service, access, wakeups, tuf_repo_dir)
    declaration_routes(router, service, access)
    device_routes(router, service, access, wakeups)
    event_routes(router, service, access)
    compliance_routes(router, service, access)
    rollout_routes(router, service, access)
    return router
