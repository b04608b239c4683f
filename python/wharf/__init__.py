"""wharf: a fast, PEP 3333-exact WSGI server written in Rust."""

from wharf._wharf import FileWrapper, __version__, run

__all__ = ["FileWrapper", "__version__", "run"]
