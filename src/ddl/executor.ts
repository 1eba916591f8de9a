import { DdlContext, type DdlExecutorDeps, type DdlResult } from './context.js';
import { MlogDdl } from './mlogDdl.js';
import { MviewDdl } from './mviewDdl.js';
import { parseStatement } from './parser.js';

export type { DdlEvent, DdlExecutorDeps, DdlResult } from './context.js';

/**
 * Executes the MV DDL of DESIGN.md §3: parses one statement and hands it to the handler of its
 * kind (mviewDdl.ts for materialized views, mlogDdl.ts for their logs).
 */
export class DdlExecutor {
  private readonly mviews: MviewDdl;
  private readonly mlogs: MlogDdl;

  constructor(deps: DdlExecutorDeps) {
    const ctx = new DdlContext(deps);
    this.mviews = new MviewDdl(ctx);
    this.mlogs = new MlogDdl(ctx);
  }

  async execute(sql: string): Promise<DdlResult> {
    const stmt = parseStatement(sql);
    switch (stmt.kind) {
      case 'createMview':
        return this.mviews.create(stmt);
      case 'alterMviewRefresh':
        return this.mviews.alterRefresh(stmt);
      case 'alterMviewSuspend':
      case 'alterMviewResume':
        return this.mviews.setStatus(stmt);
      case 'dropMview':
        return this.mviews.drop(stmt);
      case 'refreshMview':
        return this.mviews.refresh(stmt);
      case 'createMlog':
        return this.mlogs.create(stmt);
      case 'alterMlogPurge':
        return this.mlogs.alterPurge(stmt);
      case 'dropMlog':
        return this.mlogs.drop(stmt);
      case 'purgeMlog':
        return this.mlogs.purge(stmt);
    }
  }
}
