import { describe, expect, it } from 'vitest';
import { analyzeFast, definitionTables, type JoinPlan } from '../../src/fast/analyze.js';

// The FAST analysis of join definitions (DESIGN.md §2 "FAST refresh over joins"): every accepted
// form and every refusal, with the reason people see.

const TABLES: Record<string, string[]> = {
  orders: ['id', 'cust', 'prod', 'amt', 'status'],
  customers: ['id', 'region', 'name'],
  products: ['id', 'cat', 'price'],
  emp: ['id', 'boss', 'dept', 'salary'],
};
const catalog = (_schema: string, table: string) => TABLES[table];

function join(select: string): JoinPlan {
  const a = analyzeFast(select, 'app', catalog);
  if (!a.ok) throw new Error(`refused: ${a.reason}`);
  if (a.plan.shape !== 'join') throw new Error('not a join plan');
  return a.plan;
}

function refused(select: string, withCatalog = true): string {
  const a = analyzeFast(select, 'app', withCatalog ? catalog : undefined);
  if (a.ok) throw new Error(`accepted: ${select}`);
  return a.reason;
}

describe('join definitions that FAST refresh accepts', () => {
  it('JOIN ... ON, aggregate grouped by a dimension attribute; columns qualified by alias', () => {
    const p = join('SELECT c.region, COUNT(*) AS n, SUM(o.amt) AS total, AVG(o.amt) AS a FROM orders o JOIN customers c ON o.cust = c.id GROUP BY c.region');
    expect(p).toMatchObject({
      kind: 'aggregate',
      occurrences: [
        { alias: 'o', table: { schema: 'app', name: 'orders' } },
        { alias: 'c', table: { schema: 'app', name: 'customers' } },
      ],
      where: '(`o`.`cust` = `c`.`id`)',
      groups: [{ index: 0, expr: '`c`.`region`' }],
      aggregates: [
        { index: 1, fn: 'COUNT_STAR' },
        { index: 2, fn: 'SUM', arg: '`o`.`amt`' },
        { index: 3, fn: 'AVG', arg: '`o`.`amt`' },
      ],
    });
    expect(p.occurrences[0]!.columnsRead.sort()).toEqual(['amt', 'cust']);
    expect(p.occurrences[1]!.columnsRead.sort()).toEqual(['id', 'region']);
  });

  it('INNER JOIN and CROSS JOIN, three tables, MIN / MAX, GROUP BY two keys from different tables', () => {
    const p = join(
      'SELECT c.region, p.cat, MIN(o.amt) AS lo, MAX(p.price) AS hi, COUNT(o.amt) AS n FROM orders o INNER JOIN customers c ON o.cust = c.id ' +
        'CROSS JOIN products p WHERE o.prod = p.id GROUP BY c.region, p.cat',
    );
    expect(p.occurrences.map((o) => o.alias)).toEqual(['o', 'c', 'p']);
    expect(p.where).toBe('(`o`.`cust` = `c`.`id`) AND (`o`.`prod` = `p`.`id`)');
    expect(p.kind === 'aggregate' && p.aggregates.map((a) => a.fn)).toEqual(['MIN', 'MAX', 'COUNT']);
  });

  it('comma joins with the conditions in WHERE, unqualified columns resolved through the tables\' columns', () => {
    const p = join('SELECT region, COUNT(*) AS n, SUM(amt) AS total FROM orders, customers c WHERE cust = c.id AND status <> 0 GROUP BY region');
    expect(p.occurrences.map((o) => o.alias)).toEqual(['orders', 'c']);
    expect(p.where).toBe('(`orders`.`cust` = `c`.`id` AND `orders`.`status` <> 0)');
    expect(p.kind === 'aggregate' && p.groups).toEqual([{ index: 0, expr: '`c`.`region`' }]);
  });

  it('select-project-join of three tables: items name the column and alias they read', () => {
    const p = join(
      'SELECT o.id, c.id AS cid, p.id AS pid, o.amt * p.price AS value, c.name FROM orders o JOIN customers c ON o.cust = c.id JOIN products p ON p.id = o.prod WHERE p.cat = 3',
    );
    expect(p.kind).toBe('spj');
    if (p.kind !== 'spj') return;
    expect(p.items.map((i) => i.column ?? null)).toEqual([
      { alias: 'o', name: 'id' },
      { alias: 'c', name: 'id' },
      { alias: 'p', name: 'id' },
      null,
      { alias: 'c', name: 'name' },
    ]);
    expect(p.items[3]!.expr).toBe('`o`.`amt` * `p`.`price`');
  });

  it('self-joins: one table under two aliases, any deterministic condition (non-equi too)', () => {
    const p = join('SELECT e.id, b.id AS boss_id, e.salary - b.salary AS gap FROM emp e JOIN emp b ON e.boss = b.id AND e.salary BETWEEN b.salary - 10 AND b.salary');
    expect(p.occurrences.map((o) => [o.alias, o.table.name])).toEqual([
      ['e', 'emp'],
      ['b', 'emp'],
    ]);
    expect(p.where).toContain('BETWEEN');
    const agg = join('SELECT a.dept, COUNT(*) AS pairs FROM emp a, emp b WHERE a.dept = b.dept AND a.id < b.id GROUP BY a.dept');
    expect(agg.kind).toBe('aggregate');
  });

  it('parenthesised joins, quoted names, alias.* and GROUP BY by position or output alias', () => {
    expect(join('SELECT o.id, c.id AS cid FROM (orders o JOIN customers c ON o.cust = c.id) JOIN products p ON p.id = o.prod').occurrences).toHaveLength(3);
    expect(join('SELECT `c`.`region` AS r, COUNT(*) AS n FROM `orders` AS `o` JOIN customers c ON `o`.cust = c.id GROUP BY 1')).toMatchObject({
      groups: [{ index: 0, expr: '`c`.`region`' }],
    });
    expect(join('SELECT c.region AS r, COUNT(*) AS n FROM orders o JOIN customers c ON o.cust = c.id GROUP BY r')).toMatchObject({
      groups: [{ index: 0, expr: '`c`.`region`' }],
    });
    const star = join('SELECT o.*, c.region FROM orders o JOIN customers c ON o.cust = c.id');
    expect(star.kind === 'spj' && star.items.map((i) => i.expr)).toEqual(['`o`.`id`', '`o`.`cust`', '`o`.`prod`', '`o`.`amt`', '`o`.`status`', '`c`.`region`']);
    expect(star.occurrences[0]!.columnsRead.sort()).toEqual(['amt', 'cust', 'id', 'prod', 'status']);
  });

  it('a scalar aggregate over a join, and schema-qualified tables', () => {
    const p = join('SELECT COUNT(*) AS n, SUM(o.amt) AS s FROM shop.orders o JOIN app.customers c ON o.cust = c.id');
    expect(p.occurrences.map((o) => o.table)).toEqual([
      { schema: 'shop', name: 'orders' },
      { schema: 'app', name: 'customers' },
    ]);
    expect(p.kind === 'aggregate' && p.groups).toEqual([]);
    expect(definitionTables('SELECT 1 FROM shop.orders o JOIN customers c ON o.cust = c.id JOIN shop.orders o2 ON o2.id = o.id', 'app')).toEqual([
      { schema: 'shop', name: 'orders' },
      { schema: 'app', name: 'customers' },
    ]);
  });

  it('a one-table definition keeps its own plan', () => {
    const a = analyzeFast('SELECT cust, COUNT(*) AS n FROM orders GROUP BY cust', 'app', catalog);
    expect(a).toMatchObject({ ok: true, plan: { shape: 'table', kind: 'aggregate', alias: 'orders' } });
  });
});

