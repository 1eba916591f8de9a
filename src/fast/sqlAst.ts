import sqlParser from 'node-sql-parser';
import { quoteBareNames } from './quoteWords.js';

const { Parser } = sqlParser;

// The pieces of node-sql-parser's syntax tree the FAST analysis reads, and the checks every
// expression of a definition must pass whatever the definition's shape (one table or a join).

export type Node = Record<string, unknown>;
export const isNode = (v: unknown): v is Node => typeof v === 'object' && v !== null;

export const PARSER_OPTIONS = { database: 'MariaDB' } as const;

/** A definition the analysis refuses; the message is the reason shown to people. */
export class Unsupported extends Error {}

export const fail = (reason: string): never => {
  throw new Unsupported(reason);
};

export const NONDETERMINISTIC = new Set([
  'NOW', 'CURRENT_TIMESTAMP', 'LOCALTIME', 'LOCALTIMESTAMP', 'CURDATE', 'CURRENT_DATE', 'CURTIME', 'CURRENT_TIME',
  'SYSDATE', 'UNIX_TIMESTAMP', 'UTC_DATE', 'UTC_TIME', 'UTC_TIMESTAMP', 'RAND', 'UUID', 'UUID_SHORT', 'SYS_GUID',
  'CONNECTION_ID', 'USER', 'CURRENT_USER', 'SESSION_USER', 'SYSTEM_USER', 'DATABASE', 'SCHEMA', 'LAST_INSERT_ID',
  'FOUND_ROWS', 'ROW_COUNT', 'SLEEP', 'GET_LOCK', 'RELEASE_LOCK', 'IS_FREE_LOCK', 'IS_USED_LOCK', 'NEXTVAL',
  'LASTVAL', 'SETVAL', 'BENCHMARK', 'LOAD_FILE', 'VERSION',
]);

export function functionName(n: Node): string {
  const name = n.name;
  if (typeof name === 'string') return name.toUpperCase();
  if (isNode(name) && Array.isArray(name.name)) {
    return (name.name as Node[]).map((p) => String(p.value)).join('.').toUpperCase();
  }
  return String(name).toUpperCase();
}

export function columnName(n: Node): string {
  const c = n.column;
  if (typeof c === 'string') return c;
  if (isNode(c) && isNode(c.expr)) return String(c.expr.value);
  return String(c);
}

/** The qualifier of a column reference (`t` in t.c), quoted or not; null when there is none. */
export function refTable(n: Node): string | null {
  const t = n.table;
  if (t === null || t === undefined || t === '') return null;
  if (isNode(t)) return String(t.value);
  return String(t);
}

/** The schema of a column reference (`s` in s.t.c), quoted or not; null when there is none. */
export function refSchema(n: Node): string | null {
  const d = n.db;
  if (d === null || d === undefined || d === '') return null;
  if (isNode(d)) return String(d.value);
  return String(d);
}

export function isAggregate(n: Node): boolean {
  return n.type === 'aggr_func';
}

/**
 * Check an expression: deterministic, no subquery, no variables, no window function, aggregates
 * only where allowed; every column reference is handed to `column` (which checks or rewrites it).
 */
export function visitExpr(n: unknown, column: (ref: Node) => void, allowAggregates: boolean): void {
  if (Array.isArray(n)) {
    for (const x of n) visitExpr(x, column, allowAggregates);
    return;
  }
  if (!isNode(n)) return;
  if ('ast' in n || n.type === 'select') fail('subqueries are not supported');
  switch (n.type) {
    case 'column_ref':
      column(n);
      return;
    case 'var':
      fail('variables make the definition non-deterministic');
      break;
    case 'function': {
      const name = functionName(n);
      if (NONDETERMINISTIC.has(name)) fail(`${name}() is not deterministic`);
      if (n.over) fail('window functions are not supported');
      break;
    }
    case 'aggr_func':
      if (!allowAggregates) fail(`aggregate ${String(n.name)} is only supported as a whole select item`);
      break;
    default:
      break;
  }
  for (const [k, v] of Object.entries(n)) {
    if (k === 'type') continue;
    visitExpr(v, column, allowAggregates);
  }
}

export interface Parsed {
  ast: Node;
  /** SQL of an expression node, as the parser re-emits it. */
  sql: (e: unknown) => string;
}

/** Parse; if the parser trips on a column named like a keyword (`status`), again with names quoted. */
function parseOnce(parser: InstanceType<typeof Parser>, select: string): unknown {
  try {
    return parser.astify(select, PARSER_OPTIONS) as unknown;
  } catch (err) {
    const quoted = quoteBareNames(select);
    if (quoted === undefined || quoted === select) throw err;
    try {
      return parser.astify(quoted, PARSER_OPTIONS) as unknown;
    } catch {
      throw err;
    }
  }
}

/** The single SELECT of a definition, or the reason it cannot be read. */
export function parseDefinition(select: string): { ok: true; parsed: Parsed } | { ok: false; reason: string } {
  const parser = new Parser();
  try {
    const parsed = parseOnce(parser, select);
    const list = Array.isArray(parsed) ? parsed : [parsed];
    if (list.length !== 1) return { ok: false, reason: 'the definition must be a single SELECT' };
    return { ok: true, parsed: { ast: list[0] as Node, sql: (e) => parser.exprToSQL(e as never, PARSER_OPTIONS) as string } };
  } catch (err) {
    // The parser has no NATURAL JOIN: say what is wrong rather than where it stopped reading.
    if (/\bNATURAL\s+(?:(?:LEFT|RIGHT)\s+)?(?:OUTER\s+)?JOIN\b/i.test(select)) {
      return { ok: false, reason: 'NATURAL JOIN is not supported: write the join condition with ON' };
    }
    return { ok: false, reason: `the SQL parser could not analyse the definition (${(err as Error).message.split('\n')[0]})` };
  }
}

/** Refusals that do not depend on the FROM clause (DESIGN.md §2: what FAST refresh cannot do). */
export function checkStatement(ast: Node): void {
  if (ast.type !== 'select') fail('the definition is not a SELECT');
  if (ast.with) fail('WITH (common table expressions) is not supported');
  if (ast._next || ast.set_op) fail('UNION / INTERSECT / EXCEPT are not supported');
  if (ast.distinct) fail('SELECT DISTINCT is not supported; use GROUP BY');
  if (ast.having) fail('HAVING is not supported');
  if (ast.orderby) fail('ORDER BY is not supported');
  const limit = ast.limit as Node | null;
  if (limit && Array.isArray(limit.value) && limit.value.length > 0) fail('LIMIT is not supported');
  if (ast.window) fail('window functions are not supported');
  if (ast.locking_read) fail('locking reads are not supported');
}

export interface SelectItem {
  expr: Node;
  as: string | null;
}

/** The select list, with a bare `*` as one column reference named `*`. */
export function selectItems(ast: Node): SelectItem[] {
  const columns = ast.columns as SelectItem[] | '*';
  return columns === '*' ? [{ expr: { type: 'column_ref', table: null, column: '*' }, as: null }] : columns;
}

export function groupByNodes(ast: Node): Node[] {
  const groupby = ast.groupby as { columns: Node[] | null } | Node[] | null;
  return (Array.isArray(groupby) ? groupby : groupby?.columns) ?? [];
}
