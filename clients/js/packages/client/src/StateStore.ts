/**
 * A value that changes and the listeners that want to know. `getState()`
 * returns the same object until something changes, which is what React's
 * `useSyncExternalStore` needs to avoid re-rendering for nothing.
 */
export class StateStore<T extends object> {
  private state: T;
  private readonly listeners = new Set<(state: T) => void>();

  constructor(initial: T) {
    this.state = initial;
  }

  getState = (): T => this.state;

  /** Merge `patch`; listeners hear about it only when a field actually changed. */
  update(patch: Partial<T>): void {
    const keys = Object.keys(patch) as (keyof T)[];
    if (keys.every((key) => Object.is(this.state[key], patch[key]))) return;
    this.state = { ...this.state, ...patch };
    for (const listener of [...this.listeners]) listener(this.state);
  }

  /** Returns its own unsubscribe function. */
  subscribe = (listener: (state: T) => void): (() => void) => {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  };

  clear(): void {
    this.listeners.clear();
  }
}
