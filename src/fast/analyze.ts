import { analyzeJoin, type ColumnCatalog, type JoinPlan } from './analyzeJoin.js';
import { analyzeGrouped, type AggregateItem, type ColumnScope, type OutputItem } from './selectList.js';
import {
  checkStatement,
  columnName,
  fail,
  groupByNodes,
  isAggregate,
  isNode,
  parseDefinition,
  refSchema,
  refTable,
  selectItems,
  Unsupported,
  visitExpr,
  type Node,
  type Parsed,
} from './sqlAst.js';

// Decides whether a defining SELECT can be refreshed incrementally from MV logs, and if so how
// (Oracle's EXPLAIN_MVIEW, in spirit). The SELECT is read with a real SQL parser; every
// expression is re-emitted from the syntax tree, so what the delta queries run is exactly what
// was analysed. Supported (DESIGN.md §2 Refresh, FAST refresh over joins):
//   aggregate: SELECT g.., COUNT(*), COUNT(x), SUM(x), AVG(x), MIN(x), MAX(x) FROM <from> [WHERE p] [GROUP BY g..]
//   spj:       SELECT <expressions including every primary key column> FROM <from> [WHERE p]
// where <from> is one table, or an inner join of tables (analyzeJoin.ts).

export type { AggFn, AggregateItem, OutputItem } from './selectList.js';
export type { ColumnCatalog, JoinAggregatePlan, JoinPlan, JoinSpjPlan, Occurrence } from './analyzeJoin.js';

interface PlanCommon {
  shape: 'table';
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

/** A plan over one table. */
export type FastPlan = AggregatePlan | SpjPlan;
export type AnyPlan = FastPlan | JoinPlan;
export type FastAnalysis = { ok: true; plan: AnyPlan } | { ok: false; reason: string };

/** The tables a definition's FROM names (schema defaulted), or undefined when it cannot be read. */
export function definitionTables(select: string, defaultSchema: string): Array<{ schema: string; name: string }> | undefined {
  const p = parseDefinition(select);
  if (!p.ok) return undefined;
  const out = new Map<string, { schema: string; name: string }>();
  const walk = (from: unknown): void => {
    if (Array.isArray(from)) return from.forEach(walk);
    if (!isNode(from)) return;
    if (Array.isArray(from.expr)) walk(from.expr);
    if (Array.isArray(from.joins)) walk(from.joins);
    if (typeof from.table === 'string') {
      const t = { schema: (from.db as string | null) ?? defaultSchema, name: from.table };
      out.set(`${t.schema}.${t.name}`, t);
    }
  };
  walk(p.parsed.ast.from);
  return [...out.values()];
}

/**
 * Can `select` be fast-refreshed, and how? `catalog` gives the columns of the tables it reads
 * (needed to resolve unqualified column names in a join; a single-table definition needs none).
 */
export function analyzeFast(select: string, defaultSchema: string, catalog?: ColumnCatalog): FastAnalysis {
  const p = parseDefinition(select);
  if (!p.ok) return p;
  try {
    checkStatement(p.parsed.ast);
    const from = p.parsed.ast.from;
    if (from === null || from === undefined || (Array.isArray(from) && from.length === 0)) fail('the definition reads no table');
    if (Array.isArray(from) && from.length === 1 && !from[0].join) return { ok: true, plan: analyzeSingle(p.parsed, defaultSchema) };
    return { ok: true, plan: analyzeJoin(p.parsed, defaultSchema, catalog) };
  } catch (err) {
    if (err instanceof Unsupported) return { ok: false, reason: err.message };
    return { ok: false, reason: `the definition could not be analysed (${(err as Error).message})` };
  }
}

/** A definition over one table. */
function analyzeSingle({ ast, sql }: Parsed, defaultSchema: string): FastPlan {
  const f = (ast.from as Node[])[0]!;
  if (f.expr || !f.table) fail('derived tables are not supported');
  const table = { schema: (f.db as string | null) ?? defaultSchema, name: String(f.table) };
  const alias = (f.as as string | null) ?? table.name;
  const columns = new Set<string>();
  const visit = (e: unknown) =>
    visitExpr(
      e,
      (n) => {
        const col = columnName(n);
        if (col === '*') fail('`*` is only supported as the whole select list of a select-project-filter view');
        const qualifier = refTable(n);
        if (qualifier && qualifier !== alias && qualifier !== table.name) fail(`column ${qualifier}.${col} does not belong to the view's table`);
        if (refSchema(n)) fail(`schema-qualified column ${refSchema(n)}.${qualifier}.${col}: use the table's name or alias`);
        columns.add(col.toLowerCase());
      },
      false,
    );
  // Comparable form: a single-table query may qualify a column or not, the meaning is the same.
  const canon = (e: unknown) =>
    sql(JSON.parse(JSON.stringify(e), (_k, v: unknown) => (isNode(v) && v.type === 'column_ref' ? { ...v, table: null } : v)));
  const scope: ColumnScope = { visit, sql, canon };

  let where: string | undefined;
  if (ast.where) {
    visit(ast.where);
    where = sql(ast.where);
  }
  const items = selectItems(ast);
  const isStar = items.length === 1 && items[0]!.expr.type === 'column_ref' && columnName(items[0]!.expr) === '*' && !refTable(items[0]!.expr);
  const groupCols = groupByNodes(ast);
  const hasAgg = !isStar && items.some((it) => isAggregate(it.expr));
  const common = { shape: 'table' as const, table, alias, where };

  if (!hasAgg && groupCols.length === 0) {
    if (isStar) return { ...common, kind: 'spj', columnsRead: [...columns], items: null };
    const out = items.map((it, index) => {
      visit(it.expr);
      const column = it.expr.type === 'column_ref' ? columnName(it.expr) : undefined;
      return { index, expr: sql(it.expr), column };
    });
    return { ...common, kind: 'spj', columnsRead: [...columns], items: out };
  }
  if (isStar) fail('`*` cannot be used with GROUP BY');
  const { groups, aggregates } = analyzeGrouped(items, groupCols, scope);
  return { ...common, kind: 'aggregate', columnsRead: [...columns], groups, aggregates };
}
