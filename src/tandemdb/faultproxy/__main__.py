"""`python -m tandemdb.faultproxy --data DIR`: run the fault proxy of a local deployment."""

from .app import main

main()
