import sqlParser from 'node-sql-parser';
import { quoteBareNames } from './quoteWords.js';

const { Parser } = sqlParser;

// Decides whether a defining SELECT can be refreshed incrementally from an MV log, and if so
// how (Oracle's EXPLAIN_MVIEW, in spirit). The SELECT is read with a real SQL parser; every
// expression is re-emitted from the syntax tree, so what the delta queries run is exactly what
// was analysed. Supported (DESIGN.md §2 Refresh):
//   aggregate: SELECT g.., COUNT(*), COUNT(x), SUM(x), AVG(x), MIN(x), MAX(x) FROM t [WHERE p] [GROUP BY g..]
//   spj:       SELECT <expressions including every primary key column> FROM t [WHERE p]

export type AggFn = 'COUNT_STAR' | 'COUNT' | 'SUM' | 'AVG' | 'MIN' | 'MAX';

export interface OutputItem {
  /** Position in the select list (and in the MV's columns). */
  index: number;
  /** SQL of the expression, evaluated against a row of the base table (or of its log). */
  expr: string;
}

export interface AggregateItem extends OutputItem {
  fn: AggFn;
  /** SQL of the argument (absent for COUNT(*)). */
  arg?: string;
}

interface PlanCommon {
  table: { schema: string; name: string };
  /** The name column references use for the table (its alias, else its name). */
  alias: string;
  where?: string;
  /** Base-table columns the definition reads (their spelling in the query, lower-cased). */
  columnsRead: string[];
}

export interface AggregatePlan extends PlanCommon {
  kind: 'aggregate';
  groups: OutputItem[];
  aggregates: AggregateItem[];
}

export interface SpjPlan extends PlanCommon {
  kind: 'spj';
  /** Select items; null when the list is `*` (every column of the table, in table order). */
  items: Array<OutputItem & { column?: string }> | null;
}

export type FastPlan = AggregatePlan | SpjPlan;
export type FastAnalysis = { ok: true; plan: FastPlan } | { ok: false; reason: string };

const NONDETERMINISTIC = new Set([
  'NOW', 'CURRENT_TIMESTAMP', 'LOCALTIME', 'LOCALTIMESTAMP', 'CURDATE', 'CURRENT_DATE', 'CURTIME', 'CURRENT_TIME',
  'SYSDATE', 'UNIX_TIMESTAMP', 'UTC_DATE', 'UTC_TIME', 'UTC_TIMESTAMP', 'RAND', 'UUID', 'UUID_SHORT', 'SYS_GUID',
  'CONNECTION_ID', 'USER', 'CURRENT_USER', 'SESSION_USER', 'SYSTEM_USER', 'DATABASE', 'SCHEMA', 'LAST_INSERT_ID',
  'FOUND_ROWS', 'ROW_COUNT', 'SLEEP', 'GET_LOCK', 'RELEASE_LOCK', 'IS_FREE_LOCK', 'IS_USED_LOCK', 'NEXTVAL',
  'LASTVAL', 'SETVAL', 'BENCHMARK', 'LOAD_FILE', 'VERSION',
]);

type Node = Record<string, unknown>;
const isNode = (v: unknown): v is Node => typeof v === 'object' && v !== null;

class Unsupported extends Error {}
const fail = (reason: string): never => {
  throw new Unsupported(reason);
};

function functionName(n: Node): string {
  const name = n.name;
  if (typeof name === 'string') return name.toUpperCase();
  if (isNode(name) && Array.isArray(name.name)) {
    return (name.name as Node[]).map((p) => String(p.value)).join('.').toUpperCase();
  }
  return String(name).toUpperCase();
}

function columnName(n: Node): string {
  const c = n.column;
  if (typeof c === 'string') return c;
  if (isNode(c) && isNode(c.expr)) return String(c.expr.value);
  return String(c);
}

function isAggregate(n: Node): boolean {
  return n.type === 'aggr_func';
}

interface Walker {
  alias: string;
  tableName: string;
  columns: Set<string>;
}

