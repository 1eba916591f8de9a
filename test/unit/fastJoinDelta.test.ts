import { describe, expect, it } from 'vitest';
import { analyzeFast, type JoinPlan } from '../../src/fast/analyze.js';
import type { JoinSetup } from '../../src/fast/explain.js';
import {
  deltaTerms,
  deltaUnion,
  deltaUnionParts,
  keyAbsent,
  keptRows,
  netChanges,
  orderOccurrences,
  preState,
  subtermSql,
  type DeltaInput,
  type DeltaOccurrence,
} from '../../src/fast/joinDelta.js';
import { deltaInput, joinAggregateDelta, joinSpjDelta } from '../../src/fast/joinRefresh.js';
import type { MlogRow } from '../../src/mlog/repository.js';

// The delta rule of a join as SQL (src/fast/joinDelta.ts): which terms and sub-terms exist, and
// what each source reads. The oracle test (test/integration/fastJoinOracle.test.ts) checks the
// results against MariaDB; these pin the rule's shape.

const occ = (alias: string, table: string, logId: number, exposed = ['id', 'k', 'v']): DeltaOccurrence => ({
  alias,
  base: { schema: 's', name: table },
  log: { schema: 's', name: `mlog$${table}` },
  logId,
  pk: ['id'],
  exposed,
});

const F = occ('f', 'fact', 1);
const D1 = occ('d1', 'dim1', 2);
const D2 = occ('d2', 'dim2', 3);

function input(occurrences: DeltaOccurrence[], changed: number[], maxSubterms?: number): DeltaInput {
  const ranges = new Map([1, 2, 3].map((id) => [id, { from: 10 * id, to: 10 * id + 5 }]));
  return { occurrences, where: '(`f`.`k` = `d1`.`id`)', ranges, changed: new Set(changed), ...(maxSubterms ? { maxSubterms } : {}) };
}

describe('the terms of the delta rule', () => {
  it('one term per occurrence whose log changed: post-change before it, pre-change (kept | old) after it', () => {
    const terms = deltaTerms(input([F, D1, D2], [1, 2, 3]));
    expect(terms.map((t) => t.index)).toEqual([0, 1, 2]);
    expect(terms[0]!.subterms).toEqual([
      ['delta', 'kept', 'kept'],
      ['delta', 'kept', 'old'],
      ['delta', 'old', 'kept'],
      ['delta', 'old', 'old'],
    ]);
    expect(terms[1]!.subterms).toEqual([
      ['post', 'delta', 'kept'],
      ['post', 'delta', 'old'],
    ]);
    expect(terms[2]!.subterms).toEqual([['post', 'post', 'delta']]);
  });

  it('an occurrence whose log has no rows in the range has no term and is the same before and after', () => {
    const terms = deltaTerms(input([F, D1, D2], [2]));
    expect(terms).toEqual([{ index: 1, subterms: [['post', 'delta', 'post']] }]);
    expect(deltaTerms(input([F, D1, D2], []))).toEqual([]);
  });

  it('a self-join reads one log under two aliases: a term per alias', () => {
    const a = occ('a', 'emp', 7);
    const b = occ('b', 'emp', 7);
    const i = { ...input([a, b], []), ranges: new Map([[7, { from: 3, to: 9 }]]), changed: new Set([7]) };
    expect(deltaTerms(i)).toEqual([
      { index: 0, subterms: [['delta', 'kept'], ['delta', 'old']] },
      { index: 1, subterms: [['post', 'delta']] },
    ]);
  });

  it('past maxSubterms, the remaining pre-change states are one derived union each', () => {
    const terms = deltaTerms(input([F, D1, D2], [1, 2, 3], 2));
    expect(terms[0]!.subterms).toEqual([
      ['delta', 'kept', 'pre'],
      ['delta', 'old', 'pre'],
    ]);
    expect(deltaTerms(input([F, D1, D2], [1, 2, 3], 1))[0]!.subterms).toEqual([['delta', 'pre', 'pre']]);
  });
});

