/**
 * The stream URL for one attempt: `base` plus the resource subscriptions
 * (unless `base` already names them) and, for the native EventSource, the
 * cursor as `last_event_id` (EventSource cannot send the header on a first
 * open; over fetch the cursor travels in `Last-Event-ID`, so pass null).
 * `since` (ISO 8601) is sent only by an attempt without a cursor.
 */
export function streamUrl(
  base: string,
  subscriptions: readonly string[],
  cursor: string | null,
  since: string | null = null,
): string {
  const extra: string[] = [];
  if (since !== null && !/[?&]since=/.test(base)) extra.push(`since=${encodeURIComponent(since)}`);
  if (subscriptions.length > 0 && !/[?&]subscribe=/.test(base)) {
    extra.push(`subscribe=${encodeURIComponent(subscriptions.join(","))}`);
  }
  if (cursor !== null) extra.push(`last_event_id=${encodeURIComponent(cursor)}`);
  if (extra.length === 0) return base;
  return `${base}${base.includes("?") ? "&" : "?"}${extra.join("&")}`;
}
