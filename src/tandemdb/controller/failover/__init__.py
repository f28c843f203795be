"""Failover of one environment: the `environment.failover` operation (docs/failover.md).

A planned failover (planned.py) moves the primary with nothing lost; a forced one
(forced.py) moves it when the primary's region is lost, at the fork point. Each mode is a
table of steps (steps.py: step name -> method, in order), so the runner dispatches by name
and the steps an operation records come from the same table. The decision (target primary
at E+1 in the catalog) is the point of no return: a failed step before it rolls the move
back, after it finishes it (settle.py). Every step is idempotent, so a controller killed at
any point resumes the operation where it stopped (invariant 7, docs/operations.md). A move
back to the home region is a failback: same steps, events `failback.*`.

| module | what |
|---|---|
| `params.py` | `FailoverParams` (the operation's parameters), the request body, events |
| `start.py` | `Failovers`: the checks and the `hold` step, the kind's registration |
| `steps.py` | the steps both modes share (`hold`, `switch-routing`, `release`), the decision |
| `planned.py` | `fence`, `catch-up`, `promote`, `reverse` |
| `forced.py` | `expire-lease`, `promote` at the fork point; the data-loss event |
| `settle.py` | leaving one writable primary after a failed step |
"""

from .params import FAILOVER, FailoverParams, parse_request
from .start import Failovers

__all__ = ["FAILOVER", "FailoverParams", "Failovers", "parse_request"]
