import type { RedisClient } from '../queue/redis.js';
import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { isDeadlock, isLockNotGranted } from '../db/errors.js';
import type { Logger } from '../log.js';
import { applyRepairGroup, CasConflict, type GroupResult, type RepairOutcome, type RepairWork } from './groupApply.js';
import { mviewTableKey, readVersionMapsOf, tableKey } from '../versions/repository.js';
import type { VersionEntry } from '../versions/types.js';
import { RepairLocks, type HeldLocks } from './locks.js';
import { planRepair } from './rules.js';

/** The MV's repair lock stayed taken (another worker is repairing it) for longer than we wait. */
export class RepairBusy extends Error {
  constructor(readonly mviewId: number) {
    super(`the repair lock of MV ${mviewId} is held elsewhere`);
    this.name = 'RepairBusy';
  }
}

export class BatcherClosed extends Error {
  constructor() {
    super('the repair batcher is closed');
    this.name = 'BatcherClosed';
  }
}

export interface RepairBatcherDeps {
  db: Knex;
  redis: RedisClient;
  prefix: string;
  logger: Logger;
  clock: Clock;
  /** Lease of each MV's repair lock; a worker that dies holding it blocks the MV this long at most. */
  lockTtlMs?: number;
  /** How long a work waits for its MV's lock, taken elsewhere, before it fails with RepairBusy (10 s: the lock's TTL). */
  lockWaitMs?: number;
  /** Most MVs in one batch (one transaction). */
  maxMvs?: number;
  /** Batches applied at once (on different MVs): one runs its transaction while the next fills. */
  maxBatches?: number;
  /** How long infos ahead of their chain are retried here before they come back as `waiting`. */
  parkMs?: number;
  /** Told the MVs each batch moved (to wake what waits on them elsewhere). */
  onMoved?: (mviewIds: number[]) => Promise<void>;
}

interface Entry {
  seq: number;
  work: RepairWork;
  resolve(o: RepairOutcome): void;
  reject(err: unknown): void;
  submittedAt: number;
  notBefore: number;
  lockTries: number;
  /** When the current wait for the MV's lock began. */
  lockSince: number;
  casRetries: number;
  dbTries: number;
  /** Waiting for an earlier link of its chain: retried without holding up the MV's later works. */
  parked: number;
  /** What earlier rounds of a parked work did. */
  done: { applied: number; skipped: RepairOutcome['skipped'] };
}

const MAX_CAS_RETRIES = 20;
const MAX_DB_TRIES = 3;

/**
 * Group commit for version repairs. Works submitted while batches are being applied wait for the
 * next one, so under load a batch holds whatever arrived meanwhile (up to maxMvs MVs) and costs
 * one round of lock calls and one transaction (applyRepairGroup: one compare-and-set per MV)
 * instead of one of each per repair; with nothing in flight a work goes at once. Up to
 * maxBatches batches (on different MVs) run at once, so one fills while another commits.
 *
 * Per MV: its repair lock (Redlock's key and value scheme, src/repair/locks.ts) is taken without
 * waiting, for every MV of the batch in one call; an MV held elsewhere stays pending (with
 * back-off) together with every later work for it, so an MV's works apply in the order they were
 * submitted, and a batch never waits on a lock while it holds others. Works of an MV that lost
 * its compare-and-set are recomputed in the next batch; the other MVs of the batch are not held
 * back. A transaction that deadlocked is retried; other errors fail the works of that batch.
 */
export class RepairBatcher {
  private pending: Entry[] = [];
  private seq = 0;
  /** Batches being applied, and the MVs they hold. */
  private running = 0;
  private readonly busy = new Set<number>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private idle: (() => void) | undefined;
  private readonly log: Logger;
  private readonly locks: RepairLocks;

  constructor(private readonly deps: RepairBatcherDeps) {
    this.log = deps.logger.child({ component: 'repair-batcher' });
    this.locks = new RepairLocks(deps.redis, deps.prefix);
  }

  submit(work: RepairWork): Promise<RepairOutcome> {
    if (this.closed) return Promise.reject(new BatcherClosed());
    return new Promise<RepairOutcome>((resolve, reject) => {
      const now = this.deps.clock.now();
      this.pending.push({
        seq: this.seq++,
        work,
        resolve,
        reject,
        submittedAt: now,
        notBefore: now,
        lockTries: 0,
        lockSince: now,
        casRetries: 0,
        dbTries: 0,
        parked: 0,
        done: { applied: 0, skipped: {} },
      });
      this.schedule();
    });
  }

