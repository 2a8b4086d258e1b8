import type { ConnectionState } from "@herald/client";
import type { ReactNode } from "react";

import { useConnectionState } from "./hooks";
import { useHeraldClient } from "./HeraldProvider";

const LABELS: Record<ConnectionState["status"], string> = {
  connecting: "Connecting",
  open: "Live",
  reconnecting: "Reconnecting",
  polling: "Polling",
  closed: "Offline",
};

const COLOURS: Record<ConnectionState["status"], string> = {
  connecting: "#b45309",
  open: "#15803d",
  reconnecting: "#b45309",
  polling: "#4f46e5",
  closed: "#b91c1c",
};

export interface ConnectionIndicatorProps {
  readonly className?: string;
  /** Text for each status, for other languages. */
  readonly labels?: Partial<Record<ConnectionState["status"], string>>;
}

/**
 * A dot and a word for the stream's status, the attempt count while
 * retrying, the last error as a tooltip, and a button to reconnect now
 * whenever the stream is not open.
 */
export function ConnectionIndicator({ className, labels }: ConnectionIndicatorProps): ReactNode {
  const client = useHeraldClient();
  const state = useConnectionState();
  const label = labels?.[state.status] ?? LABELS[state.status];
  return (
    <span
      className={className}
      data-status={state.status}
      data-attempt={state.attempt}
      role="status"
      title={state.lastError?.message ?? ""}
      style={{ display: "inline-flex", alignItems: "center", gap: 8 }}
    >
      <span
        aria-hidden="true"
        style={{ width: 8, height: 8, borderRadius: "50%", background: COLOURS[state.status] }}
      />
      <span className="herald-status">{label}</span>
      {state.attempt > 0 && state.status !== "open" ? (
        <span className="herald-attempt">(attempt {state.attempt})</span>
      ) : null}
      {state.status !== "open" ? (
        <button type="button" className="herald-reconnect" onClick={() => client.reconnect()}>
          Reconnect
        </button>
      ) : null}
    </span>
  );
}
