import { describe, expect, it } from 'vitest';
import type { Statement } from '../../src/ddl/ast.js';
import { DdlSyntaxError, parseStatement, splitStatements, splitStatementsWithLocation } from '../../src/ddl/parser.js';
import { ValidationError } from '../../src/errors.js';

function parseError(sql: string): DdlSyntaxError {
  try {
    parseStatement(sql);
  } catch (err) {
    if (err instanceof DdlSyntaxError) return err;
    throw err;
  }
  throw new Error(`expected a syntax error for: ${sql}`);
}

describe('parseStatement: MV logs', () => {
  const cases: Array<[string, Statement]> = [
    [
      'CREATE MATERIALIZED VIEW LOG ON t (a, b)',
      { kind: 'createMlog', table: { name: 't' }, columns: ['a', 'b'], text: 'CREATE MATERIALIZED VIEW LOG ON t (a, b)' },
    ],
    [
      'create materialized view log on shop.orders (id,amount) purge immediate;',
      {
        kind: 'createMlog',
        table: { schema: 'shop', name: 'orders' },
        columns: ['id', 'amount'],
        purge: { immediate: true },
        text: 'create materialized view log on shop.orders (id,amount) purge immediate',
      },
    ],
    [
      'CREATE MATERIALIZED VIEW LOG ON s.t (c1) PURGE START WITH NOW() + INTERVAL 1 DAY NEXT 3600',
      {
        kind: 'createMlog',
        table: { schema: 's', name: 't' },
        columns: ['c1'],
        purge: { immediate: false, startWith: 'NOW() + INTERVAL 1 DAY', next: '3600' },
        text: 'CREATE MATERIALIZED VIEW LOG ON s.t (c1) PURGE START WITH NOW() + INTERVAL 1 DAY NEXT 3600',
      },
    ],
    [
      'CREATE MATERIALIZED VIEW LOG ON t (`select`, `a b`, `x``y`) PURGE NEXT 60',
      {
        kind: 'createMlog',
        table: { name: 't' },
        columns: ['select', 'a b', 'x`y'],
        purge: { immediate: false, next: '60' },
        text: 'CREATE MATERIALIZED VIEW LOG ON t (`select`, `a b`, `x``y`) PURGE NEXT 60',
      },
    ],
    [
      'CREATE MATERIALIZED VIEW LOG ON s.t (a) USING BINLOG',
      { kind: 'createMlog', table: { schema: 's', name: 't' }, columns: ['a'], capture: 'BINLOG', text: 'CREATE MATERIALIZED VIEW LOG ON s.t (a) USING BINLOG' },
    ],
    [
      'create materialized view log on t (a) using triggers;',
      { kind: 'createMlog', table: { name: 't' }, columns: ['a'], capture: 'TRIGGERS', text: 'create materialized view log on t (a) using triggers' },
    ],
    [
      'CREATE MATERIALIZED VIEW LOG ON t (a) PURGE START WITH NOW() NEXT 60 * 60 USING BINLOG',
      {
        kind: 'createMlog',
        table: { name: 't' },
        columns: ['a'],
        purge: { immediate: false, startWith: 'NOW()', next: '60 * 60' },
        capture: 'BINLOG',
        text: 'CREATE MATERIALIZED VIEW LOG ON t (a) PURGE START WITH NOW() NEXT 60 * 60 USING BINLOG',
      },
    ],
    [
      'CREATE MATERIALIZED VIEW LOG ON t (a) PURGE IMMEDIATE USING BINLOG',
      { kind: 'createMlog', table: { name: 't' }, columns: ['a'], purge: { immediate: true }, capture: 'BINLOG', text: 'CREATE MATERIALIZED VIEW LOG ON t (a) PURGE IMMEDIATE USING BINLOG' },
    ],
    [
      'ALTER MATERIALIZED VIEW LOG ON s.t PURGE IMMEDIATE',
      { kind: 'alterMlogPurge', table: { schema: 's', name: 't' }, purge: { immediate: true }, text: 'ALTER MATERIALIZED VIEW LOG ON s.t PURGE IMMEDIATE' },
    ],
    [
      "alter materialized view log on t purge start with '2026-01-01 00:00:00' next 300;",
      {
        kind: 'alterMlogPurge',
        table: { name: 't' },
        purge: { immediate: false, startWith: "'2026-01-01 00:00:00'", next: '300' },
        text: "alter materialized view log on t purge start with '2026-01-01 00:00:00' next 300",
      },
    ],
    [
      'ALTER MATERIALIZED VIEW LOG ON t PURGE NEXT 10 * 60',
      { kind: 'alterMlogPurge', table: { name: 't' }, purge: { immediate: false, next: '10 * 60' }, text: 'ALTER MATERIALIZED VIEW LOG ON t PURGE NEXT 10 * 60' },
    ],
    ['DROP MATERIALIZED VIEW LOG ON t', { kind: 'dropMlog', table: { name: 't' }, text: 'DROP MATERIALIZED VIEW LOG ON t' }],
    [
      'Drop Materialized View Log On `my.db`.`my table`;',
      { kind: 'dropMlog', table: { schema: 'my.db', name: 'my table' }, text: 'Drop Materialized View Log On `my.db`.`my table`' },
    ],
    ['PURGE MATERIALIZED VIEW LOG ON s.t', { kind: 'purgeMlog', table: { schema: 's', name: 't' }, text: 'PURGE MATERIALIZED VIEW LOG ON s.t' }],
  ];
  it.each(cases)('%s', (sql, expected) => {
    expect(parseStatement(sql)).toStrictEqual(expected);
  });
});