/** Check an expression: deterministic, no subquery, no variables, only this table's columns. */
function visit(n: unknown, w: Walker, allowAggregates: boolean): void {
  if (Array.isArray(n)) {
    for (const x of n) visit(x, w, allowAggregates);
    return;
  }
  if (!isNode(n)) return;
  if ('ast' in n || n.type === 'select') fail('subqueries are not supported');
  switch (n.type) {
    case 'column_ref': {
      const col = columnName(n);
      if (col === '*') fail('`*` is only supported as the whole select list of a select-project-filter view');
      if (n.table && n.table !== w.alias && n.table !== w.tableName) {
        fail(`column ${String(n.table)}.${col} does not belong to the view's table`);
      }
      if (n.db) fail(`schema-qualified column ${String(n.db)}.${String(n.table)}.${col}: use the table's name or alias`);
      w.columns.add(col.toLowerCase());
      return;
    }
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
    visit(v, w, allowAggregates);
  }
}

/** Parse; if the parser trips on a column named like a keyword (`status`), again with names quoted. */
function parseOnce(parser: InstanceType<typeof Parser>, select: string, opt: { database: string }): unknown {
  try {
    return parser.astify(select, opt) as unknown;
  } catch (err) {
    const quoted = quoteBareNames(select);
    if (quoted === undefined || quoted === select) throw err;
    try {
      return parser.astify(quoted, opt) as unknown;
    } catch {
      throw err;
    }
  }
}

