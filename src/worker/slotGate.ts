import type { Job } from 'bullmq';
import type { Clock } from '../clock.js';
import { delayJob } from './delay.js';

/**
 * Scheduled jobs a worker may hold beyond its run slots while they wait for their time: about
 * PROMOTE_LEAD_MS x the node's dispatch rate are early at once (10 at 40/s), so 32 covers ~130
 * scheduled runs/s per node; past that, the job waits in Redis until a held one starts.
 */
export const EARLY_JOBS = 32;

/** A job ready this much before its slot was not promoted early by us (an old job, a clock): back to the queue. */
export const EARLY_HOLD_MAX_MS = 2_000;

export class GateClosed extends Error {
  constructor(message = 'the worker is closing') {
    super(message);
    this.name = 'GateClosed';
  }
}

/** Every run slot taken and `maxWaiting` already waiting: better run elsewhere. */
export class GateFull extends GateClosed {
  constructor() {
    super('every run slot is taken and enough jobs wait for one');
    this.name = 'GateFull';
  }
}

/**
 * Run slots apart from BullMQ's concurrency. A worker holds more jobs than it runs: scheduled
 * jobs reach it a little before their slot (src/queue/jobPlacer.ts, PROMOTE_LEAD_MS) and wait
 * here for the exact time without taking a run slot; requests that only wait for a repair batch
 * take none. At most `slots` runs go at once, in the order they asked. close() lets every waiter
 * go with GateClosed, so a closing worker never waits for jobs that have not started.
 */
export class SlotGate {
  private free: number;
  private readonly queue: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];
  private readonly sleepers = new Set<{ timer: NodeJS.Timeout; reject: (err: Error) => void }>();
  private closed = false;

  constructor(
    slots: number,
    private readonly clock: Clock,
  ) {
    this.free = slots;
  }

  /**
   * Wait until `at` (epoch ms) holding nothing, then for a slot, and run `fn` in it. With
   * `maxWaiting`, a run that would wait behind that many others fails with GateFull instead.
   */
  async run<T>(fn: () => Promise<T>, at?: number, maxWaiting = Infinity): Promise<T> {
    if (at !== undefined) await this.sleepUntil(at);
    if (this.free === 0 && this.queue.length >= maxWaiting && !this.closed) throw new GateFull();
    await this.acquire();
    try {
      return await fn();
    } finally {
      this.release();
    }
  }

  /** Jobs waiting for their time or a slot (not running). */
  get waiting(): number {
    return this.sleepers.size + this.queue.length;
  }

  close(): void {
    this.closed = true;
    for (const s of this.sleepers) {
      clearTimeout(s.timer);
      s.reject(new GateClosed());
    }
    this.sleepers.clear();
    for (const w of this.queue.splice(0)) w.reject(new GateClosed());
  }

  private async sleepUntil(at: number): Promise<void> {
    // Timers may fire a millisecond before the wall clock reads `at`: a run never starts early.
    for (let wait = at - this.clock.now(); wait > 0; wait = at - this.clock.now()) {
      if (this.closed) throw new GateClosed();
      await new Promise<void>((resolve, reject) => {
        const s = {
          timer: setTimeout(() => {
            this.sleepers.delete(s);
            resolve();
          }, wait),
          reject,
        };
        this.sleepers.add(s);
      });
    }
  }

  private acquire(): Promise<void> {
    if (this.closed) return Promise.reject(new GateClosed());
    if (this.free > 0) {
      this.free--;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => this.queue.push({ resolve, reject }));
  }

  private release(): void {
    const next = this.queue.shift();
    if (next) next.resolve();
    else this.free++;
  }
}

/**
 * A job's work in a slot of `gate`, not before `at`. A job still waiting when the gate closes
 * (or finding `maxWaiting` jobs ahead of it) goes back to its queue, delayed to `back()`, and is
 * run later by whoever consumes the queue.
 */
export async function runGated<T>(
  gate: SlotGate,
  job: Job,
  token: string | undefined,
  work: () => Promise<T>,
  opts: { at?: number; back: () => number; maxWaiting?: number },
): Promise<T> {
  try {
    return await gate.run(work, opts.at, opts.maxWaiting);
  } catch (err) {
    if (err instanceof GateClosed) return delayJob(job, token, opts.back());
    throw err;
  }
}
