"""Catalogue importers: Apple's GDMF, SOFA's feeds and bsi's own format.

Each importer turns one document into a :class:`~bsi.domain.catalog.Catalog`
or refuses it whole with :class:`~bsi.errors.FeedError`; :func:`load_catalog`
finds the right one from the content of a file or URL.
"""

from bsi.feeds.bsi_catalog import dump_bsi_catalog, parse_bsi_catalog
from bsi.feeds.gdmf import parse_gdmf
from bsi.feeds.load import load_catalog, load_catalogs, parse_document, read_catalog
from bsi.feeds.sofa import parse_sofa, parse_sofa_history

__all__ = [
    "dump_bsi_catalog",
    "load_catalog",
    "load_catalogs",
    "parse_bsi_catalog",
    "parse_document",
    "parse_gdmf",
    "parse_sofa",
    "parse_sofa_history",
    "read_catalog",
]