describe('parseStatement: materialized views', () => {
  const cases: Array<[string, Statement]> = [
    [
      'CREATE MATERIALIZED VIEW mv AS SELECT 1',
      { kind: 'createMview', name: { name: 'mv' }, schedule: {}, select: 'SELECT 1', text: 'CREATE MATERIALIZED VIEW mv AS SELECT 1' },
    ],
    [
      'CREATE MATERIALIZED VIEW s.mv REFRESH FAST NEXT 60 AS SELECT g, COUNT(*) FROM t GROUP BY g;',
      {
        kind: 'createMview',
        name: { schema: 's', name: 'mv' },
        method: 'FAST',
        schedule: { next: '60' },
        select: 'SELECT g, COUNT(*) FROM t GROUP BY g',
        text: 'CREATE MATERIALIZED VIEW s.mv REFRESH FAST NEXT 60 AS SELECT g, COUNT(*) FROM t GROUP BY g',
      },
    ],
    [
      'create materialized view mv refresh complete start with now() as with x as (select 1 a) select a from x',
      {
        kind: 'createMview',
        name: { name: 'mv' },
        method: 'COMPLETE',
        schedule: { startWith: 'now()' },
        select: 'with x as (select 1 a) select a from x',
        text: 'create materialized view mv refresh complete start with now() as with x as (select 1 a) select a from x',
      },
    ],
    [
      'CREATE MATERIALIZED VIEW mv REFRESH FORCE START WITH NOW() + INTERVAL 1 DAY NEXT 86400 AS (SELECT 1) UNION (SELECT 2)',
      {
        kind: 'createMview',
        name: { name: 'mv' },
        method: 'FORCE',
        schedule: { startWith: 'NOW() + INTERVAL 1 DAY', next: '86400' },
        select: '(SELECT 1) UNION (SELECT 2)',
        text: 'CREATE MATERIALIZED VIEW mv REFRESH FORCE START WITH NOW() + INTERVAL 1 DAY NEXT 86400 AS (SELECT 1) UNION (SELECT 2)',
      },
    ],
    [
      "CREATE MATERIALIZED VIEW `a.b`.`x``y z` AS SELECT ';' AS semi, 'NEXT' AS n FROM t -- trailing\n;  /* after */ # end",
      {
        kind: 'createMview',
        name: { schema: 'a.b', name: 'x`y z' },
        schedule: {},
        select: "SELECT ';' AS semi, 'NEXT' AS n FROM t",
        text: "CREATE MATERIALIZED VIEW `a.b`.`x``y z` AS SELECT ';' AS semi, 'NEXT' AS n FROM t",
      },
    ],
    [
      '-- leading comment\n/* block\n comment */ CREATE /* in */ MATERIALIZED # hash\n VIEW mv\n  NEXT 5\n  AS\n  SELECT * FROM t\n',
      {
        kind: 'createMview',
        name: { name: 'mv' },
        schedule: { next: '5' },
        select: 'SELECT * FROM t',
        text: 'CREATE /* in */ MATERIALIZED # hash\n VIEW mv\n  NEXT 5\n  AS\n  SELECT * FROM t',
      },
    ],
    [
      'ALTER MATERIALIZED VIEW mv REFRESH FAST',
      { kind: 'alterMviewRefresh', name: { name: 'mv' }, method: 'FAST', schedule: {}, text: 'ALTER MATERIALIZED VIEW mv REFRESH FAST' },
    ],
    [
      'alter materialized view s.mv refresh start with now() next 30;',
      {
        kind: 'alterMviewRefresh',
        name: { schema: 's', name: 'mv' },
        schedule: { startWith: 'now()', next: '30' },
        text: 'alter materialized view s.mv refresh start with now() next 30',
      },
    ],
    [
      'ALTER MATERIALIZED VIEW mv REFRESH COMPLETE NEXT 10',
      { kind: 'alterMviewRefresh', name: { name: 'mv' }, method: 'COMPLETE', schedule: { next: '10' }, text: 'ALTER MATERIALIZED VIEW mv REFRESH COMPLETE NEXT 10' },
    ],
    [
      "ALTER MATERIALIZED VIEW mv REFRESH START WITH '2026-01-01'",
      { kind: 'alterMviewRefresh', name: { name: 'mv' }, schedule: { startWith: "'2026-01-01'" }, text: "ALTER MATERIALIZED VIEW mv REFRESH START WITH '2026-01-01'" },
    ],
    ['ALTER MATERIALIZED VIEW s.mv SUSPEND', { kind: 'alterMviewSuspend', name: { schema: 's', name: 'mv' }, text: 'ALTER MATERIALIZED VIEW s.mv SUSPEND' }],
    ['alter materialized view mv resume;', { kind: 'alterMviewResume', name: { name: 'mv' }, text: 'alter materialized view mv resume' }],
    ['DROP MATERIALIZED VIEW mv', { kind: 'dropMview', name: { name: 'mv' }, text: 'DROP MATERIALIZED VIEW mv' }],
    ['DROP MATERIALIZED VIEW `log`', { kind: 'dropMview', name: { name: 'log' }, text: 'DROP MATERIALIZED VIEW `log`' }],
    ['REFRESH MATERIALIZED VIEW s.mv', { kind: 'refreshMview', name: { schema: 's', name: 'mv' }, text: 'REFRESH MATERIALIZED VIEW s.mv' }],
    ['refresh materialized view mv complete;', { kind: 'refreshMview', name: { name: 'mv' }, method: 'COMPLETE', text: 'refresh materialized view mv complete' }],
    ['REFRESH MATERIALIZED VIEW mv FAST', { kind: 'refreshMview', name: { name: 'mv' }, method: 'FAST', text: 'REFRESH MATERIALIZED VIEW mv FAST' }],
    // pipelines: target lag, ON DEMAND, CASCADE
    [
      'CREATE MATERIALIZED VIEW s.b REFRESH COMPLETE TARGET LAG 5 AS SELECT SUM(n) FROM s.a',
      {
        kind: 'createMview',
        name: { schema: 's', name: 'b' },
        method: 'COMPLETE',
        schedule: { targetLag: 5 },
        select: 'SELECT SUM(n) FROM s.a',
        text: 'CREATE MATERIALIZED VIEW s.b REFRESH COMPLETE TARGET LAG 5 AS SELECT SUM(n) FROM s.a',
      },
    ],
    [
      'create materialized view a target lag downstream as select g, count(*) n from raw group by g',
      {
        kind: 'createMview',
        name: { name: 'a' },
        schedule: { targetLag: 'DOWNSTREAM' },
        select: 'select g, count(*) n from raw group by g',
        text: 'create materialized view a target lag downstream as select g, count(*) n from raw group by g',
      },
    ],
    [
      'CREATE MATERIALIZED VIEW m ON DEMAND AS SELECT 1',
      { kind: 'createMview', name: { name: 'm' }, schedule: { onDemand: true }, select: 'SELECT 1', text: 'CREATE MATERIALIZED VIEW m ON DEMAND AS SELECT 1' },
    ],
    [
      'CREATE MATERIALIZED VIEW `target` TARGET LAG 86400 AS SELECT 1',
      { kind: 'createMview', name: { name: 'target' }, schedule: { targetLag: 86400 }, select: 'SELECT 1', text: 'CREATE MATERIALIZED VIEW `target` TARGET LAG 86400 AS SELECT 1' },
    ],
    [
      'ALTER MATERIALIZED VIEW mv REFRESH TARGET LAG 60',
      { kind: 'alterMviewRefresh', name: { name: 'mv' }, schedule: { targetLag: 60 }, text: 'ALTER MATERIALIZED VIEW mv REFRESH TARGET LAG 60' },
    ],
    [
      'ALTER MATERIALIZED VIEW mv REFRESH FAST TARGET LAG DOWNSTREAM',
      { kind: 'alterMviewRefresh', name: { name: 'mv' }, method: 'FAST', schedule: { targetLag: 'DOWNSTREAM' }, text: 'ALTER MATERIALIZED VIEW mv REFRESH FAST TARGET LAG DOWNSTREAM' },
    ],
    [
      'ALTER MATERIALIZED VIEW mv REFRESH ON DEMAND',
      { kind: 'alterMviewRefresh', name: { name: 'mv' }, schedule: { onDemand: true }, text: 'ALTER MATERIALIZED VIEW mv REFRESH ON DEMAND' },
    ],
    ['DROP MATERIALIZED VIEW s.mv CASCADE', { kind: 'dropMview', name: { schema: 's', name: 'mv' }, cascade: true, text: 'DROP MATERIALIZED VIEW s.mv CASCADE' }],
    ['DROP MATERIALIZED VIEW `cascade`', { kind: 'dropMview', name: { name: 'cascade' }, text: 'DROP MATERIALIZED VIEW `cascade`' }],
    ['refresh materialized view mv cascade', { kind: 'refreshMview', name: { name: 'mv' }, cascade: true, text: 'refresh materialized view mv cascade' }],
    [
      'REFRESH MATERIALIZED VIEW mv COMPLETE CASCADE;',
      { kind: 'refreshMview', name: { name: 'mv' }, method: 'COMPLETE', cascade: true, text: 'REFRESH MATERIALIZED VIEW mv COMPLETE CASCADE' },
    ],
  ];
  it.each(cases)('%s', (sql, expected) => {
    expect(parseStatement(sql)).toStrictEqual(expected);
  });

  it('accepts identifiers with $, digits and underscores, and exactly 64 characters', () => {
    const long = 'a'.repeat(64);
    expect(parseStatement(`DROP MATERIALIZED VIEW _s$1.${long}`)).toMatchObject({ name: { schema: '_s$1', name: long } });
    expect(parseStatement(`DROP MATERIALIZED VIEW \`${'é'.repeat(64)}\``)).toMatchObject({ name: { name: 'é'.repeat(64) } });
  });
});

