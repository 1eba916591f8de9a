import { columnName, fail, isAggregate, type Node, type SelectItem } from './sqlAst.js';

// The select list and GROUP BY of a definition, whatever it reads from (one table or a join):
// which items are group expressions and which are aggregates, or, without aggregates, the
// select-project items. The FROM-specific part (which columns exist, how a reference is
// written) comes in through a ColumnScope.

export type AggFn = 'COUNT_STAR' | 'COUNT' | 'SUM' | 'AVG' | 'MIN' | 'MAX';

export interface OutputItem {
  /** Position in the select list (and in the MV's columns). */
  index: number;
  /** SQL of the expression, evaluated against a row of the base table(s) (or of their logs). */
  expr: string;
}

export interface AggregateItem extends OutputItem {
  fn: AggFn;
  /** SQL of the argument (absent for COUNT(*)). */
  arg?: string;
}

export interface ColumnScope {
  /** Check every column reference of an expression (and note it as read). */
  visit(expr: unknown): void;
  sql(expr: unknown): string;
  /** Comparable form of an expression, to match GROUP BY entries with select items. */
  canon(expr: unknown): string;
  /**
   * GROUP BY resolves a bare name to a table column before an output alias (MySQL). When the
   * scope knows the tables' columns it answers; otherwise an alias naming a plain column of the
   * same name is taken for that column.
   */
  isTableColumn?(name: string): boolean;
}

export interface GroupedList {
  groups: OutputItem[];
  aggregates: AggregateItem[];
}

/** Resolve GROUP BY entries (expressions, select-list positions, or output aliases) to canonical SQL. */
function groupKeys(items: SelectItem[], groupCols: Node[], scope: ColumnScope): string[] {
  const itemCanon = items.map((it) => (isAggregate(it.expr) ? undefined : scope.canon(it.expr)));
  return groupCols.map((g) => {
    if (g.type === 'number') {
      const pos = Number(g.value);
      const it = items[pos - 1];
      if (!it) fail(`GROUP BY ${pos} is out of range`);
      if (isAggregate(it!.expr)) fail(`GROUP BY ${pos} refers to an aggregate`);
      return itemCanon[pos - 1]!;
    }
    if (g.type === 'column_ref' && !g.table) {
      const name = columnName(g).toLowerCase();
      const byAlias = items.findIndex((it) => it.as !== null && it.as.toLowerCase() === name);
      if (byAlias >= 0 && !isAggregate(items[byAlias]!.expr)) {
        const aliasedExpr = items[byAlias]!.expr;
        const sameColumn = aliasedExpr.type === 'column_ref' && columnName(aliasedExpr).toLowerCase() === name;
        const tableFirst = scope.isTableColumn ? scope.isTableColumn(name) : sameColumn;
        if (!tableFirst) return itemCanon[byAlias]!;
      }
    }
    scope.visit(g);
    return scope.canon(g);
  });
}

function aggregateItem(e: Node, index: number, scope: ColumnScope): AggregateItem {
  const name = String(e.name).toUpperCase();
  const args = (e.args ?? {}) as Node;
  if (e.over) fail('window functions are not supported');
  if (!['COUNT', 'SUM', 'AVG', 'MIN', 'MAX'].includes(name)) fail(`aggregate ${name} is not supported (COUNT, SUM, AVG, MIN, MAX are)`);
  if (args.distinct && (name === 'COUNT' || name === 'SUM' || name === 'AVG')) fail(`${name}(DISTINCT ...) is not supported`);
  if (args.orderby || args.separator) fail(`${name} with ORDER BY / SEPARATOR is not supported`);
  const argExpr = args.expr as Node | undefined;
  if (!argExpr) fail(`${name} without an argument`);
  if (name === 'COUNT' && argExpr!.type === 'star') return { index, expr: scope.sql(e), fn: 'COUNT_STAR' };
  if (argExpr!.type === 'star') fail(`${name}(*) is not valid`);
  scope.visit(argExpr);
  return { index, expr: scope.sql(e), fn: name as AggFn, arg: scope.sql(argExpr) };
}

/** Group expressions and aggregates of an aggregate definition. */
export function analyzeGrouped(items: SelectItem[], groupCols: Node[], scope: ColumnScope): GroupedList {
  const groupSql = groupKeys(items, groupCols, scope);
  const groups: Array<OutputItem & { key: string }> = [];
  const aggregates: AggregateItem[] = [];
  items.forEach((it, index) => {
    const e = it.expr;
    if (isAggregate(e)) {
      aggregates.push(aggregateItem(e, index, scope));
      return;
    }
    scope.visit(e);
    const key = scope.canon(e);
    if (!groupSql.includes(key)) fail(`select item ${scope.sql(e)} is neither an aggregate nor a GROUP BY expression`);
    groups.push({ index, expr: scope.sql(e), key });
  });
  for (const g of groupSql) {
    if (!groups.some((x) => x.key === g)) fail(`GROUP BY expression ${g} must also be in the select list`);
  }
  // A group expression listed twice in the select list is one group column.
  const seen = new Set<string>();
  const uniqueGroups = groups
    .filter((g) => (seen.has(g.key) ? false : (seen.add(g.key), true)))
    .map(({ index, expr }) => ({ index, expr }));
  return { groups: uniqueGroups, aggregates };
}
