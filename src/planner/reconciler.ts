import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { HashRing } from '../ring/hashRing.js';
import { nodeQueueName, taskRingKey, type TaskId } from '../queue/names.js';
import type { JobPlacer } from '../queue/jobPlacer.js';

/** Where the planner last put an MV's job, and for when. */
interface Placement {
  queue: string;
  dueAt: number;
}

/** A task (MV refresh or MV-log purge, see TaskId) and when it should next run (null: no job). */
interface DesiredRow {
  task: TaskId;
  due: number | null;
}

interface MviewDesired {
  mview_id: number | string;
  status: string;
  next_time: Date | null;
}

interface MlogDesired {
  mlog_id: number | string;
  purge_method: string;
  next_time: Date | null;
}

const mviewDesired = (r: MviewDesired): DesiredRow => ({
  task: Number(r.mview_id),
  due: r.status === 'ACTIVE' && r.next_time ? r.next_time.getTime() : null,
});

const mlogDesired = (r: MlogDesired): DesiredRow => ({
  task: -Number(r.mlog_id),
  due: r.purge_method === 'SCHEDULED' && r.next_time ? r.next_time.getTime() : null,
});

export interface ReconcileStats {
  kind: 'full' | 'incremental' | 'ring';
  examined: number;
  added: number;
  rescheduled: number;
  removed: number;
  moved: number;
  ms: number;
}

/**
 * Commits that set updated_at earlier than this before our scan can still become visible after
 * it (a refresh updates refresh-info just before committing), so each incremental scan reaches
 * back this far; re-examining an unchanged MV is harmless.
 */
export const SCAN_OVERLAP_MS = 10_000;

/**
 * Makes the node queues hold exactly one delayed job per active MV (and per MV log with a purge
 * schedule), in the queue of its owner on the ring, due at next_time (DESIGN.md §4, invariant 1).
 *
 * full(): reads all metadata and every node queue, fixes every difference. Used when the
 * planner starts leading, when Redis lost its data, or when asked.
 * incremental(): reads only refresh-info rows changed since the previous scan (an indexed
 * range on updated_at) and fixes those: cost grows with what changed, not with the MV count.
 * ringChanged(): recomputes owners from memory and moves only the jobs whose owner changed.
 */
export class Reconciler {
  private placements = new Map<number, Placement>();
  /** Every MV id seen in metadata, scheduled or not, to notice rows deleted behind our back. */
  private knownIds = new Set<number>();
  private lastScanDbMs: number | undefined;

  constructor(
    private readonly deps: {
      db: Knex;
      placer: JobPlacer;
      ring: HashRing;
      clock: Clock;
      logger: Logger;
      /** Queues of nodes that are gone, to drain after their jobs moved. */
      retireQueue: (queue: string) => Promise<void>;
      /** All node queues known to exist (live or dead). */
      knownQueues: () => Promise<string[]>;
    },
  ) {}

  get size(): number {
    return this.placements.size;
  }

  private ownerQueue(task: TaskId): string | undefined {
    const node = this.deps.ring.getNode(taskRingKey(task));
    return node === undefined ? undefined : nodeQueueName(node);
  }

  /** What should be queued: every MV and MV log, or those whose runtime row changed since `since`. */
  private async readDesired(since?: Date): Promise<DesiredRow[]> {
    const mv = this.deps.db('mvs_mviews as m').join('mvs_mview_refresh_info as ri', 'ri.mview_id', 'm.mview_id');
    const ml = this.deps.db('mvs_mlogs as l').join('mvs_mlog_purge_info as pi', 'pi.mlog_id', 'l.mlog_id');
    if (since) {
      void mv.where('ri.updated_at', '>=', since);
      void ml.where('pi.updated_at', '>=', since);
    }
    const [mvs, mls] = await Promise.all([
      mv.select('m.mview_id', 'm.status', 'ri.next_time') as Promise<MviewDesired[]>,
      ml.select('l.mlog_id', 'l.purge_method', 'pi.next_time') as Promise<MlogDesired[]>,
    ]);
    return [...mvs.map(mviewDesired), ...mls.map(mlogDesired)];
  }