describe('parseStatement: START WITH / NEXT expressions', () => {
  const schedule = (sql: string) => {
    const stmt = parseStatement(sql);
    if (stmt.kind !== 'createMview' && stmt.kind !== 'alterMviewRefresh') throw new Error(stmt.kind);
    return stmt.schedule;
  };

  it.each<[string, { startWith?: string; next?: string }]>([
    ["START WITH '2026-01-01 NEXT' NEXT 10", { startWith: "'2026-01-01 NEXT'", next: '10' }],
    ["START WITH 'it''s AS' NEXT 10", { startWith: "'it''s AS'", next: '10' }],
    ["START WITH 'it\\'s NEXT' NEXT 10", { startWith: "'it\\'s NEXT'", next: '10' }],
    ['START WITH "a \\" NEXT" NEXT 10', { startWith: '"a \\" NEXT"', next: '10' }],
    ['START WITH "a "" AS" NEXT 10', { startWith: '"a "" AS"', next: '10' }],
    ['START WITH NOW() + INTERVAL 1 DAY NEXT 86400', { startWith: 'NOW() + INTERVAL 1 DAY', next: '86400' }],
    ["START WITH CAST('2026-01-01' AS DATETIME) NEXT (SELECT 1 AS x)", { startWith: "CAST('2026-01-01' AS DATETIME)", next: '(SELECT 1 AS x)' }],
    ['START WITH DATE_ADD(NOW(), INTERVAL (1 + (2)) HOUR) NEXT 60 * (1 + 1)', { startWith: 'DATE_ADD(NOW(), INTERVAL (1 + (2)) HOUR)', next: '60 * (1 + 1)' }],
    ['START WITH NOW() /* NEXT 1 */ NEXT 10 -- AS\n', { startWith: 'NOW()', next: '10' }],
    ['START WITH NOW() + `next` NEXT @next', { startWith: 'NOW() + `next`', next: '@next' }],
    ['START WITH t.next NEXT @@session.as', { startWith: 't.next', next: '@@session.as' }],
    ['START WITH NOW()\n  NEXT\n  3600', { startWith: 'NOW()', next: '3600' }],
    ['NEXT 10AS', { next: '10AS' }],
  ])('ALTER ... REFRESH %s', (clause, expected) => {
    expect(schedule(`ALTER MATERIALIZED VIEW mv REFRESH ${clause}`)).toStrictEqual(expected);
  });

  it('stops at a top-level AS in CREATE', () => {
    expect(schedule("CREATE MATERIALIZED VIEW mv START WITH CAST('x AS y' AS DATETIME) NEXT IF(1, 2, 3) AS SELECT 1")).toStrictEqual({
      startWith: "CAST('x AS y' AS DATETIME)",
      next: 'IF(1, 2, 3)',
    });
  });
});

