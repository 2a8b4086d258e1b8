// A small React application on @herald/client and @herald/react, for the
// browser tests (tests/e2e/test_client.py). client_page.mjs bundles it with
// esbuild and serves it; its settings arrive in `window.__HERALD_TEST__`.
//
// It shows what an application would: the connection indicator, the tasks
// that arrive as events, and a TanStack query (the "task list" of the
// application's own API) that events and resyncs invalidate. Everything it
// sees is also recorded in `window.__app` for the driver.

import {
  type ConnectionState,
  HeraldClient,
  type HeraldEvent,
  streamTokenUrl,
  type TokenRequest,
} from "@herald/client";
import {
  ConnectionIndicator,
  HeraldProvider,
  useConnectionState,
  useHeraldEvent,
  useHeraldQueryInvalidation,
  useHeraldQuerySeed,
} from "@herald/react";
import { QueryClient, QueryClientProvider, useQuery } from "@tanstack/react-query";
import { type ReactNode, StrictMode, useState } from "react";
import { createRoot } from "react-dom/client";

interface TestSettings {
  /** The first token; a refresh (`auth.expiring`, a 401) moves to the next of `jwts`. */
  jwts: string[];
  transport: "fetch" | "eventsource";
  subscribe: string[];
  pollMs: number;
  maxFailures: number;
  probeMs: number;
  /** Tasks whose progress the page shows (a query each). */
  progressTasks: string[];
}

interface Recorded {
  events: { name: string; id: string | null; data: unknown; at: number }[];
  states: { status: string; attempt: number; role: string; at: number }[];
  resyncs: { replayMiss: string | null; at: number }[];
  polls: number;
  listFetches: number;
  /** Fetches of a task's progress from the application's API (none when retained states seed it). */
  progressFetches: number;
  /** Which of the tokens each attempt got. */
  tokens: number[];
  /** What the error hook heard. */
  errors: { code: string | null; status: number | null; kind: string; at: number }[];
  client: HeraldClient;
}

declare global {
  interface Window {
    __HERALD_TEST__: TestSettings;
    __app: Recorded;
  }
}

const settings = window.__HERALD_TEST__;
const queryClient = new QueryClient({ defaultOptions: { queries: { retry: false, staleTime: Infinity } } });
let tokenIndex = 0;
const getToken = (request?: TokenRequest): string => {
  if (request?.refresh && tokenIndex < settings.jwts.length - 1) tokenIndex += 1;
  window.__app.tokens.push(tokenIndex);
  return settings.jwts[tokenIndex] ?? "";
};

const client = new HeraldClient({
  url: "/api/v1/events/stream",
  transport: settings.transport,
  getToken,
  ...(settings.transport === "eventsource" ? { getStreamUrl: streamTokenUrl({ getToken }) } : {}),
  subscribe: settings.subscribe,
  events: ["task.created", "task.updated"],
  backoff: { baseMs: 200, capMs: 1000 },
  maxFailuresBeforePolling: settings.maxFailures,
  probeIntervalMs: settings.probeMs,
  fallback: {
    intervalMs: settings.pollMs,
    poll: async () => {
      window.__app.polls += 1;
      await queryClient.refetchQueries({ queryKey: ["task"] });
    },
  },
  onResync: (info) => window.__app.resyncs.push({ replayMiss: info.replayMiss, at: Date.now() }),
  onError: (error) =>
    window.__app.errors.push({ code: error.code, status: error.status, kind: error.kind, at: Date.now() }),
});

window.__app = {
  events: [],
  states: [],
  resyncs: [],
  polls: 0,
  listFetches: 0,
  progressFetches: 0,
  tokens: [],
  errors: [],
  client,
};
const record = (state: ConnectionState): void => {
  window.__app.states.push({ status: state.status, attempt: state.attempt, role: state.role, at: Date.now() });
};
record(client.getState());
client.subscribe(record);
client.on("*", (event: HeraldEvent<unknown>) => {
  const retained = event.retained === true ? { retained: true } : {};
  window.__app.events.push({ name: event.name, id: event.id, data: event.data, at: Date.now(), ...retained });
});

async function fetchTaskList(): Promise<{ version: number }> {
  window.__app.listFetches += 1;
  const response = await fetch("/app/api/tasks", { cache: "no-store" });
  return (await response.json()) as { version: number };
}

function Tasks(): ReactNode {
  const [tasks, setTasks] = useState<string[]>([]);
  // A fresh closure every render: the hook must call the latest one.
  useHeraldEvent("task.created", (event) => setTasks((list) => [...list, event.data.task_id]));
  return (
    <ul id="tasks">
      {tasks.map((id) => (
        <li key={id} data-task-id={id}>
          {id}
        </li>
      ))}
    </ul>
  );
}

function TaskList(): ReactNode {
  const list = useQuery({ queryKey: ["task", "list"], queryFn: fetchTaskList, meta: { herald: true } });
  return <p id="task-list">version {list.data?.version ?? "–"}</p>;
}

interface Progress {
  task_id: string;
  progress: number;
}

async function fetchProgress(task: string): Promise<Progress> {
  window.__app.progressFetches += 1;
  const response = await fetch(`/app/api/progress/${task}`, { cache: "no-store" });
  return (await response.json()) as Progress;
}

/** A task's progress as a TanStack query, seeded by the stream's retained states (D33). */
function TaskProgress({ task }: { task: string }): ReactNode {
  const progress = useQuery({ queryKey: ["progress", task], queryFn: () => fetchProgress(task) });
  return (
    <li data-progress-task={task} data-progress={progress.data?.progress ?? ""}>
      {task}: {progress.data?.progress ?? "…"}%
    </li>
  );
}

/** Shown once the stream is open: the retained states came with connection.established. */
function ProgressBoard(): ReactNode {
  const state = useConnectionState();
  if (state.status !== "open" || settings.progressTasks.length === 0) return null;
  return (
    <ul id="progress">
      {settings.progressTasks.map((task) => (
        <TaskProgress key={task} task={task} />
      ))}
    </ul>
  );
}

function Status(): ReactNode {
  const state = useConnectionState();
  return (
    <dl>
      <dt>Status</dt>
      <dd id="status">{state.status}</dd>
      <dt>Role</dt>
      <dd id="role">{state.role}</dd>
      <dt>Connection</dt>
      <dd id="connection-id">{state.connectionId ?? "–"}</dd>
      <dt>Recovered</dt>
      <dd id="recovered">{String(state.recovered)}</dd>
      <dt>Last event id</dt>
      <dd id="last-event-id">{state.lastEventId ?? "–"}</dd>
    </dl>
  );
}

function App(): ReactNode {
  useHeraldQueryInvalidation({ roots: ["task"] });
  useHeraldQuerySeed({ event: "task.progress-updated", queryKey: (event) => ["progress", event.data.task_id] });
  return (
    <main>
      <h1>
        Herald test app <ConnectionIndicator className="indicator" />
      </h1>
      <Status />
      <TaskList />
      <Tasks />
      <ProgressBoard />
    </main>
  );
}

const root = document.getElementById("root");
if (root === null) throw new Error("no #root");
createRoot(root).render(
  <StrictMode>
    <HeraldProvider client={client}>
      <QueryClientProvider client={queryClient}>
        <App />
      </QueryClientProvider>
    </HeraldProvider>
  </StrictMode>,
);