  /** Stop taking works; resolves once everything submitted has been settled. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.running === 0 && this.pending.length === 0) return;
    await new Promise<void>((r) => {
      this.idle = r;
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.pending.length === 0 && this.running === 0) this.idle?.();
    if (this.running >= (this.deps.maxBatches ?? 2)) return;
    // Entries of MVs in a running batch wait for it (its end schedules again).
    let wake = Infinity;
    for (const e of this.pending) if (!this.busy.has(e.work.mviewId)) wake = Math.min(wake, e.notBefore);
    if (wake === Infinity) return;
    const wait = wake - this.deps.clock.now();
    clearTimeout(this.timer);
    if (wait > 0) {
      this.timer = setTimeout(() => this.schedule(), wait);
      return;
    }
    this.running++;
    // setImmediate: works submitted in the same turn of the event loop join this batch.
    setImmediate(() => {
      this.runOne()
        .catch((err: unknown) => this.log.error({ err }, 'repair batch failed'))
        .finally(() => {
          this.running--;
          this.schedule();
        });
    });
  }

  /** Take a batch and apply it; another batch (other MVs) may start meanwhile. */
  private async runOne(): Promise<void> {
    const batch = this.take();
    if (batch.length === 0) return;
    const mvs = new Set(batch.map((e) => e.work.mviewId));
    for (const id of mvs) this.busy.add(id);
    this.schedule();
    try {
      await this.runBatch(batch);
    } finally {
      for (const id of mvs) this.busy.delete(id);
    }
  }

  /**
   * Ready entries in submission order, up to maxMvs MVs. An MV whose lock was busy keeps its later
   * entries back too (they apply in order); a parked entry does not (its earlier link may be one of them).
   */
  private take(): Entry[] {
    const now = this.deps.clock.now();
    const max = this.deps.maxMvs ?? 200;
    const taken: Entry[] = [];
    const rest: Entry[] = [];
    const mvs = new Set<number>();
    const held = new Set<number>();
    for (const e of this.pending) {
      const id = e.work.mviewId;
      if (held.has(id) || this.busy.has(id) || e.notBefore > now || (!mvs.has(id) && mvs.size >= max)) {
        if (!e.parked || e.notBefore <= now) held.add(id);
        rest.push(e);
        continue;
      }
      mvs.add(id);
      taken.push(e);
    }
    this.pending = rest;
    return taken;
  }

  /** Back into the queue, keeping submission order. */
  private requeue(entries: Entry[]): void {
    if (entries.length === 0) return;
    this.pending = [...this.pending, ...entries].sort((a, b) => a.seq - b.seq);
  }

  private async runBatch(taken: Entry[]): Promise<void> {
    const later = await this.stillAhead(taken);
    const waiting = new Set(later);
    const batch = taken.filter((e) => !waiting.has(e));
    const ids = [...new Set(batch.map((e) => e.work.mviewId))];
    let held: HeldLocks;
    try {
      held = await this.locks.tryLock(ids, this.deps.lockTtlMs ?? 10_000);
    } catch (err) {
      for (const e of batch) e.reject(err);
      return;
    }
    const locks = new Set(held.mviewIds);
    const now = this.deps.clock.now();
    const mine: Entry[] = [];
    for (const e of batch) {
      if (locks.has(e.work.mviewId)) {
        e.lockTries = 0;
        mine.push(e);
        continue;
      }
      if (e.lockTries++ === 0) e.lockSince = now;
      if (now - e.lockSince >= (this.deps.lockWaitMs ?? 10_000)) e.reject(new RepairBusy(e.work.mviewId));
      else {
        // 10 ms doubling to 200 ms, jittered: the holder usually needs one transaction.
        e.notBefore = now + Math.min(200, 10 * 2 ** Math.min(e.lockTries - 1, 5)) * (0.5 + Math.random());
        later.push(e);
      }
    }
    try {
      if (mine.length) later.push(...(await this.apply(mine)));
    } finally {
      // A release that fails leaves the keys to expire with their TTL.
      await this.locks.unlock(held).catch((err: unknown) => this.log.warn({ err }, 'could not release repair locks'));
      this.requeue(later);
      this.log.debug({ works: taken.length, mviews: ids.length, locked: held.mviewIds.length, again: later.length, ms: this.deps.clock.now() - now }, 'repair batch');
    }
  }

