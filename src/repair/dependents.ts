import type { Executor } from '../mv/repository.js';
import { dependentMviewsOf, tableKey } from '../versions/repository.js';
import type { TableRef } from '../versions/types.js';

interface Asked {
  table: TableRef;
  waiters: Array<{ resolve(ids: number[]): void; reject(err: unknown): void }>;
}

/**
 * The MVs that read a base table, for many repair requests at once: tables asked for while one
 * read runs are read together by the next, so a burst of requests costs a few queries, not one
 * each. Every answer comes from a read that started after it was asked for.
 */
export class DependentsLookup {
  private asked = new Map<string, Asked>();
  private running = false;

  constructor(private readonly db: Executor) {}

  of(table: TableRef): Promise<number[]> {
    return new Promise((resolve, reject) => {
      const key = tableKey(table);
      const a = this.asked.get(key) ?? { table, waiters: [] };
      a.waiters.push({ resolve, reject });
      this.asked.set(key, a);
      if (!this.running) {
        this.running = true;
        setImmediate(() => void this.drain());
      }
    });
  }

  private async drain(): Promise<void> {
    while (this.asked.size > 0) {
      const batch = [...this.asked.values()];
      this.asked = new Map();
      try {
        const found = await dependentMviewsOf(this.db, batch.map((a) => a.table));
        for (const a of batch) for (const w of a.waiters) w.resolve([...(found.get(tableKey(a.table)) ?? [])]);
      } catch (err) {
        for (const a of batch) for (const w of a.waiters) w.reject(err);
      }
    }
    this.running = false;
  }
}
