"""The gateway: what a front end (the standalone server, or an ASGI app embedding
Herald) talks to. :class:`Gateway` holds one node's parts and hands each call to
the one that owns it:

- ``node.py``: :class:`Gateway` itself: building the parts from the settings,
  starting and stopping them in order, wiring them together.
- ``publishing.py``: the publish path: validation, the coalesce throttle, the
  append to the bus, counts by source.
- ``admission.py``: credentials, and whether a stream request may open (limits,
  authorization); :class:`StreamGrant`; ``build_authorizer``.
- ``streams.py``: what is kept per open stream (its leases, given back on
  close), eviction under the per-user limit, presence, and sending every
  stream away when the bus loses continuity.
- ``subscriptions.py``: changing a live stream's subscriptions, here or on the
  node holding it; :class:`SubscriptionChange`.
- ``health.py``: health, readiness and the metrics readings.
"""

from herald.gateway.admission import StreamGrant, build_authorizer
from herald.gateway.node import Gateway
from herald.gateway.subscriptions import SubscriptionChange

__all__ = ["Gateway", "StreamGrant", "SubscriptionChange", "build_authorizer"]
