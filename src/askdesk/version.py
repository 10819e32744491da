"""askdesk's version: in a module of its own, so that any wing can read it without importing the package (and Desk)."""

__version__ = "0.1.0"
