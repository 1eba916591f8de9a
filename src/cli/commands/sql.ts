import { readFileSync } from 'node:fs';
import { createDdlExecutor, createRuntime } from '../../app/runtime.js';
import { parseStatement, splitStatementsWithLocation } from '../../ddl/parser.js';
import { ValidationError } from '../../errors.js';
import type { CliContext } from '../context.js';

export async function sqlCommand(ctx: CliContext, stmt: string | undefined, opts: { file?: string; json?: boolean }): Promise<number> {
  if ((stmt === undefined) === (opts.file === undefined)) {
    throw new ValidationError('give either one statement or -f <file.sql>');
  }
  const pieces = opts.file
    ? splitStatementsWithLocation(readFileSync(opts.file, 'utf8'))
    : [{ text: stmt!, line: 1, column: 1, offset: 0 }];
  // Parse everything first: a syntax error anywhere in a file runs nothing.
  for (const p of pieces) parseStatement(p.text, { line: p.line, column: p.column, offset: p.offset });
  const rt = createRuntime(ctx.config, ctx.logger, { poolMax: 6 });
  // --json prints one document, an array with one result per statement run; when a statement
  // fails, the array holds the ones that ran before it (and the error goes to stderr).
  const results: unknown[] = [];
  try {
    const ddl = createDdlExecutor(rt);
    for (const p of pieces) {
      const res = await ddl.execute(p.text);
      if (opts.json) results.push(res);
      else ctx.out(res.message);
    }
    return 0;
  } finally {
    if (opts.json) ctx.out(JSON.stringify(results));
    await rt.close();
  }
}
