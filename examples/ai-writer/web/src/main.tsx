// The AI Writer page: start "write a chapter" tasks, watch their progress
// live, read the chapter when it is done.
//
// - The task list and the documents are TanStack Query queries over the
//   app's API (/api/tasks, /api/documents/:id).
// - Herald's stream (/herald, mounted in the same app) keeps them fresh:
//   progress and status events write into the cached list directly;
//   task.created and chapter.draft-created (from the outbox) invalidate it;
//   a resync (events may have been missed) re-fetches everything.
// - Progress is published with `retain`: a stream opened mid-task (a reload)
//   gets each task's latest progress first, and useHeraldQuerySeed puts it in
//   the cached list, so the bars are back before the list's fetch answers.

import { HeraldClient } from "@herald/client";
import {
  ConnectionIndicator,
  HeraldProvider,
  useHeraldEvent,
  useHeraldQueryInvalidation,
  useHeraldQuerySeed,
} from "@herald/react";
import {
  QueryClient,
  QueryClientProvider,
  useMutation,
  useQuery,
  useQueryClient,
} from "@tanstack/react-query";
import { StrictMode, type ReactNode } from "react";
import { createRoot } from "react-dom/client";

interface Task {
  id: string;
  title: string;
  status: string;
  progress: number;
  message: string | null;
  document_id: string | null;
}

interface WriterDocument {
  id: string;
  number: number;
  title: string;
  body: string;
}

interface TokenAnswer {
  token: string;
  user: string;
  subscribe: string[];
}

const TASKS = ["tasks"] as const;
const FINISHED = new Set(["completed", "failed", "cancelled"]);

async function api<T>(path: string, init?: RequestInit): Promise<T> {
  const response = await fetch(path, init);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return (await response.json()) as T;
}

// Who we are, and which resources to follow (the user's novel, where chapters appear).
const session = await api<TokenAnswer>("/api/herald-token");

const queryClient = new QueryClient({ defaultOptions: { queries: { staleTime: Infinity, retry: 1 } } });

// The client lives outside React: re-renders never reconnect.
const herald = new HeraldClient({
  url: "/herald/api/v1/events/stream",
  // Asked on every attempt: a fresh token from the app, which knows the user.
  getToken: async () => (await api<TokenAnswer>("/api/herald-token")).token,
  subscribe: session.subscribe,
  // Streaming refused for a while: poll the API instead.
  fallback: { poll: () => queryClient.invalidateQueries(), intervalMs: 5000 },
});

const STAGE: Record<string, number> = { pending: 0, running: 1, completed: 2, failed: 2, cancelled: 2 };

/**
 * A task never goes back: a list fetched before the latest event (a fetch and
 * an event cross all the time) keeps the event's status and progress.
 */
function newer(fetched: Task, seen: Task | undefined): Task {
  if (seen === undefined) return fetched;
  const [was, is] = [STAGE[seen.status] ?? 0, STAGE[fetched.status] ?? 0];
  if (was > is) return { ...fetched, status: seen.status, progress: seen.progress, message: seen.message };
  if (was === is && seen.progress > fetched.progress) {
    return { ...fetched, progress: seen.progress, message: seen.message };
  }
  return fetched;
}

function merge(fetched: Task[], cached: Task[] | undefined): Task[] {
  const known = new Map((cached ?? []).map((task) => [task.id, task]));
  return fetched.map((task) => newer(task, known.get(task.id)));
}

interface Progress {
  task_id: string;
  progress: number;
  message?: string | null;
}

/**
 * The list with a task's progress: raised (never lowered, never on a finished task), or the
 * task added with what the event tells (a retained state may come before the list's fetch;
 * the fetch then brings its title).
 */
function withProgress(list: Task[] | undefined, update: Progress): Task[] {
  const message = update.message ?? null;
  const tasks = list ?? [];
  if (!tasks.some((task) => task.id === update.task_id)) {
    const shell = { id: update.task_id, title: "", status: "running", document_id: null };
    return [{ ...shell, progress: update.progress, message }, ...tasks];
  }
  return tasks.map((task) =>
    task.id !== update.task_id || FINISHED.has(task.status) || task.progress > update.progress
      ? task
      : { ...task, progress: update.progress, message },
  );
}