  private async dbNow(): Promise<number> {
    const [rows] = (await this.deps.db.raw('SELECT NOW(6) AS now')) as [Array<{ now: Date }>];
    return rows[0]!.now.getTime();
  }

  private stats(kind: ReconcileStats['kind']): ReconcileStats {
    return { kind, examined: 0, added: 0, rescheduled: 0, removed: 0, moved: 0, ms: 0 };
  }

  async full(): Promise<ReconcileStats> {
    const t0 = this.deps.clock.now();
    const st = this.stats('full');
    const scanStart = await this.dbNow();
    const rows = await this.readDesired();
    st.examined = rows.length;

    const liveQueues = new Set(this.deps.ring.nodes().map(nodeQueueName));
    const queues = [...new Set([...(await this.deps.knownQueues()), ...liveQueues])];
    const snaps = new Map(await Promise.all(queues.map(async (q) => [q, await this.deps.placer.snapshot(q)] as const)));

    const desired = new Map<number, number>();
    this.knownIds = new Set();
    for (const r of rows) {
      this.knownIds.add(r.task);
      if (r.due !== null) desired.set(r.task, r.due);
    }

    const placements = new Map<number, Placement>();
    const toAdd = new Map<string, Array<{ task: TaskId; dueAt: number }>>();
    const now = this.deps.clock.now();
    for (const [id, due] of desired) {
      const owner = this.ownerQueue(id);
      if (!owner) continue; // no live node: nothing can run it; placed when one joins
      const snap = snaps.get(owner);
      const have = snap?.delayed.get(id);
      if (have === undefined && !snap?.ready.has(id) && !snap?.active.has(id)) {
        // Running in a dead node's queue: that run is lost, the new owner takes over now.
        const list = toAdd.get(owner) ?? [];
        list.push({ task: id, dueAt: due });
        toAdd.set(owner, list);
        st.added++;
      } else if (have !== undefined && have !== due) {
        await this.deps.placer.ensure(owner, id, due, now);
        st.rescheduled++;
      }
      placements.set(id, { queue: owner, dueAt: due });
    }
    for (const [q, items] of toAdd) await this.deps.placer.addMany(q, items, now);

    // Jobs that should not be where they are: other queues, or MVs with no schedule.
    for (const [q, snap] of snaps) {
      const dead = !liveQueues.has(q);
      for (const id of [...snap.delayed.keys(), ...snap.ready]) {
        if (placements.get(id)?.queue === q) continue;
        if (dead) continue; // the whole queue goes below
        if (await this.deps.placer.remove(q, id)) st.removed++;
      }
      if (dead) {
        await this.deps.retireQueue(q);
        st.moved += snap.delayed.size + snap.ready.size + snap.active.size;
      }
    }
    this.placements = placements;
    this.lastScanDbMs = scanStart;
    st.ms = this.deps.clock.now() - t0;
    return st;
  }

  /** Apply metadata rows that changed since the previous scan. */
  async incremental(): Promise<ReconcileStats> {
    if (this.lastScanDbMs === undefined) return this.full();
    const t0 = this.deps.clock.now();
    const st = this.stats('incremental');
    const scanStart = await this.dbNow();
    const since = new Date(this.lastScanDbMs - SCAN_OVERLAP_MS);
    const rows = await this.readDesired(since);
    st.examined = rows.length;
    for (const r of rows) {
      this.knownIds.add(r.task);
      await this.apply(r.task, r.due, st);
    }
    await this.sweepDeleted(st);
    this.lastScanDbMs = scanStart;
    st.ms = this.deps.clock.now() - t0;
    return st;
  }

  /** An MV or MV log was dropped: remove its job now (the DDL event carries the id). */
  async forget(task: TaskId): Promise<void> {
    const st = this.stats('incremental');
    this.knownIds.delete(task);
    await this.apply(task, null, st);
  }