describe('parseStatement: errors', () => {
  // [sql, line, column, expected, message fragment]
  const cases: Array<[string, number, number, string[], string]> = [
    // unknown verb / empty
    ['TRUNCATE MATERIALIZED VIEW mv', 1, 1, ['CREATE', 'ALTER', 'DROP', 'PURGE', 'REFRESH'], 'expected CREATE, ALTER, DROP, PURGE or REFRESH, found "TRUNCATE"'],
    ['', 1, 1, ['CREATE', 'ALTER', 'DROP', 'PURGE', 'REFRESH'], 'found end of input'],
    ['  -- only a comment\n', 1, 1, ['CREATE', 'ALTER', 'DROP', 'PURGE', 'REFRESH'], 'found end of input'],
    ['CREATE VIEW mv AS SELECT 1', 1, 8, ['MATERIALIZED'], 'expected MATERIALIZED, found "VIEW"'],
    ['CREATE MATERIALIZED TABLE mv', 1, 21, ['VIEW'], 'expected VIEW, found "TABLE"'],
    // missing AS
    ['CREATE MATERIALIZED VIEW s.mv REFRES FAST AS SELECT 1', 1, 31, ['REFRESH', 'START WITH', 'NEXT', 'TARGET LAG', 'ON DEMAND', 'AS'], 'expected REFRESH, START WITH, NEXT, TARGET LAG, ON DEMAND or AS, found "REFRES"'],
    ['CREATE MATERIALIZED VIEW mv SELECT 1', 1, 29, ['REFRESH', 'START WITH', 'NEXT', 'TARGET LAG', 'ON DEMAND', 'AS'], 'found "SELECT"'],
    ['CREATE MATERIALIZED VIEW mv REFRESH FAST SELECT 1', 1, 42, ['START WITH', 'NEXT', 'TARGET LAG', 'ON DEMAND', 'AS'], 'expected START WITH, NEXT, TARGET LAG, ON DEMAND or AS, found "SELECT"'],
    ['CREATE MATERIALIZED VIEW mv NEXT 10', 1, 36, ['AS'], 'expected AS, found end of input'],
    ['CREATE MATERIALIZED VIEW mv START WITH NOW();', 1, 45, ['NEXT', 'AS'], 'expected NEXT or AS, found ";"'],
    ['CREATE MATERIALIZED VIEW mv AS UPDATE t SET a = 1', 1, 32, ['SELECT', 'WITH', '('], 'expected SELECT after AS'],
    ['CREATE MATERIALIZED VIEW mv AS', 1, 31, ['SELECT', 'WITH', '('], 'expected SELECT after AS (a query starting with SELECT, WITH or "("), found end of input'],
    // bad method
    ['CREATE MATERIALIZED VIEW mv REFRESH SLOW AS SELECT 1', 1, 37, ['FAST', 'COMPLETE', 'FORCE'], 'expected FAST, COMPLETE or FORCE, found "SLOW"'],
    ['ALTER MATERIALIZED VIEW mv REFRESH SLOW', 1, 36, ['FAST', 'COMPLETE', 'FORCE', 'START WITH', 'NEXT', 'TARGET LAG', 'ON DEMAND'], 'expected FAST, COMPLETE, FORCE, START WITH, NEXT, TARGET LAG or ON DEMAND, found "SLOW"'],
    ['ALTER MATERIALIZED VIEW mv REFRESH', 1, 35, ['FAST', 'COMPLETE', 'FORCE', 'START WITH', 'NEXT', 'TARGET LAG', 'ON DEMAND'], 'found end of input'],
    ['REFRESH MATERIALIZED VIEW mv FORCE', 1, 30, ['COMPLETE', 'FAST', 'CASCADE', 'end of statement'], 'expected COMPLETE, FAST, CASCADE or end of statement, found "FORCE"'],
    ['REFRESH MATERIALIZED VIEW mv FAST NOW', 1, 35, ['CASCADE', 'end of statement'], 'expected CASCADE or end of statement, found "NOW"'],
    ['REFRESH MATERIALIZED VIEW mv CASCADE FAST', 1, 38, ['end of statement'], 'found "FAST"'],
    ['ALTER MATERIALIZED VIEW mv', 1, 27, ['REFRESH', 'SUSPEND', 'RESUME'], 'expected REFRESH, SUSPEND or RESUME, found end of input'],
    ['ALTER MATERIALIZED VIEW mv REFRESH FAST SUSPEND', 1, 41, ['START WITH', 'NEXT', 'TARGET LAG', 'ON DEMAND', 'end of statement'], 'found "SUSPEND"'],
    // target lag
    ['CREATE MATERIALIZED VIEW mv TARGET LAG AS SELECT 1', 1, 40, ['a number of seconds', 'DOWNSTREAM'], 'expected a number of seconds or DOWNSTREAM, found "AS"'],
    ['CREATE MATERIALIZED VIEW mv TARGET LAG 0 AS SELECT 1', 1, 40, [], 'TARGET LAG must be a whole number of seconds from 1 to'],
    ['CREATE MATERIALIZED VIEW mv TARGET LAG 2.5 AS SELECT 1', 1, 40, [], 'found "2.5"'],
    ['CREATE MATERIALIZED VIEW mv TARGET 5 AS SELECT 1', 1, 36, ['LAG'], 'expected LAG, found "5"'],
    ['CREATE MATERIALIZED VIEW mv TARGET LAG 5 NEXT 10 AS SELECT 1', 1, 42, ['AS'], 'expected AS, found "NEXT"'],
    ['CREATE MATERIALIZED VIEW mv NEXT 10 TARGET LAG 5 AS SELECT 1', 1, 37, ['AS'], 'expected AS, found "TARGET"'],
    ['ALTER MATERIALIZED VIEW mv REFRESH START WITH NOW() TARGET LAG 5', 1, 53, ['NEXT', 'end of statement'], 'found "TARGET"'],
    ['ALTER MATERIALIZED VIEW mv REFRESH ON NOW', 1, 39, ['DEMAND'], 'expected DEMAND, found "NOW"'],
    ['ALTER MATERIALIZED VIEW mv REFRESH ON DEMAND NEXT 5', 1, 46, ['end of statement'], 'found "NEXT"'],
    ['ALTER MATERIALIZED VIEW mv REFRESH START WITH NOW() AS SELECT 1', 1, 53, ['NEXT', 'end of statement'], 'expected NEXT or end of statement, found "AS"'],
    // NEXT / START WITH without an expression
    ['CREATE MATERIALIZED VIEW mv NEXT AS SELECT 1', 1, 34, ['expression'], 'expected expression, found "AS"'],
    ['ALTER MATERIALIZED VIEW mv REFRESH NEXT', 1, 40, ['expression'], 'expected expression, found end of input'],
    ['ALTER MATERIALIZED VIEW mv REFRESH NEXT ;', 1, 41, ['expression'], 'found ";"'],
    ['CREATE MATERIALIZED VIEW mv START WITH NEXT 10 AS SELECT 1', 1, 40, ['expression'], 'expected expression, found "NEXT"'],
    ['CREATE MATERIALIZED VIEW mv START NOW() AS SELECT 1', 1, 35, ['WITH'], 'expected WITH, found "NOW"'],
    ['ALTER MATERIALIZED VIEW LOG ON t PURGE START WITH NOW()', 1, 56, ['NEXT'], 'expected NEXT, found end of input'],
    ['ALTER MATERIALIZED VIEW LOG ON t PURGE', 1, 39, ['IMMEDIATE', 'START WITH', 'NEXT'], 'expected IMMEDIATE, START WITH or NEXT, found end of input'],
    ['ALTER MATERIALIZED VIEW LOG ON t NEXT 10', 1, 34, ['PURGE'], 'expected PURGE, found "NEXT"'],
    // parentheses in expressions
    ['CREATE MATERIALIZED VIEW mv NEXT (10 AS SELECT 1', 1, 34, [')'], 'unclosed "(" starting here: expected ")", found end of input'],
    ['ALTER MATERIALIZED VIEW mv REFRESH NEXT 10)', 1, 43, [], 'unmatched ")"'],
    // column lists
    ['CREATE MATERIALIZED VIEW LOG ON t ()', 1, 36, ['column name'], 'expected column name, found ")"'],
    ['CREATE MATERIALIZED VIEW LOG ON t (a,)', 1, 38, ['column name'], 'found ")"'],
    ['CREATE MATERIALIZED VIEW LOG ON t (a b)', 1, 38, [',', ')'], 'expected "," or ")", found "b"'],
    ['CREATE MATERIALIZED VIEW LOG ON t (a', 1, 37, [',', ')'], 'found end of input'],
    ['CREATE MATERIALIZED VIEW LOG ON t PURGE IMMEDIATE', 1, 35, ['('], 'expected "(", found "PURGE"'],
    ['CREATE MATERIALIZED VIEW LOG ON t (a) PURGE', 1, 44, ['IMMEDIATE', 'START WITH', 'NEXT'], 'found end of input'],
    ['CREATE MATERIALIZED VIEW LOG ON t (a) NEXT 10', 1, 39, ['PURGE', 'USING', 'end of statement'], 'expected PURGE, USING or end of statement, found "NEXT"'],
    ['CREATE MATERIALIZED VIEW LOG ON t (a) USING', 1, 44, ['TRIGGERS', 'BINLOG'], 'expected TRIGGERS or BINLOG, found end of input'],
    ['CREATE MATERIALIZED VIEW LOG ON t (a) USING STATEMENT', 1, 45, ['TRIGGERS', 'BINLOG'], 'found "STATEMENT"'],
    ['CREATE MATERIALIZED VIEW LOG ON t (a) PURGE IMMEDIATE NEXT 5', 1, 55, ['USING', 'end of statement'], 'expected USING or end of statement, found "NEXT"'],
    ['CREATE MATERIALIZED VIEW LOG ON t (a) USING BINLOG PURGE IMMEDIATE', 1, 52, ['end of statement'], 'found "PURGE"'],
    ['CREATE MATERIALIZED VIEW LOG ON t (a) USING BINLOG BINLOG', 1, 52, ['end of statement'], 'found "BINLOG"'],
    ['ALTER MATERIALIZED VIEW LOG ON t PURGE IMMEDIATE USING BINLOG', 1, 50, ['end of statement'], 'found "USING"'],
    ['CREATE MATERIALIZED VIEW LOG ON t (a, b, A)', 1, 42, [], 'duplicate column "A" in column list (first listed at line 1, column 36)'],
    ['CREATE MATERIALIZED VIEW LOG ON t (`Id`, x,\n  id)', 2, 3, [], 'duplicate column "id" in column list (first listed at line 1, column 36)'],
    // lexical errors name the start position
    ["CREATE MATERIALIZED VIEW mv START WITH '2026-01-01 NEXT 10 AS SELECT 1", 1, 40, ["'"], 'unterminated string literal starting here'],
    ['CREATE MATERIALIZED VIEW mv\nNEXT 10\nAS SELECT "abc\\" FROM t', 3, 11, ['"'], 'unterminated string literal starting here: expected """, found end of input'],
    ['DROP MATERIALIZED VIEW `mv', 1, 24, ['`'], 'unterminated quoted identifier starting here'],
    ['DROP MATERIALIZED VIEW mv /* comment', 1, 27, ['*/'], 'unterminated comment starting here: expected "*/", found end of input'],
    // more than one statement
    ['DROP MATERIALIZED VIEW a; DROP MATERIALIZED VIEW b', 1, 27, ['end of input'], 'expected end of input, found "DROP" (only one statement is allowed'],
    ['DROP MATERIALIZED VIEW a;;', 1, 26, ['end of input'], 'found ";"'],
    ['CREATE MATERIALIZED VIEW mv AS SELECT 1;\nSELECT 2', 2, 1, ['end of input'], 'found "SELECT"'],
    // garbage after a complete statement
    ['DROP MATERIALIZED VIEW mv RESTRICT', 1, 27, ['CASCADE', 'end of statement'], 'expected CASCADE or end of statement, found "RESTRICT"'],
    ['DROP MATERIALIZED VIEW mv CASCADE CASCADE', 1, 35, ['end of statement'], 'expected end of statement, found "CASCADE"'],
    ['DROP MATERIALIZED VIEW LOG ON t t2', 1, 33, ['end of statement'], 'found "t2"'],
    ['PURGE MATERIALIZED VIEW LOG ON t NOW', 1, 34, ['end of statement'], 'found "NOW"'],
    ['ALTER MATERIALIZED VIEW mv SUSPEND NOW', 1, 36, ['end of statement'], 'found "NOW"'],
    // names
    ['DROP MATERIALIZED VIEW', 1, 23, ['LOG', 'view name'], 'expected LOG or view name, found end of input'],
    ['DROP MATERIALIZED VIEW s.', 1, 26, ['view name'], 'expected view name, found end of input'],
    ['DROP MATERIALIZED VIEW LOG t', 1, 28, ['ON'], 'expected ON, found "t"'],
    ['PURGE MATERIALIZED VIEW t', 1, 25, ['LOG'], 'expected LOG, found "t"'],
    ['REFRESH MATERIALIZED VIEW log', 1, 27, ['view name'], 'found "log" (LOG is a reserved word; write `log` to use it as a name)'],
    ['CREATE MATERIALIZED VIEW LOG ON t (a, next)', 1, 39, ['column name'], 'NEXT is a reserved word'],
    ['DROP MATERIALIZED VIEW s.AS', 1, 26, ['view name'], 'found "AS"'],
    ['DROP MATERIALIZED VIEW 1mv', 1, 24, ['LOG', 'view name'], 'found "1mv"'],
    ['DROP MATERIALIZED VIEW ``', 1, 24, [], 'invalid view name: an identifier must not be empty'],
    ['DROP MATERIALIZED VIEW `mv `', 1, 24, [], 'must not end with a space'],
    [`DROP MATERIALIZED VIEW LOG ON ${'t'.repeat(65)}`, 1, 31, [], 'invalid table name: identifier is 65 characters long, at most 64 are allowed'],
    [`DROP MATERIALIZED VIEW \`${'x'.repeat(65)}\``, 1, 24, [], 'at most 64'],
    // multi-line positions
    ['-- header\n\nDROP MATERIALIZED\n  VIEW mv\n    junk', 5, 5, ['CASCADE', 'end of statement'], 'found "junk"'],
    ['DROP MATERIALIZED VIEW\r\n  \t`a`.`b`  x', 2, 13, ['CASCADE', 'end of statement'], 'found "x"'],
  ];

  it.each(cases)('%s', (sql, line, column, expected, fragment) => {
    const err = parseError(sql);
    expect(err.message).toMatch(new RegExp(`^syntax error at line ${line}, column ${column}: `));
    expect(err.message).toContain(fragment);
    expect({ line: err.line, column: err.column }).toEqual({ line, column });
    expect(err.expected).toEqual(expected);
  });

  it('is a ValidationError carrying the position in details', () => {
    const err = parseError('DROP MATERIALIZED VIEW mv RESTRICT');
    expect(err).toBeInstanceOf(ValidationError);
    expect(err.name).toBe('DdlSyntaxError');
    expect(err.offset).toBe(26);
    expect(err.found).toBe('RESTRICT');
    expect(err.details).toEqual({ line: 1, column: 27, offset: 26, expected: ['CASCADE', 'end of statement'], found: 'RESTRICT' });
  });

  it('uses "end of input" as found at the end, positioned after the last token', () => {
    const err = parseError('CREATE MATERIALIZED VIEW mv NEXT 10   \n\n  -- trailing\n');
    expect(err.found).toBe('end of input');
    expect([err.line, err.column]).toEqual([1, 36]);
  });

  it('counts columns in characters, not UTF-16 units', () => {
    const err = parseError('DROP MATERIALIZED VIEW `😀` junk');
    expect([err.line, err.column]).toEqual([1, 28]);
  });

  it('shifts positions by an origin inside a larger script', () => {
    try {
      parseStatement('DROP MATERIALIZED VIEW mv junk', { line: 3, column: 5, offset: 40 });
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(DdlSyntaxError);
      const e = err as DdlSyntaxError;
      expect([e.line, e.column, e.offset]).toEqual([3, 31, 66]);
      expect(e.message).toMatch(/^syntax error at line 3, column 31: /);
    }
  });
});

