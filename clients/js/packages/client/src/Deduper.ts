/**
 * Remembers the ids of the last `capacity` events, so an event delivered
 * twice (a replay overlapping what arrived before a cut, a takeover leader
 * resuming from an older cursor than a follower saw) reaches handlers once.
 * Bounded: the set forgets the oldest ids first.
 */
export class Deduper {
  private readonly seen = new Set<string>();

  constructor(private readonly capacity = 2048) {}

  /** True the first time `id` is offered, false on every repeat. */
  first(id: string): boolean {
    if (this.seen.has(id)) return false;
    this.seen.add(id);
    if (this.seen.size > this.capacity) {
      // Sets iterate in insertion order: the first key is the oldest.
      const oldest = this.seen.values().next().value;
      if (oldest !== undefined) this.seen.delete(oldest);
    }
    return true;
  }

  clear(): void {
    this.seen.clear();
  }
}
