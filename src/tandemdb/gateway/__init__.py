"""The gateway: the one public endpoint. Entry module: `app.py` (`create_app`, `main`).

`routing.py` keeps the routing table current from the controller; `proxy.py` forwards.
"""
