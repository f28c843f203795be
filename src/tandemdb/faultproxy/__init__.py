"""The fault-injecting TCP proxy of a local deployment (`tandem up --fault-proxy`).

It sits on the links a region's loss would cut (docs/architecture.md, docs/failover.md):
heartbeats, the controller's calls to nodes, and the replication pulls between paired
regions. Each link is told, over a
small control API, to pass traffic (`ok`, optionally `delay`ed), to `cut` it (connections
closed, new ones refused at once) or to `drop` it (connections stay open, nothing gets
through: the peers see timeouts). `tandem region outage R --partition` cuts all of R's
links; the proxy's entry module is `app.py`.
"""
