import { analyzeGrouped, type AggregateItem, type ColumnScope, type OutputItem } from './selectList.js';
import { columnName, fail, groupByNodes, isAggregate, isNode, refSchema, refTable, selectItems, visitExpr, type Node, type Parsed, type SelectItem } from './sqlAst.js';

// Definitions over an inner join of two or more tables (DESIGN.md §2 "FAST refresh over joins"):
// `a JOIN b ON ...`, `a INNER JOIN b ON ...`, `a CROSS JOIN b`, comma joins with the conditions
// in WHERE, parenthesised or not, any deterministic condition, a table under several aliases
// (self-join). For an inner join ON and WHERE mean the same thing, so every condition becomes
// one conjunction. Every column reference is rewritten as `alias`.`column`: the delta queries
// put a different source (the table at the cut, its log, its state before the changes) behind
// each alias, and the expressions read the same whatever is behind it.

export interface Occurrence {
  /** The name the definition gives this occurrence of the table (its alias, else its name). */
  alias: string;
  table: { schema: string; name: string };
  /** Columns the definition reads through this alias (lower-cased). */
  columnsRead: string[];
}

/** Columns of a table in table order, or undefined when the table is unknown. */
export type ColumnCatalog = (schema: string, table: string) => string[] | undefined;

interface JoinCommon {
  shape: 'join';
  occurrences: Occurrence[];
  /** Every ON and WHERE condition, ANDed, columns qualified by alias. */
  where?: string;
}

export interface JoinAggregatePlan extends JoinCommon {
  kind: 'aggregate';
  groups: OutputItem[];
  aggregates: AggregateItem[];
}

export interface JoinSpjPlan extends JoinCommon {
  kind: 'spj';
  /** Select items; `column` when the item is a plain column of one occurrence. */
  items: Array<OutputItem & { column?: { alias: string; name: string } }>;
}

export type JoinPlan = JoinAggregatePlan | JoinSpjPlan;

const INNER = new Set(['INNER JOIN', 'JOIN', 'CROSS JOIN']);

interface FromEntry {
  alias: string;
  table: { schema: string; name: string };
  on?: Node;
}

/** The FROM clause as a flat list of table occurrences with their ON conditions. */
function flattenFrom(from: unknown, defaultSchema: string, out: FromEntry[] = []): FromEntry[] {
  const entries = Array.isArray(from) ? (from as Node[]) : [from as Node];
  for (const f of entries) {
    if (!isNode(f)) fail('the FROM clause could not be read');
    const join = f.join as string | undefined;
    if (join && !INNER.has(join.toUpperCase())) {
      fail(`${join.toUpperCase()} is not supported: FAST refresh covers inner joins (JOIN / INNER JOIN / CROSS JOIN ... ON, or comma joins with the conditions in WHERE)`);
    }
    if (f.using) fail('JOIN ... USING is not supported: write the condition with ON');
    if (Array.isArray(f.expr)) {
      // A parenthesised join: for inner joins the grouping does not change the result.
      flattenFrom(f.expr, defaultSchema, out);
      if (Array.isArray(f.joins)) flattenFrom(f.joins, defaultSchema, out);
      if (f.on) out[out.length - 1] = { ...out[out.length - 1]!, on: and(out[out.length - 1]!.on, f.on as Node) };
      continue;
    }
    if (f.expr || typeof f.table !== 'string') fail('derived tables and subqueries in FROM are not supported');
    const table = { schema: (f.db as string | null) ?? defaultSchema, name: f.table as string };
    const alias = (f.as as string | null) ?? table.name;
    if (out.some((e) => e.alias === alias)) fail(`the alias ${alias} is used for two tables`);
    out.push({ alias, table, ...(f.on ? { on: f.on as Node } : {}) });
  }
  return out;
}

function and(a: Node | undefined, b: Node): Node {
  return a ? { type: 'binary_expr', operator: 'AND', left: a, right: b, parentheses: true } : b;
}

class JoinScope implements ColumnScope {
  readonly read = new Map<string, Set<string>>();

  constructor(
    private readonly entries: FromEntry[],
    private readonly emit: (e: unknown) => string,
    private readonly catalog: ColumnCatalog | undefined,
  ) {
    for (const e of entries) this.read.set(e.alias, new Set());
  }

  /** Aliases whose table has a column of this name (undefined without a catalog). */
  owners(name: string): string[] | undefined {
    if (!this.catalog) return undefined;
    const lower = name.toLowerCase();
    const owners: string[] = [];
    for (const e of this.entries) {
      const cols = this.catalog(e.table.schema, e.table.name);
      if (cols === undefined) return undefined;
      if (cols.some((c) => c.toLowerCase() === lower)) owners.push(e.alias);
    }
    return owners;
  }

