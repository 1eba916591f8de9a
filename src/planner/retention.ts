import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';

// History retention (DESIGN.md §2 "History and retention", §4 invariant 9): refresh and purge
// history older than MVS_HISTORY_KEEP_DAYS go, at most MVS_HISTORY_KEEP_RUNS rows are kept per MV
// or log, and the newest row of each always stays; the edit log follows the age limit. The
// leading planner trims a little at a time: each DELETE names at most BATCH rows by primary key
// (record locks on old rows only, never a range a refresh writes into), so a trim never holds up
// a refresh.

export interface RetentionDeps {
  db: Knex;
  logger: Logger;
  clock: Clock;
  keepDays: number;
  keepRuns: number;
  /** Rows per DELETE. */
  batch?: number;
  /** Statements per pass at most (the rest waits for the next pass). */
  maxStatements?: number;
}

export interface RetentionReport {
  refreshRows: number;
  purgeRows: number;
  editLogRows: number;
  statements: number;
}

interface HistoryTable {
  table: string;
  id: string;
  owner: string;
  status: string;
  /** Where to find owners that ran since the last pass (cap per owner). */
  info: { table: string; key: string };
}

const REFRESH: HistoryTable = { table: 'mvs_mview_refresh_hist', id: 'refresh_id', owner: 'mview_id', status: 'refresh_status', info: { table: 'mvs_mview_refresh_info', key: 'mview_id' } };
const PURGE: HistoryTable = { table: 'mvs_mlog_purge_hist', id: 'purge_id', owner: 'mlog_id', status: 'purge_status', info: { table: 'mvs_mlog_purge_info', key: 'mlog_id' } };

/**
 * Where the per-owner cap scan stands: owners after `after`, among those that ran since `since`
 * (all of them on the first scan); a scan that completes starts the next one from its start time.
 */
interface ScanState {
  since: Date | undefined;
  after: number;
  started: Date;
}

const OWNERS_PER_READ = 500;

export class HistoryRetention {
  private readonly scans = new Map<string, ScanState>();

  constructor(private readonly deps: RetentionDeps) {}

  async run(): Promise<RetentionReport> {
    const budget = { left: this.deps.maxStatements ?? 200 };
    const report: RetentionReport = { refreshRows: 0, purgeRows: 0, editLogRows: 0, statements: 0 };
    const cutoff = new Date(this.deps.clock.now() - this.deps.keepDays * 86_400_000);
    report.refreshRows += await this.trimAge(REFRESH, 'start_time', cutoff, budget);
    report.purgeRows += await this.trimAge(PURGE, 'start_time', cutoff, budget);
    report.refreshRows += await this.trimRuns(REFRESH, budget);
    report.purgeRows += await this.trimRuns(PURGE, budget);
    report.editLogRows += await this.trimEditLog(cutoff, budget);
    report.statements = (this.deps.maxStatements ?? 200) - budget.left;
    return report;
  }

  private get batch(): number {
    return this.deps.batch ?? 1000;
  }

  /** Rows older than the cut-off, except each owner's newest. */
  private async trimAge(h: HistoryTable, timeCol: string, cutoff: Date, budget: { left: number }): Promise<number> {
    const { db } = this.deps;
    let removed = 0;
    while (budget.left > 0) {
      budget.left--;
      const ids = (await db(`${h.table} as h`)
        .where(`h.${timeCol}`, '<', cutoff)
        .whereNot(`h.${h.status}`, 'RUNNING')
        .whereExists((q) => q.select(db.raw('1')).from(`${h.table} as n`).whereRaw(`n.${h.owner} = h.${h.owner}`).andWhereRaw(`n.${h.id} > h.${h.id}`))
        .orderBy(`h.${h.id}`)
        .limit(this.batch)
        .pluck(`h.${h.id}`)) as Array<number | string>;
      if (!ids.length) break;
      budget.left--;
      removed += await db(h.table).whereIn(h.id, ids).delete();
      if (ids.length < this.batch) break;
    }
    return removed;
  }

  /** At most keepRuns rows per owner: the newest stay. Resumes where the last pass stopped. */
  private async trimRuns(h: HistoryTable, budget: { left: number }): Promise<number> {
    const { db, clock } = this.deps;
    const state = this.scans.get(h.table) ?? { since: undefined, after: 0, started: new Date(clock.now()) };
    this.scans.set(h.table, state);
    if (budget.left <= 0) return 0;
    budget.left--;
    const q = db(h.info.table).select(h.info.key).where(h.info.key, '>', state.after).orderBy(h.info.key).limit(OWNERS_PER_READ);
    if (state.since) q.where('updated_at', '>=', state.since);
    const owners = ((await q) as Array<Record<string, number | string>>).map((r) => Number(r[h.info.key]));
    let removed = 0;
    let finished = owners.length < OWNERS_PER_READ;
    for (const owner of owners) {
      if (budget.left <= 0) {
        finished = false;
        break;
      }
      budget.left--;
      const row = (await db(h.table).where(h.owner, owner).orderBy(h.id, 'desc').offset(this.deps.keepRuns).first(h.id)) as Record<string, number> | undefined;
      let done = !row;
      while (!done && budget.left > 0) {
        budget.left--;
        const n = await db(h.table).where(h.owner, owner).where(h.id, '<=', Number(row![h.id])).orderBy(h.id).limit(this.batch).delete();
        removed += n;
        done = n < this.batch;
      }
      if (!done) {
        finished = false;
        break; // this owner again next pass
      }
      state.after = owner;
    }
    if (finished) {
      // Next scan: owners that ran since this one started (a minute of overlap for late commits).
      this.scans.set(h.table, { since: new Date(state.started.getTime() - 60_000), after: 0, started: new Date(clock.now()) });
    }
    return removed;
  }

  private async trimEditLog(cutoff: Date, budget: { left: number }): Promise<number> {
    let removed = 0;
    while (budget.left > 0) {
      budget.left--;
      const n = await this.deps.db('mvs_edit_log').where('created_at', '<', cutoff).orderBy('id').limit(this.batch).delete();
      removed += n;
      if (n < this.batch) break;
    }
    return removed;
  }
}
