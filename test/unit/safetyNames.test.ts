import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/errors.js';
import { quoteBareNames } from '../../src/fast/quoteWords.js';
import { analyzeFast } from '../../src/fast/analyze.js';
import { innodbTableName } from '../../src/mlog/identity.js';
import { assertMviewNameAllowed, parseDottedName, qualifiedText, resolveName } from '../../src/mv/identifiers.js';

describe('names mvsched takes back (payloads, CLI arguments)', () => {
  it('qualifiedText quotes exactly the parts that need it, and parseDottedName reads it back', () => {
    const cases: Array<[string, string, string]> = [
      ['app', 'orders', 'app.orders'],
      ['app', 'a.b', 'app.`a.b`'],
      ['my db', 'x y', '`my db`.`x y`'],
      ['app', 'tick`s', 'app.`tick``s`'],
      ['app', 'déjà', 'app.`déjà`'],
      ['app', '$ok_1', 'app.$ok_1'],
    ];
    for (const [schema, name, text] of cases) {
      expect(qualifiedText({ schema, name })).toBe(text);
      expect(parseDottedName(text, 'other', 'mview')).toEqual({ schema, name });
    }
  });

  it('identifiers MySQL cannot store are refused with the name in the message', () => {
    expect(() => resolveName({ name: 'sales_😀' }, 'app', 'materialized view')).toThrow(ValidationError);
    expect(() => resolveName({ name: 'sales_😀' }, 'app', 'materialized view')).toThrow(/sales_😀.*Basic Multilingual Plane/);
    expect(() => resolveName({ schema: '😀', name: 'x' }, 'app', 'table')).toThrow(/table schema name/);
    expect(resolveName({ name: 'ventes_été' }, 'app', 'materialized view')).toEqual({ schema: 'app', name: 'ventes_été' });
  });

  it("MV names that would collide with mvsched's own tables are refused", () => {
    for (const bad of ['__mvs_8_new', '__MVS_x', 'mlog$orders', 'MLOG$T']) {
      expect(() => assertMviewNameAllowed(bad)).toThrow(/reserved/);
    }
    for (const ok of ['mvs_8_new', '_mvs_x', 'mlog_orders', 'my__mvs_']) expect(() => assertMviewNameAllowed(ok)).not.toThrow();
  });

  it("InnoDB's dictionary names: ASCII specials as @XXXX, non-ASCII not guessed", () => {
    expect(innodbTableName('app', 'orders')).toBe('app/orders');
    expect(innodbTableName('my-db', 'a$b c.d')).toBe('my@002ddb/a@0024b@0020c@002ed');
    expect(innodbTableName('app', 'Ünï')).toBeUndefined();
  });
});

describe('the FAST analyser and columns named like keywords', () => {
  it('quoteBareNames backquotes names, not grammar or functions', () => {
    expect(quoteBareNames('SELECT status, COUNT(*) AS n FROM t WHERE type = \'a\' GROUP BY status')).toBe(
      "SELECT `status`, COUNT(*) AS `n` FROM `t` WHERE `type` = 'a' GROUP BY `status`",
    );
    expect(quoteBareNames('SELECT CAST(value AS SIGNED) AS v FROM s.t')).toBe('SELECT CAST(`value` AS SIGNED) AS `v` FROM `s`.`t`');
  });

  it('analyses definitions over columns named status, type, value, key', () => {
    const agg = analyzeFast('SELECT status, COUNT(*) AS n, SUM(value) AS total FROM t GROUP BY status', 'db');
    expect(agg).toMatchObject({ ok: true, plan: { kind: 'aggregate', columnsRead: expect.arrayContaining(['status', 'value']) } });
    const spj = analyzeFast('SELECT id, status, type, `key`, value FROM t WHERE status <> 0', 'db');
    expect(spj).toMatchObject({ ok: true, plan: { kind: 'spj' } });
    // Still refused for the real reasons.
    expect(analyzeFast('SELECT status, COUNT(DISTINCT value) AS n FROM t GROUP BY status', 'db')).toMatchObject({ ok: false, reason: expect.stringMatching(/DISTINCT/) });
  });
});
