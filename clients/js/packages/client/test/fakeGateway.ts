/**
 * A stand-in for `fetch` that a test answers request by request: stream a
 * body it writes to piece by piece, refuse with a status, or fail the
 * network. Aborts behave as in browsers (the fetch or the body read rejects).
 */

export interface RecordedRequest {
  readonly url: string;
  readonly headers: Record<string, string>;
}

export interface OpenStream {
  send(text: string): void;
  end(): void;
  /** The connection breaks: the body read rejects, as with a lost network. */
  break(): void;
  readonly aborted: boolean;
}

export class PendingRequest {
  constructor(
    readonly request: RecordedRequest,
    private readonly resolve: (response: Response) => void,
    private readonly reject: (error: unknown) => void,
    readonly signal: AbortSignal | undefined,
  ) {}

  /** Answer 200 with a body the test writes. */
  stream(): OpenStream {
    const encoder = new TextEncoder();
    let controller!: ReadableStreamDefaultController<Uint8Array>;
    let closed = false;
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        controller = c;
      },
    });
    const state = { aborted: false };
    this.signal?.addEventListener("abort", () => {
      state.aborted = true;
      if (!closed) {
        closed = true;
        controller.error(new DOMException("aborted", "AbortError"));
      }
    });
    this.resolve(new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } }));
    return {
      send(text) {
        if (!closed) controller.enqueue(encoder.encode(text));
      },
      end() {
        if (!closed) {
          closed = true;
          controller.close();
        }
      },
      break() {
        if (!closed) {
          closed = true;
          controller.error(new TypeError("network error"));
        }
      },
      get aborted() {
        return state.aborted;
      },
    };
  }

  refuse(status: number, body: unknown = {}, headers: Record<string, string> = {}): void {
    this.resolve(
      new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } }),
    );
  }

  failNetwork(): void {
    this.reject(new TypeError("Failed to fetch"));
  }
}

export class FakeGateway {
  readonly requests: PendingRequest[] = [];
  private waiters: ((request: PendingRequest) => void)[] = [];
  private taken = 0;

  readonly fetch = (input: RequestInfo | URL, init?: RequestInit): Promise<Response> =>
    new Promise<Response>((resolve, reject) => {
      const headers: Record<string, string> = {};
      new Headers(init?.headers).forEach((value, key) => {
        headers[key] = value;
      });
      const signal = init?.signal ?? undefined;
      if (signal?.aborted) {
        reject(new DOMException("aborted", "AbortError"));
        return;
      }
      signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
      const pending = new PendingRequest({ url: String(input), headers }, resolve, reject, signal);
      this.requests.push(pending);
      this.waiters.shift()?.(pending);
    });

  /** The next request not yet taken by a test, waiting for it if need be. */
  next(): Promise<PendingRequest> {
    const index = this.taken;
    this.taken += 1;
    const ready = this.requests[index];
    if (ready !== undefined) return Promise.resolve(ready);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Requests made but not yet taken with `next()`. */
  get untaken(): number {
    return this.requests.length - this.taken;
  }
}

export function established(id: string, recovered: boolean, replayMiss: string | null = null): string {
  const data = { connection_id: `c-${id}`, server_time: "t", server_version: "0.1.0", recovered, replay_miss: replayMiss, subscriptions: [] };
  return `retry: 1000\n\nid: ${id}\nevent: connection.established\ndata: ${JSON.stringify(data)}\n\n`;
}

export function event(id: string | null, name: string, data: Record<string, unknown>): string {
  return `${id === null ? "" : `id: ${id}\n`}event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
}
