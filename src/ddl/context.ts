import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { PurgeRunner } from '../purge/purgeRunner.js';
import type { RefreshRunner } from '../refresh/runner.js';
import type { Statement } from './ast.js';

export interface DdlEvent {
  kind: 'mview' | 'mlog';
  id: number;
  change: 'created' | 'altered' | 'dropped' | 'refreshed';
}

export interface DdlResult {
  statement: Statement['kind'];
  name: string;
  message: string;
  mviewId?: number;
  mlogId?: number;
  refreshId?: number;
  purgeId?: number;
  rows?: number;
  /** REFRESH ... CASCADE: what was done to the MVs it reads, upstream first. */
  upstream?: Array<{ mviewId: number; name: string; outcome: string; method?: string; rows?: number }>;
}

export interface DdlExecutorDeps {
  db: Knex;
  logger: Logger;
  clock: Clock;
  runner: RefreshRunner;
  /** Runs PURGE MATERIALIZED VIEW LOG. */
  purger?: PurgeRunner;
  /** Database named by DATABASE_URL: the schema of unqualified names. */
  defaultSchema: string;
  /** Wake the planner (Redis pub/sub); failures are logged, the DDL has already committed. */
  notify: (event: DdlEvent) => Promise<void>;
  /** How long a REFRESH statement waits for a running refresh of the same MV. */
  refreshWaitMs?: number;
  /** How long DDL on a user's table (triggers) waits for its open transactions (MVS_CUT_WAIT_MS). */
  ddlWaitMs?: number;
}

/** What the statement handlers share: the executor's dependencies and a safe planner wake-up. */
export class DdlContext {
  constructor(readonly deps: DdlExecutorDeps) {}

  get db(): Knex {
    return this.deps.db;
  }

  get ddlWaitMs(): number {
    return this.deps.ddlWaitMs ?? 2_000;
  }

  /** Deadline for waiting on a running refresh / purge of the same object. */
  waitDeadline(): number {
    return this.deps.clock.now() + (this.deps.refreshWaitMs ?? 10 * 60_000);
  }

  async notify(event: DdlEvent): Promise<void> {
    try {
      await this.deps.notify(event);
    } catch (err) {
      this.deps.logger.warn({ err, event }, 'could not wake the planner; its periodic pass will pick the change up');
    }
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