describe('splitStatements', () => {
  it.each<[string, string[]]>([
    ['', []],
    ['  ;; -- nothing\n /* here */ ;', []],
    ['DROP MATERIALIZED VIEW a', ['DROP MATERIALIZED VIEW a']],
    ['DROP MATERIALIZED VIEW a; DROP MATERIALIZED VIEW b;', ['DROP MATERIALIZED VIEW a', 'DROP MATERIALIZED VIEW b']],
    [
      "-- setup\nCREATE MATERIALIZED VIEW mv AS SELECT ';', \"x;\", `a;b` FROM t; # done;\n/* ; */ REFRESH MATERIALIZED VIEW mv",
      ["CREATE MATERIALIZED VIEW mv AS SELECT ';', \"x;\", `a;b` FROM t", 'REFRESH MATERIALIZED VIEW mv'],
    ],
    ["SELECT 'it''s;', 'a\\';b';SELECT 2", ["SELECT 'it''s;', 'a\\';b'", 'SELECT 2']],
    ['SELECT 1 /* inner ; */ + 1;\n;\nSELECT 2 -- tail ;\n', ['SELECT 1 /* inner ; */ + 1', 'SELECT 2']],
    // `--` without a following space is an operator, as in MySQL.
    ['SELECT 1--1; SELECT 2', ['SELECT 1--1', 'SELECT 2']],
    // Parentheses do not protect a `;` (like the mysql client), so one bad "(" cannot swallow the script.
    ['CREATE MATERIALIZED VIEW mv NEXT (1; DROP MATERIALIZED VIEW x', ['CREATE MATERIALIZED VIEW mv NEXT (1', 'DROP MATERIALIZED VIEW x']],
  ])('%j', (sql, expected) => {
    expect(splitStatements(sql)).toEqual(expected);
  });

  it('reports where each statement starts, and the pieces parse with file positions', () => {
    const script = '-- file\nDROP MATERIALIZED VIEW a;\n\n  DROP MATERIALIZED VIEW b junk;\n';
    const pieces = splitStatementsWithLocation(script);
    expect(pieces).toEqual([
      { text: 'DROP MATERIALIZED VIEW a', line: 2, column: 1, offset: 8 },
      { text: 'DROP MATERIALIZED VIEW b junk', line: 4, column: 3, offset: 37 },
    ]);
    expect(parseStatement(pieces[0]!.text, pieces[0])).toMatchObject({ kind: 'dropMview', name: { name: 'a' } });
    try {
      parseStatement(pieces[1]!.text, pieces[1]);
      expect.unreachable();
    } catch (err) {
      const e = err as DdlSyntaxError;
      expect([e.line, e.column]).toEqual([4, 28]);
      expect(script.slice(e.offset, e.offset + 4)).toBe('junk');
    }
  });

  it('throws on an unterminated string, naming where it starts', () => {
    expect(() => splitStatements("SELECT 1;\nSELECT 'abc;")).toThrow(/^syntax error at line 2, column 8: unterminated string literal/);
    expect(() => splitStatements('SELECT 1; /* open')).toThrow(DdlSyntaxError);
  });
});