describe('the sources of a sub-term', () => {
  const i = input([F, D1, D2], [1, 2, 3]);

  it('the delta of a table: first image per key when old (-1), last when new (+1), from one read of its log range', () => {
    const log = (table: string) => `\`s\`.\`mlog$${table}\``;
    const w = 'OVER (PARTITION BY l.`id` ORDER BY l.`_mlog$seq`)';
    const numbered = (ends: string, table: string, lo: number, hi: number) =>
      `SELECT l.\`id\`, l.\`k\`, l.\`v\`, l.\`old_new\`, ${ends} FROM ${log(table)} AS l WHERE l.\`_mlog$seq\` > ${lo} AND l.\`_mlog$seq\` <= ${hi}`;
    // Each log row sees its key's rows before and after it: the first row of a key counts when it
    // is an old image (-1), the last when it is a new one (+1); the sign column is the weight.
    expect(netChanges(i, F)).toBe(
      `SELECT x.\`id\`, x.\`k\`, x.\`v\`, x.\`old_new\` AS \`_mlog$w\` FROM (${numbered(`LAG(l.\`_mlog$seq\`) ${w} AS \`_mlog$before\`, LEAD(l.\`_mlog$seq\`) ${w} AS \`_mlog$after\``, 'fact', 10, 15)}) AS x ` +
        'WHERE (x.`_mlog$before` IS NULL AND x.`old_new` = -1) OR (x.`_mlog$after` IS NULL AND x.`old_new` = 1)',
    );
    expect(netChanges(i, D1, true)).toBe(
      `SELECT x.\`id\`, x.\`k\`, x.\`v\` FROM (${numbered(`LAG(l.\`_mlog$seq\`) ${w} AS \`_mlog$before\``, 'dim1', 20, 25)}) AS x WHERE x.\`_mlog$before\` IS NULL AND x.\`old_new\` = -1`,
    );
    const composite = { ...F, pk: ['a', 'b'] };
    expect(netChanges(i, composite)).toContain('PARTITION BY l.`a`, l.`b` ORDER BY');
  });

  it('the pre-change state: the table without the keys its log changed (an anti-join), plus their first old images', () => {
    const keys = 'SELECT DISTINCT `id` FROM `s`.`mlog$dim2` WHERE `_mlog$seq` > 30 AND `_mlog$seq` <= 35';
    expect(keptRows(i, D2, 'd2', 'k')).toBe(`\`s\`.\`dim2\` AS \`d2\` LEFT JOIN (${keys}) AS \`k\` ON \`k\`.\`id\` = \`d2\`.\`id\``);
    expect(keyAbsent(D2, 'k')).toBe('`k`.`id` IS NULL');
    const composite = { ...D2, pk: ['a', 'b'] };
    expect(keptRows(i, composite, 'd2', 'k')).toMatch(/ON `k`\.`a` = `d2`\.`a` AND `k`\.`b` = `d2`\.`b`$/);
    expect(preState(i, D2)).toBe(
      `SELECT x.\`id\`, x.\`k\`, x.\`v\` FROM \`s\`.\`dim2\` AS \`x\` LEFT JOIN (${keys}) AS \`__mvs_k\` ON \`__mvs_k\`.\`id\` = \`x\`.\`id\` ` +
        `WHERE \`__mvs_k\`.\`id\` IS NULL UNION ALL ${netChanges(i, D2, true)}`,
    );
  });

  it('a sub-term joins its sources under the definition\'s conditions, and carries the delta row\'s sign', () => {
    const sql = subtermSql(i, ['post', 'delta', 'kept'], ['`d1`.`v` AS g0']);
    expect(sql).toBe(
      'SELECT `d1`.`v` AS g0, `d1`.`_mlog$w` AS `_mlog$w` FROM `s`.`fact` AS `f`, ' +
        `(${netChanges(i, D1)}) AS \`d1\`, (${keptRows(i, D2, 'd2', '__mvs_k2')}) ` +
        `WHERE ((\`f\`.\`k\` = \`d1\`.\`id\`)) AND \`__mvs_k2\`.\`id\` IS NULL`,
    );
    expect(subtermSql(i, ['delta', 'old', 'pre'], ['1'])).toContain(`(${netChanges(i, D1, true)}) AS \`d1\`, (${preState(i, D2)}) AS \`d2\``);
    expect(() => subtermSql(i, ['post', 'post', 'post'], ['1'])).toThrow(/exactly one delta/);
  });

  it('watermarks are validated integers', () => {
    const bad = { ...i, ranges: new Map([[1, { from: 1.5, to: 3 }]]) };
    expect(() => netChanges(bad, F)).toThrow(/not a log sequence number/);
  });

  it('bigger tables come first (their terms read the small ones in their pre-change state); ties keep FROM order', () => {
    expect(orderOccurrences([D2, F, D1], { f: 1_000_000, d1: 10_000, d2: 100 }).map((o) => o.alias)).toEqual(['f', 'd1', 'd2']);
    expect(orderOccurrences([D2, D1], {}).map((o) => o.alias)).toEqual(['d2', 'd1']);
  });
});

