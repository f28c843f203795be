"""`python -m tandemdb.node --data DIR --name NODE`."""

from tandemdb.node.app import main

if __name__ == "__main__":
    main()
