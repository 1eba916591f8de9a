import { DelayedError, UnrecoverableError, type Job, type Queue } from 'bullmq';
import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { MvsError, NotFoundError, ValidationError, errorMessage } from '../errors.js';
import { RECREATE_MVIEW, type RecreateMviewData } from '../jobs/internal.js';
import { isRequestJobName, parsePayload } from '../jobs/schemas.js';
import type { Logger } from '../log.js';
import { displayName, parseDottedName } from '../mv/identifiers.js';
import { findMviewByName } from '../mv/repository.js';
import type { RefreshRunner } from '../refresh/runner.js';
import type { PurgeRunner } from '../purge/purgeRunner.js';
import { findMlogByTable } from '../mlog/repository.js';
import { storeVersionReport } from '../versions/reports.js';
import type { RepairInfo, TableRef } from '../versions/types.js';
import { deferDelayMs, delayJob } from './delay.js';
import { refreshAfterUpstream, refreshUpstream } from '../pipeline/cascade.js';
import { REPAIR_JOB_OPTS, type RepairProcessor } from './repairProcessor.js';

/** How long a cascade waits for a running refresh of one of its MVs. */
const CASCADE_WAIT_MS = 10 * 60_000;

export interface RequestProcessorDeps {
  db: Knex;
  log: Logger;
  clock: Clock;
  runner: RefreshRunner;
  purger: PurgeRunner;
  repairQueue: Queue;
  /** Applies (or queues) the repairs a report or a repair request fans out to. */
  repairs: Pick<RepairProcessor, 'fanOut' | 'dependents'>;
  defaultSchema: string;
}

/**
 * Jobs other services put on the `requests` queue (DESIGN.md §3): validated against their
 * schema (bad input fails for good, naming the field), then carried out.
 */
export class RequestProcessor {
  constructor(private readonly deps: RequestProcessorDeps) {}

  async process(job: Job, token: string | undefined): Promise<unknown> {
    const log = this.deps.log.child({ job_id: job.id, job_name: job.name });
    if (!isRequestJobName(job.name)) {
      throw new UnrecoverableError(`unknown job name ${JSON.stringify(job.name)}; expected refresh, purge, report-versions or repair`);
    }
    try {
      switch (job.name) {
        case 'refresh': {
          const p = parsePayload('refresh', job.data);
          const name = parseDottedName(p.mview, this.deps.defaultSchema, 'mview');
          const mv = await findMviewByName(this.deps.db, name.schema, name.name);
          if (!mv) throw new NotFoundError(`materialized view ${displayName(name)} does not exist`);
          const req = { mviewId: mv.mview_id, trigger: p.trigger ?? 'REQUEST', jobId: job.id!, ...(p.method ? { method: p.method } : {}) } as const;
          const cascade = p.cascade ? { ...this.deps, logger: log, waitMs: CASCADE_WAIT_MS, jobId: job.id! } : undefined;
          const upstream = cascade ? await refreshUpstream(cascade, mv.mview_id) : undefined;
          const outcome = cascade ? await refreshAfterUpstream(cascade, req) : await this.deps.runner.run({ ...req, requestedAt: job.timestamp });
          if (outcome.kind === 'DEFERRED') return delayJob(job, token, this.deps.clock.now() + deferDelayMs());
          if (outcome.kind === 'FAILED') throw new MvsError(`refresh of ${displayName(name)} failed: ${outcome.error}`);
          if (outcome.kind === 'GONE') throw new NotFoundError(`materialized view ${displayName(name)} does not exist`);
          log.info({ mview_id: mv.mview_id, outcome: outcome.kind }, 'refresh request done');
          const more = upstream ? { upstream } : {};
          return outcome.kind === 'SUCCESS'
            ? { outcome: outcome.kind, refreshId: outcome.refreshId, rows: outcome.rows, method: outcome.method, ...more }
            : { outcome: outcome.kind, ...more };
        }
        case 'report-versions': {
          const p = parsePayload('report-versions', job.data);
          const table = this.table(p.table);
          const out = await storeVersionReport(this.deps.db, table, p, this.deps.clock);
          if (out.recreated) {
            await this.deps.repairQueue.addBulk(
              out.dependents.map((mviewId) => ({
                name: RECREATE_MVIEW,
                data: { mviewId, table, ...out.recreated! } satisfies RecreateMviewData,
                opts: REPAIR_JOB_OPTS,
              })),
            );
          }
          const repairs = out.repairInfos.length ? await this.fanOut(table, out.dependents, out.repairInfos, log) : 0;
          log.info({ table: `${table.schema}.${table.name}`, data_changed: p.dataChanged, dependents: out.dependents.length, repairs, recreated: Boolean(out.recreated) }, 'versions reported');
          return { dependents: out.dependents.length, repairs, recreated: Boolean(out.recreated) };
        }
        case 'repair': {
          const p = parsePayload('repair', job.data);
          const table = this.table(p.table);
          const dependents = await this.deps.repairs.dependents(table);
          const repairs = await this.fanOut(table, dependents, p.partitions, log);
          return { dependents: dependents.length, repairs };
        }
        case 'purge': {
          const p = parsePayload('purge', job.data);
          const table = this.table(p.mlog);
          const mlog = await findMlogByTable(this.deps.db, table.schema, table.name);
          if (!mlog) throw new NotFoundError(`there is no materialized view log on ${table.schema}.${table.name}`);
          const outcome = await this.deps.purger.run({ mlogId: mlog.mlog_id, trigger: 'REQUEST', jobId: job.id! });
          if (outcome.kind === 'DEFERRED') return delayJob(job, token, this.deps.clock.now() + deferDelayMs());
          if (outcome.kind === 'FAILED') throw new MvsError(`purge of the log on ${table.schema}.${table.name} failed: ${outcome.error}`);
          if (outcome.kind === 'GONE') throw new NotFoundError(`there is no materialized view log on ${table.schema}.${table.name}`);
          log.info({ mlog_id: mlog.mlog_id, outcome: outcome.kind }, 'purge request done');
          return outcome.kind === 'SUCCESS'
            ? { outcome: outcome.kind, purgeId: outcome.purgeId, rows: outcome.rows, watermark: outcome.watermark }
            : { outcome: outcome.kind };
        }
      }
    } catch (err) {
      if (err instanceof DelayedError || err instanceof UnrecoverableError) throw err;
      // Bad input will be just as bad next time: fail it for good, naming what was wrong.
      if (err instanceof ValidationError || err instanceof NotFoundError) throw new UnrecoverableError(err.message);
      throw err instanceof Error ? err : new Error(errorMessage(err));
    }
  }

  private table(text: string): TableRef {
    const n = parseDottedName(text, this.deps.defaultSchema, 'table');
    return { schema: n.schema, name: n.name };
  }

  /** Repairs for every dependent MV, applied or queued before the request completes; returns how many MVs. */
  private async fanOut(table: TableRef, mviewIds: number[], partitions: RepairInfo[], log: Logger): Promise<number> {
    await this.deps.repairs.fanOut(table, mviewIds, partitions, log);
    return mviewIds.length;
  }
}
