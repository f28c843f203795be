"""`python -m tandemdb.gateway --data DIR`: run the gateway of a local deployment."""

from tandemdb.gateway.app import main

if __name__ == "__main__":
    main()
