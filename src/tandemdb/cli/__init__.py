"""The `tandem` command line (Typer + Rich). Entry module: `main.py`."""