/** Apply `patch` to the cached task `id`; false when the list is loaded and lacks it (re-fetch). */
function patchTask(client: QueryClient, id: string, patch: (task: Task) => Task): boolean {
  if (client.getQueryData<Task[]>(TASKS) === undefined) return true; // its fetch will have it
  let found = false;
  client.setQueryData<Task[]>(TASKS, (tasks) =>
    tasks?.map((task) => {
      if (task.id !== id) return task;
      found = true;
      return patch(task);
    }),
  );
  return found;
}

function App(): ReactNode {
  const client = useQueryClient();
  useHeraldQueryInvalidation({
    roots: ["tasks", "documents"],
    mapping: {
      "task.created": () => [TASKS],
      "chapter.draft-created": () => [TASKS],
    },
  });
  // Retained states (first on a new stream) and live updates alike: into the list.
  useHeraldQuerySeed({
    event: "task.progress-updated",
    queryKey: () => TASKS,
    data: (event, old) => withProgress(old as Task[] | undefined, event.data),
  });
  useHeraldEvent("task.status-changed", (event) => {
    const { task_id, new_status } = event.data;
    const found = patchTask(client, task_id, (task) =>
      newer({ ...task, status: new_status, progress: new_status === "completed" ? 100 : task.progress }, task),
    );
    if (!found || new_status === "completed") void client.invalidateQueries({ queryKey: TASKS });
  });

  const tasks = useQuery({
    queryKey: TASKS,
    queryFn: async () => merge(await api<Task[]>("/api/tasks"), client.getQueryData<Task[]>(TASKS)),
    // Retained progress may have filled the list before this mounts: still fetch the rest.
    refetchOnMount: "always",
  });
  const start = useMutation({
    mutationFn: () =>
      api<Task>("/api/tasks", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" }),
    // Shown at once; the stream may already have told more about it than this answer.
    onSuccess: (task) => {
      client.setQueryData<Task[]>(TASKS, (list = []) =>
        list.some((t) => t.id === task.id) ? list : [task, ...list],
      );
    },
  });

  return (
    <main>
      <header>
        <h1>AI Writer</h1>
        <span id="user">{session.user}</span>
        <ConnectionIndicator className="connection" />
        <button id="start" type="button" disabled={start.isPending} onClick={() => start.mutate()}>
          Write a chapter
        </button>
      </header>
      {tasks.isPending ? <p className="empty">Loading…</p> : null}
      {tasks.data?.length === 0 ? <p className="empty">No chapters yet: start one.</p> : null}
      <ul className="tasks" id="tasks">
        {tasks.data?.map((task) => <TaskItem key={task.id} task={task} />)}
      </ul>
    </main>
  );
}

function TaskItem({ task }: { task: Task }): ReactNode {
  return (
    <li className="task" data-task-id={task.id} data-status={task.status}>
      <div className="task-head">
        <strong className="task-title">{task.title || "…"}</strong>
        <span className="status">{task.status}</span>
      </div>
      <div className="bar" role="progressbar" aria-valuemin={0} aria-valuemax={100} aria-valuenow={task.progress}>
        <div className="fill" style={{ width: `${task.progress}%` }} />
      </div>
      <div className="message">
        {task.progress}%{task.message ? ` · ${task.message}` : ""}
      </div>
      {task.document_id !== null ? <DocumentView id={task.document_id} /> : null}
    </li>
  );
}

function DocumentView({ id }: { id: string }): ReactNode {
  const document = useQuery({
    queryKey: ["documents", id],
    queryFn: () => api<WriterDocument>(`/api/documents/${encodeURIComponent(id)}`),
  });
  if (document.data === undefined) return <div className="document">…</div>;
  return (
    <article className="document" data-document-id={id}>
      <h3>
        Chapter {document.data.number}: {document.data.title}
      </h3>
      {document.data.body.split("\n\n").map((paragraph, index) => (
        <p key={index}>{paragraph}</p>
      ))}
    </article>
  );
}

const root = document.getElementById("root");
if (root === null) throw new Error("no #root");
createRoot(root).render(
  <StrictMode>
    <HeraldProvider client={herald}>
      <QueryClientProvider client={queryClient}>
        <App />
      </QueryClientProvider>
    </HeraldProvider>
  </StrictMode>,
);
