/**
 * The stream URL for one attempt: `base` plus the resource subscriptions
 * (unless `base` already names them) and, for the native EventSource, the
 * cursor as `last_event_id` (EventSource cannot send the header on a first
 * open; over fetch the cursor travels in `Last-Event-ID`, so pass null).
 */
export function streamUrl(base: string, subscriptions: readonly string[], cursor: string | null): string {
  const extra: string[] = [];
  if (subscriptions.length > 0 && !/[?&]subscribe=/.test(base)) {
    extra.push(`subscribe=${encodeURIComponent(subscriptions.join(","))}`);
  }
  if (cursor !== null) extra.push(`last_event_id=${encodeURIComponent(cursor)}`);
  if (extra.length === 0) return base;
  return `${base}${base.includes("?") ? "&" : "?"}${extra.join("&")}`;
}