describe('join definitions that FAST refresh refuses, with the reason', () => {
  const J = 'FROM orders o JOIN customers c ON o.cust = c.id';
  const cases: Array<[string, RegExp]> = [
    ['SELECT o.id, c.id AS cid FROM orders o LEFT JOIN customers c ON o.cust = c.id', /LEFT JOIN is not supported: FAST refresh covers inner joins/],
    ['SELECT o.id, c.id AS cid FROM orders o RIGHT JOIN customers c ON o.cust = c.id', /RIGHT JOIN is not supported/],
    ['SELECT o.id, c.id AS cid FROM orders o LEFT OUTER JOIN customers c ON o.cust = c.id', /LEFT (OUTER )?JOIN is not supported/],
    ['SELECT o.id FROM orders o JOIN customers c USING (id)', /USING is not supported: write the condition with ON/],
    ['SELECT o.id FROM orders o NATURAL JOIN customers c', /NATURAL JOIN is not supported: write the join condition with ON/],
    [`SELECT DISTINCT c.region ${J}`, /DISTINCT is not supported/],
    [`SELECT c.region, COUNT(*) AS n ${J} GROUP BY c.region HAVING COUNT(*) > 2`, /HAVING is not supported/],
    [`SELECT o.id, c.id AS cid ${J} WHERE o.amt > (SELECT AVG(amt) FROM orders)`, /subqueries are not supported/],
    [`SELECT o.id, c.id AS cid ${J} WHERE c.id IN (SELECT cust FROM orders)`, /subqueries are not supported/],
    ['SELECT o.id, x.id AS xid FROM orders o JOIN (SELECT id FROM customers) x ON o.cust = x.id', /derived tables and subqueries in FROM are not supported/],
    [`SELECT o.id, c.id AS cid ${J} UNION SELECT o.id, c.id ${J}`, /UNION/],
    [`SELECT o.id, c.id AS cid ${J} LIMIT 10`, /LIMIT is not supported/],
    [`SELECT o.id, c.id AS cid ${J} ORDER BY o.id`, /ORDER BY is not supported/],
    [`SELECT o.id, c.id AS cid, ROW_NUMBER() OVER (ORDER BY o.id) AS rn ${J}`, /window functions are not supported/],
    [`SELECT o.id, c.id AS cid ${J} WHERE o.amt > RAND()`, /RAND\(\) is not deterministic/],
    [`SELECT o.id, c.id AS cid, NOW() AS t ${J}`, /NOW\(\) is not deterministic/],
    [`SELECT o.id, c.id AS cid ${J} WHERE o.amt > @limit`, /variables make the definition non-deterministic/],
    [`SELECT c.region, COUNT(DISTINCT o.amt) AS n ${J} GROUP BY c.region`, /COUNT\(DISTINCT \.\.\.\) is not supported/],
    [`SELECT c.region, GROUP_CONCAT(o.amt) AS s ${J} GROUP BY c.region`, /GROUP_CONCAT is not supported/],
    [`SELECT c.region, o.amt, COUNT(*) AS n ${J} GROUP BY c.region`, /neither an aggregate nor a GROUP BY expression/],
    [`SELECT id ${J}`, /column id is ambiguous: o, c all have it/],
    [`SELECT o.id, nope ${J}`, /column nope is not a column of any table/],
    [`SELECT o.id, orders.amt ${J}`, /column orders\.amt does not belong to any table of the definition/],
    [`SELECT o.id, app.o.amt ${J}`, /schema-qualified column/],
    ['SELECT o.id FROM orders o JOIN customers o ON o.cust = o.id', /alias o is used for two tables/],
    [`SELECT o.id, c.id AS cid, SUM(o.amt) + 1 AS s ${J}`, /aggregate SUM is only supported as a whole select item/],
  ];
  for (const [select, reason] of cases) {
    it(reason.source, () => expect(refused(select)).toMatch(reason));
  }

  it('without the tables\' columns, an unqualified column in a join must be qualified', () => {
    expect(refused(`SELECT region, COUNT(*) AS n ${J} GROUP BY region`, false)).toMatch(/column region must be qualified with its table's alias in a join/);
    expect(refused(`SELECT o.*, c.region ${J}`, false)).toMatch(/`o\.\*` needs the columns of app\.orders: list them/);
  });
});