export function analyzeFast(select: string, defaultSchema: string): FastAnalysis {
  const parser = new Parser();
  const opt = { database: 'MariaDB' };
  let ast: Node;
  try {
    const parsed = parseOnce(parser, select, opt);
    const list = Array.isArray(parsed) ? parsed : [parsed];
    if (list.length !== 1) return { ok: false, reason: 'the definition must be a single SELECT' };
    ast = list[0] as Node;
  } catch (err) {
    return { ok: false, reason: `the SQL parser could not analyse the definition (${(err as Error).message.split('\n')[0]})` };
  }
  const sql = (e: unknown) => parser.exprToSQL(e as never, opt) as string;
  // Comparable form: a single-table query may qualify a column or not, the meaning is the same.
  const canon = (e: unknown) =>
    sql(
      JSON.parse(JSON.stringify(e), (k, v: unknown) =>
        isNode(v) && v.type === 'column_ref' ? { ...v, table: null } : v,
      ),
    );
  try {
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
    const from = (ast.from as Node[] | null) ?? [];
    if (from.length !== 1) fail(from.length === 0 ? 'the definition reads no table' : 'joins and multi-table definitions are not supported');
    const f = from[0]!;
    if (f.expr || !f.table) fail('derived tables are not supported');
    if (f.join) fail('joins are not supported');
    const table = { schema: (f.db as string | null) ?? defaultSchema, name: String(f.table) };
    const alias = (f.as as string | null) ?? table.name;
    const w: Walker = { alias, tableName: table.name, columns: new Set() };

    let where: string | undefined;
    if (ast.where) {
      visit(ast.where, w, false);
      where = sql(ast.where);
    }
    const columns = ast.columns as Array<{ expr: Node; as: string | null }> | '*';
    const items = columns === '*' ? [{ expr: { type: 'column_ref', table: null, column: '*' } as Node, as: null }] : columns;
    const isStar = items.length === 1 && items[0]!.expr.type === 'column_ref' && columnName(items[0]!.expr) === '*' && !items[0]!.expr.table;
    const groupby = ast.groupby as { columns: Node[] | null } | Node[] | null;
    const groupCols = (Array.isArray(groupby) ? groupby : groupby?.columns) ?? [];
    const hasAgg = !isStar && items.some((it) => isAggregate(it.expr));

    if (!hasAgg && groupCols.length === 0) {
      if (isStar) return { ok: true, plan: { kind: 'spj', table, alias, where, columnsRead: [...w.columns], items: null } };
      const out = items.map((it, index) => {
        visit(it.expr, w, false);
        const column = it.expr.type === 'column_ref' ? columnName(it.expr) : undefined;
        return { index, expr: sql(it.expr), column };
      });
      return { ok: true, plan: { kind: 'spj', table, alias, where, columnsRead: [...w.columns], items: out } };
    }
    if (isStar) fail('`*` cannot be used with GROUP BY');

    // Resolve GROUP BY entries (expressions, select-list positions, or output aliases) to SQL.
    const itemSql = items.map((it) => (isAggregate(it.expr) ? undefined : sql(it.expr)));
    const itemCanon = items.map((it) => (isAggregate(it.expr) ? undefined : canon(it.expr)));
    const groupSql = groupCols.map((g) => {
      if (g.type === 'number') {
        const pos = Number(g.value);
        const it = items[pos - 1];
        if (!it) fail(`GROUP BY ${pos} is out of range`);
        if (isAggregate(it!.expr)) fail(`GROUP BY ${pos} refers to an aggregate`);
        return itemCanon[pos - 1]!;
      }
      if (g.type === 'column_ref' && !g.table) {
        const byAlias = items.findIndex((it) => it.as !== null && it.as.toLowerCase() === columnName(g).toLowerCase());
        if (byAlias >= 0 && !isAggregate(items[byAlias]!.expr)) {
          // MySQL prefers a table column over an output alias of the same name.
          const aliasedExpr = items[byAlias]!.expr;
          if (!(aliasedExpr.type === 'column_ref' && columnName(aliasedExpr).toLowerCase() === columnName(g).toLowerCase())) {
            return itemCanon[byAlias]!;
          }
        }
      }
      visit(g, w, false);
      return canon(g);
    });
    const groups: OutputItem[] = [];
    const aggregates: AggregateItem[] = [];
    items.forEach((it, index) => {
      const e = it.expr;
      if (isAggregate(e)) {
        const name = String(e.name).toUpperCase();
        const args = (e.args ?? {}) as Node;
        if (e.over) fail('window functions are not supported');
        if (!['COUNT', 'SUM', 'AVG', 'MIN', 'MAX'].includes(name)) fail(`aggregate ${name} is not supported (COUNT, SUM, AVG, MIN, MAX are)`);
        if (args.distinct && (name === 'COUNT' || name === 'SUM' || name === 'AVG')) fail(`${name}(DISTINCT ...) is not supported`);
        if (args.orderby || args.separator) fail(`${name} with ORDER BY / SEPARATOR is not supported`);
        const argExpr = args.expr as Node | undefined;
        if (!argExpr) fail(`${name} without an argument`);
        if (name === 'COUNT' && argExpr!.type === 'star') {
          aggregates.push({ index, expr: sql(e), fn: 'COUNT_STAR' });
          return;
        }
        if (argExpr!.type === 'star') fail(`${name}(*) is not valid`);
        visit(argExpr, w, false);
        aggregates.push({ index, expr: sql(e), fn: name as AggFn, arg: sql(argExpr) });
        return;
      }
      visit(e, w, false);
      const key = itemCanon[index]!;
      if (!groupSql.includes(key)) fail(`select item ${itemSql[index]} is neither an aggregate nor a GROUP BY expression`);
      groups.push({ index, expr: itemSql[index]!, key } as OutputItem & { key: string });
    });
    for (const g of groupSql) {
      if (!groups.some((x) => (x as OutputItem & { key: string }).key === g)) {
        fail(`GROUP BY expression ${g} must also be in the select list`);
      }
    }
    // A group expression listed twice in the select list is one group column.
    const seen = new Set<string>();
    const uniqueGroups = groups
      .filter((g) => {
        const k = (g as OutputItem & { key: string }).key;
        return seen.has(k) ? false : (seen.add(k), true);
      })
      .map(({ index, expr }) => ({ index, expr }));
    return { ok: true, plan: { kind: 'aggregate', table, alias, where, columnsRead: [...w.columns], groups: uniqueGroups, aggregates } };
  } catch (err) {
    if (err instanceof Unsupported) return { ok: false, reason: err.message };
    return { ok: false, reason: `the definition could not be analysed (${(err as Error).message})` };
  }
}