  /** Qualify one column reference with its occurrence's alias. */
  private resolve(n: Node): void {
    const col = columnName(n);
    if (col === '*') fail('`*` is only supported as a whole select item (`*` or `alias.*`) of a select-project-join view');
    if (refSchema(n)) fail(`schema-qualified column ${refSchema(n)}.${refTable(n)}.${col}: use the table's alias`);
    let alias = refTable(n);
    if (alias) {
      n.table = alias;
      if (!this.read.has(alias)) fail(`column ${alias}.${col} does not belong to any table of the definition (use the alias the FROM clause gives it)`);
    } else {
      const owners = this.owners(col);
      if (owners === undefined) fail(`column ${col} must be qualified with its table's alias in a join`);
      if (owners!.length === 0) fail(`column ${col} is not a column of any table the definition reads`);
      if (owners!.length > 1) fail(`column ${col} is ambiguous: ${owners!.join(', ')} all have it`);
      alias = owners![0]!;
      n.table = alias;
    }
    this.read.get(alias)!.add(col.toLowerCase());
  }

  visit(e: unknown): void {
    visitExpr(e, (n) => this.resolve(n), false);
  }

  sql(e: unknown): string {
    return this.emit(e);
  }

  canon(e: unknown): string {
    return this.emit(e);
  }

  isTableColumn?: (name: string) => boolean = (name) => (this.owners(name)?.length ?? 0) > 0;
}

/** `*` and `alias.*` select items, expanded to the columns of the tables (needs the catalog). */
function expandStars(items: SelectItem[], entries: FromEntry[], catalog: ColumnCatalog | undefined): SelectItem[] {
  const out: SelectItem[] = [];
  for (const it of items) {
    const e = it.expr;
    if (e.type !== 'column_ref' || columnName(e) !== '*') {
      out.push(it);
      continue;
    }
    const qualifier = refTable(e);
    const which = qualifier ? entries.filter((x) => x.alias === qualifier) : entries;
    if (qualifier && which.length === 0) fail(`${qualifier}.* does not name a table of the definition`);
    for (const w of which) {
      const cols = catalog?.(w.table.schema, w.table.name);
      if (!cols) fail(`\`${qualifier ? `${qualifier}.` : ''}*\` needs the columns of ${w.table.schema}.${w.table.name}: list them`);
      for (const c of cols!) out.push({ expr: { type: 'column_ref', table: w.alias, column: c }, as: null });
    }
  }
  return out;
}

/** A definition over an inner join (the statement-level checks have passed). */
export function analyzeJoin({ ast, sql }: Parsed, defaultSchema: string, catalog?: ColumnCatalog): JoinPlan {
  const entries = flattenFrom(ast.from, defaultSchema);
  if (entries.length < 2) fail('the definition reads no table');
  const scope = new JoinScope(entries, sql, catalog);
  if (!catalog) scope.isTableColumn = undefined;

  const conditions = [...entries.flatMap((e) => (e.on ? [e.on] : [])), ...(ast.where ? [ast.where as Node] : [])];
  for (const c of conditions) scope.visit(c);
  const where = conditions.length ? conditions.map((c) => `(${sql(c)})`).join(' AND ') : undefined;

  const items = expandStars(selectItems(ast), entries, catalog);
  // Qualify every select item first: GROUP BY entries are matched with them by their SQL.
  for (const it of items) {
    if (!isAggregate(it.expr)) scope.visit(it.expr);
    else {
      const arg = ((it.expr.args ?? {}) as Node).expr as Node | undefined;
      if (arg && arg.type !== 'star') scope.visit(arg);
    }
  }
  const groupCols = groupByNodes(ast);
  const hasAgg = items.some((it) => isAggregate(it.expr));
  const occurrences = () => entries.map((e) => ({ alias: e.alias, table: e.table, columnsRead: [...scope.read.get(e.alias)!] }));

  if (!hasAgg && groupCols.length === 0) {
    const out = items.map((it, index) => {
      const e = it.expr;
      const column = e.type === 'column_ref' ? { alias: refTable(e)!, name: columnName(e) } : undefined;
      return { index, expr: sql(e), ...(column ? { column } : {}) };
    });
    return { shape: 'join', kind: 'spj', occurrences: occurrences(), ...(where ? { where } : {}), items: out };
  }
  const { groups, aggregates } = analyzeGrouped(items, groupCols, scope);
  return { shape: 'join', kind: 'aggregate', occurrences: occurrences(), ...(where ? { where } : {}), groups, aggregates };
}
