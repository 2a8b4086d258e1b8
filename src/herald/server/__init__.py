"""The standalone HTTP/1.1 server behind ``herald serve``.

Streams are written straight to each socket's transport: pre-encoded frames,
one write per connection per loop turn, no task, generator or ASGI message
per event. Every other request goes to the ASGI app (:mod:`herald.api`).
"""
