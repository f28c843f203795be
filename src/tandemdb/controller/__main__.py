"""`python -m tandemdb.controller --data DIR`."""

from .app import main

main()