  /**
   * Parked entries whose infos are all still ahead of their MV's map, read without any lock:
   * they wait for their next round without taking the MV's lock from whoever holds the earlier
   * link. (Past the park time they go through the batch, which settles them.)
   */
  private async stillAhead(batch: Entry[]): Promise<Entry[]> {
    const now = this.deps.clock.now();
    const parked = batch.filter((e) => e.parked > 0 && now - e.submittedAt < (this.deps.parkMs ?? 2_000));
    if (parked.length === 0) return [];
    let maps: Map<string, Map<string, VersionEntry>>;
    try {
      maps = await readVersionMapsOf(this.deps.db, [...new Set(parked.map((e) => e.work.mviewId))], [...new Map(parked.map((e) => [tableKey(e.work.table), e.work.table])).values()]);
    } catch {
      return []; // the batch's own read will tell
    }
    const still = parked.filter((e) => planRepair(maps.get(mviewTableKey(e.work.mviewId, e.work.table)), e.work.infos).skipped.every((s) => s.reason === 'version-ahead'));
    for (const e of still) e.notBefore = now + Math.min(500, 20 * 2 ** Math.min(e.parked++, 5));
    return still;
  }

  /** One transaction for the entries whose MVs we hold; returns the entries to try again. */
  private async apply(entries: Entry[]): Promise<Entry[]> {
    let result: GroupResult;
    try {
      result = await this.transact(entries.map((e) => e.work));
    } catch (err) {
      return this.failed(entries, err);
    }
    const again: Entry[] = [];
    const now = this.deps.clock.now();
    const moved = new Set<number>();
    entries.forEach((e, i) => {
      const out = result.outcomes[i];
      if (out) {
        if (out.applied > 0) moved.add(e.work.mviewId);
        if (this.park(e, out, now)) again.push(e);
        else e.resolve(this.settle(e, out));
        return;
      }
      const seen = result.lost.get(e.work.mviewId)!;
      if (++e.casRetries > MAX_CAS_RETRIES) e.reject(new CasConflict(e.work.mviewId, seen));
      else again.push(e);
    });
    if (result.lost.size) this.log.debug({ mview_ids: [...result.lost.keys()] }, 'repair lost its compare-and-set: recomputed in the next batch');
    // An MV that moved here may let its parked works go on now.
    for (const e of this.pending) if (e.parked && moved.has(e.work.mviewId)) e.notBefore = now;
    if (moved.size && this.deps.onMoved) {
      this.deps.onMoved([...moved]).catch((err: unknown) => this.log.warn({ err }, 'could not wake repairs waiting on moved MVs'));
    }
    return again;
  }

  /**
   * Infos ahead of their chain wait here a little (20 ms doubling to 500 ms, and at once when a
   * batch of this process moves their MV) before they come back as waiting: the earlier link is
   * usually in flight in this or another worker.
   */
  private park(e: Entry, out: RepairOutcome, now: number): boolean {
    if (out.waiting.length === 0 || now - e.submittedAt >= (this.deps.parkMs ?? 2_000)) return false;
    e.done.applied += out.applied;
    for (const [r, n] of Object.entries(out.skipped)) {
      if (r !== 'version-ahead') e.done.skipped[r as keyof RepairOutcome['skipped']] = (e.done.skipped[r as keyof RepairOutcome['skipped']] ?? 0) + n!;
    }
    e.work = { ...e.work, infos: out.waiting };
    e.notBefore = now + Math.min(500, 20 * 2 ** Math.min(e.parked, 5));
    e.parked++;
    return true;
  }

  /** The outcome of a work over all its rounds. */
  private settle(e: Entry, out: RepairOutcome): RepairOutcome {
    const skipped = { ...e.done.skipped };
    for (const [r, n] of Object.entries(out.skipped)) skipped[r as keyof typeof skipped] = (skipped[r as keyof typeof skipped] ?? 0) + n!;
    return { ...out, applied: out.applied + e.done.applied, skipped, casRetries: e.casRetries };
  }

  /** One batch's transaction (tests override it to write in between read and write). */
  protected transact(works: RepairWork[], beforeWrite?: () => Promise<void>): Promise<GroupResult> {
    const now = this.deps.clock.now();
    return this.deps.db.transaction((trx) => applyRepairGroup(trx, works, { now, log: this.log, ...(beforeWrite ? { beforeWrite } : {}) }));
  }

  private failed(entries: Entry[], err: unknown): Entry[] {
    if (err instanceof CasConflict) {
      // innodb_snapshot_isolation=ON aborted the whole transaction on a lost CAS: every work
      // goes again; the loser (all of them when the server did not say) counts a retry.
      return entries.filter((e) => {
        if ((err.mviewId !== undefined && e.work.mviewId !== err.mviewId) || ++e.casRetries <= MAX_CAS_RETRIES) return true;
        e.reject(err);
        return false;
      });
    }
    if (isDeadlock(err) || isLockNotGranted(err)) {
      return entries.filter((e) => {
        if (++e.dbTries < MAX_DB_TRIES) return true;
        e.reject(err);
        return false;
      });
    }
    for (const e of entries) e.reject(err);
    return [];
  }
}
