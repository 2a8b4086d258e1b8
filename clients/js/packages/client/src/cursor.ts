/**
 * Cursors are the gateway's event ids, `{milliseconds}-{sequence}`.
 *
 * Heartbeats name the stream's position in a comment (`: 1795876951162-0`)
 * next to an id-only block; eventsource-parser drops id-only blocks but hands
 * comments over, so the comment is how a quiet stream's cursor keeps up.
 */

const CURSOR = /^\d{1,16}-\d{1,16}$/;

export function isCursor(text: string): boolean {
  return CURSOR.test(text);
}

/** The cursor a heartbeat comment names, or null for any other comment. */
export function cursorFromComment(comment: string): string | null {
  const text = comment.trim();
  return isCursor(text) ? text : null;
}