describe('the delta queries of a join MV', () => {
  const mlog = (id: number, table: string, cols: string[]): MlogRow =>
    ({ mlog_id: id, table_schema: 's', base_table_name: table, mlog_name: `mlog$${table}`, columns: cols, pkColumns: ['id'] }) as MlogRow;
  const setupOf = (select: string, outputColumns: string[]): JoinSetup => {
    const a = analyzeFast(select, 's');
    if (!a.ok || a.plan.shape !== 'join') throw new Error(a.ok ? 'not a join' : a.reason);
    const plan: JoinPlan = a.plan;
    const logs: Record<string, MlogRow> = { fact: mlog(1, 'fact', ['k', 'v']), dim1: mlog(2, 'dim1', ['region']) };
    const occurrences = plan.occurrences.map((o) => ({ ...o, mlog: logs[o.table.name]!, exposed: ['id', ...o.columnsRead.filter((c) => c !== 'id')] }));
    return { shape: 'join', plan, occurrences, mlogs: Object.values(logs), outputColumns, sizes: { f: 1000, d: 10 }, pkOutput: [] };
  };
  const ranges = new Map([
    [1, { from: 0, to: 9 }],
    [2, { from: 4, to: 8 }],
  ]);

  it('aggregates: the terms\' rows summed per group with their signs', () => {
    const setup = setupOf('SELECT d.region, COUNT(*) AS n, SUM(f.v) AS s, MAX(f.v) AS m FROM fact f JOIN dim1 d ON f.k = d.id GROUP BY d.region', ['region', 'n', 's', 'm']);
    const q = joinAggregateDelta(setup, deltaInput(setup, ranges, new Set([1, 2])));
    expect(q.columns).toEqual(['g0', 'd_cnt', 'd1_cnt', 'd1_plus', 'd1_minus', 'd2_cnt', 'd2_ins', 'd2_del']);
    expect(q.sql).toMatch(/^SELECT z\.g0, SUM\(z\.`_mlog\$w`\) AS d_cnt, .* FROM \(SELECT `d`\.`region` AS g0, `f`\.`v` AS a1, `f`\.`v` AS a2, `f`\.`_mlog\$w` AS `_mlog\$w` FROM /);
    expect(q.sql.split('SELECT `d`.`region` AS g0').length - 1).toBe(3); // sub-terms: fact (dim1 kept, dim1 old); dim1 (fact post)
    expect(q.sql).toMatch(/ GROUP BY z\.g0$/);
  });

  it('select-project-join: rows tagged with their term, applied in term order', () => {
    const setup = setupOf('SELECT f.id, d.id AS did, f.v, d.region FROM fact f JOIN dim1 d ON f.k = d.id', ['id', 'did', 'v', 'region']);
    const q = joinSpjDelta(setup, deltaInput(setup, ranges, new Set([2])));
    expect(q.columns).toEqual(['__mvs_term', 'c0', 'c1', 'c2', 'c3', '__mvs_w']);
    expect(q.sql).toMatch(/^SELECT 1 AS `__mvs_term`, `f`\.`id` AS c0, `d`\.`id` AS c1, `f`\.`v` AS c2, `d`\.`region` AS c3, `d`\.`_mlog\$w` AS `_mlog\$w` FROM `s`\.`fact` AS `f`, \(/);
    expect(() => deltaUnion(deltaInput(setup, ranges, new Set()), () => ['1'])).toThrow(/nothing to join/);
  });
});

describe('the delta in parts, for several snapshots of one cut', () => {
  const sel = (t: { index: number }) => [`${t.index} AS term`];
  const subtermsOf = (sqls: string[]) => sqls.flatMap((q) => q.split(' UNION ALL ')).sort();

  it('deals whole terms out when there are enough, and together the parts are the union', () => {
    const inp = input([F, D1, D2], [1, 2, 3]);
    const parts = deltaUnionParts(inp, sel, 2);
    expect(parts).toHaveLength(2);
    expect(subtermsOf(parts)).toEqual(subtermsOf([deltaUnion(inp, sel)]));
    // Terms 0 and 2 in the first part, term 1 in the second: no term is split.
    expect(parts[0]!.match(/^SELECT (\d) AS term/)![1]).toBe('0');
    expect(parts[1]!.split(' UNION ALL ').every((q) => q.startsWith('SELECT 1 AS term'))).toBe(true);
  });

  it('splits one term into its sub-terms when there are fewer terms than parts', () => {
    const inp = input([F, D1, D2], [1, 2]);
    const terms = deltaTerms(inp);
    expect(terms.map((t) => t.subterms.length)).toEqual([2, 1]);
    const parts = deltaUnionParts(inp, sel, 3);
    expect(parts).toHaveLength(3);
    expect(subtermsOf(parts)).toEqual(subtermsOf([deltaUnion(inp, sel)]));
    // Never more parts than sub-terms.
    expect(deltaUnionParts(input([F, D1, D2], [1]), sel, 4)).toHaveLength(1);
  });
});
