"""The floor: a code location with nothing in it, served by the same `dagster dev` as the designs.

What `dagster dev` (webserver, daemon, code server) costs on its own while idle is paid by every design;
measuring it beside them tells how much of a design's idle cost is its own doing.
"""

import dagster as dg

defs = dg.Definitions()
