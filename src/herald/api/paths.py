"""Every route's path, in one place, so the native server and the ASGI app agree."""

from typing import Final

API: Final = "/api/v1"
STREAM: Final = f"{API}/events/stream"
PUBLISH: Final = f"{API}/events"
PUBLISH_BATCH: Final = f"{API}/events/batch"
HEALTH: Final = f"{API}/events/health"
STREAM_TOKEN: Final = f"{API}/auth/sse-token"
DEMO_PAGE: Final = "/"
DEMO_TOKEN: Final = "/demo/token"  # noqa: S105 - a path
DEMO_CLIENT: Final = "/demo/herald-client.js"
SUBSCRIPTIONS: Final = f"{API}/events/subscriptions"
PRESENCE: Final = f"{API}/events/presence"
REVOCATIONS: Final = f"{API}/admin/revocations"
DRAIN: Final = f"{API}/admin/drain"
LIVE: Final = f"{HEALTH}/live"
READY: Final = f"{HEALTH}/ready"
METRICS: Final = "/metrics"
ADMIN_NODES: Final = f"{API}/admin/nodes"
ADMIN_CHANNELS: Final = f"{API}/admin/channels"
ADMIN_USERS: Final = f"{API}/admin/users"
ADMIN_PAGE: Final = "/admin"