  /**
   * DROP deletes rows, which an updated_at scan cannot see. A count comparison is cheap; only
   * when it shows fewer MVs than we know of do we read the id list to find which went.
   */
  private async sweepDeleted(st: ReconcileStats): Promise<void> {
    const [a, b] = (await Promise.all([
      this.deps.db('mvs_mviews').count({ n: '*' }).first(),
      this.deps.db('mvs_mlogs').count({ n: '*' }).first(),
    ])) as Array<{ n: number | string }>;
    if (Number(a!.n) + Number(b!.n) >= this.knownIds.size) return;
    const ids = new Set([
      ...(await this.deps.db('mvs_mviews').pluck('mview_id')).map(Number),
      ...(await this.deps.db('mvs_mlogs').pluck('mlog_id')).map((x) => -Number(x)),
    ]);
    for (const id of [...this.knownIds]) {
      if (ids.has(id)) continue;
      this.knownIds.delete(id);
      await this.apply(id, null, st);
    }
  }

  /** The task's next_time now (null when it should have no job), read at the moment of use. */
  private async currentDue(task: TaskId): Promise<number | null> {
    if (task < 0) {
      const row = (await this.deps.db('mvs_mlogs as l')
        .join('mvs_mlog_purge_info as pi', 'pi.mlog_id', 'l.mlog_id')
        .where('l.mlog_id', -task)
        .first('l.mlog_id', 'l.purge_method', 'pi.next_time')) as MlogDesired | undefined;
      return row ? mlogDesired(row).due : null;
    }
    const row = (await this.deps.db('mvs_mviews as m')
      .join('mvs_mview_refresh_info as ri', 'ri.mview_id', 'm.mview_id')
      .where('m.mview_id', task)
      .first('m.mview_id', 'm.status', 'ri.next_time')) as MviewDesired | undefined;
    return row ? mviewDesired(row).due : null;
  }

  private async apply(id: number, due: number | null, st: ReconcileStats): Promise<void> {
    const current = this.placements.get(id);
    const owner = due === null ? undefined : this.ownerQueue(id);
    if (due === null || owner === undefined) {
      if (current) {
        await this.deps.placer.remove(current.queue, id);
        this.placements.delete(id);
        st.removed++;
      }
      return;
    }
    const res = await this.deps.placer.ensure(owner, id, due, this.deps.clock.now(), () => this.currentDue(id));
    if (res === 'added') st.added++;
    if (res === 'rescheduled') st.rescheduled++;
    if (current && current.queue !== owner) {
      await this.deps.placer.remove(current.queue, id);
      st.moved++;
    }
    this.placements.set(id, { queue: owner, dueAt: due });
  }

  /**
   * Membership changed: move the jobs whose owner changed (about 1/(N+1) of them when a node
   * joins), then drain the queues of nodes that left.
   */
  async ringChanged(goneNodes: string[]): Promise<ReconcileStats> {
    const t0 = this.deps.clock.now();
    const st = this.stats('ring');
    const now = this.deps.clock.now();
    const goneQueues = new Set(goneNodes.map(nodeQueueName));
    const moves: Array<[number, Placement, string]> = [];
    for (const [id, p] of this.placements) {
      const owner = this.ownerQueue(id);
      if (owner !== p.queue) moves.push([id, p, owner ?? '']);
    }
    st.examined = this.placements.size;
    // Moves are independent: run them a few dozen at a time.
    const CONCURRENCY = 32;
    for (let i = 0; i < moves.length; i += CONCURRENCY) {
      await Promise.all(
        moves.slice(i, i + CONCURRENCY).map(async ([id, p, owner]) => {
          if (!owner) {
            if (!goneQueues.has(p.queue)) await this.deps.placer.remove(p.queue, id);
            this.placements.delete(id);
            return;
          }
          await this.deps.placer.ensure(owner, id, p.dueAt, now);
          // A job running in a live node's queue hands itself over when it finishes.
          if (!goneQueues.has(p.queue)) await this.deps.placer.remove(p.queue, id);
          this.placements.set(id, { queue: owner, dueAt: p.dueAt });
          st.moved++;
        }),
      );
    }
    for (const q of goneQueues) await this.deps.retireQueue(q);
    st.ms = this.deps.clock.now() - t0;
    return st;
  }
}
