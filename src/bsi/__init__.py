"""bsi: Background Security Improvements for any fleet."""

__version__ = "0.1.0"
