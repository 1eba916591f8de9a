import { describe, expect, it } from 'vitest';
import { evaluateLog, type CatalogView, type LogUnderCheck } from '../../src/drift/evaluate.js';

// The drift rules (DESIGN.md §2 "Changes made behind mvsched's back") on a catalog described by
// hand: each kind of change is named in the problem, and an untouched table has none.

const log: LogUnderCheck = { mlogId: 7, schema: 'app', table: 'o', logTable: 'mlog$o', columns: ['g', 'x'], pk: ['id'], token: 40 };

interface Fake {
  tables: Record<string, { type: string; comment: string }>;
  columns: Record<string, Record<string, { type: string; cs: string | null }>>;
  pk: Record<string, string[]>;
  triggers: Array<{ name: string; t: string }>;
  fks?: Array<{ name: string; parent: string; onDelete: string; onUpdate: string }>;
}

function healthy(): Fake {
  const cols = { id: { type: 'int(11)', cs: null }, g: { type: 'varchar(10)', cs: 'utf8mb4' }, x: { type: 'decimal(10,2)', cs: null } };
  return {
    tables: { o: { type: 'BASE TABLE', comment: '' }, 'mlog$o': { type: 'BASE TABLE', comment: 'mvsched:mlog:7' } },
    columns: {
      o: { ...cols, other: { type: 'text', cs: 'utf8mb4' } },
      'mlog$o': { ...cols, '_mlog$seq': { type: 'bigint(20) unsigned', cs: null }, dml_type: { type: 'char(1)', cs: 'utf8mb4' }, old_new: { type: 'tinyint(4)', cs: null } },
    },
    pk: { o: ['id'] },
    triggers: ['ins', 'upd', 'del'].map((s) => ({ name: `mvs_mlog_7_${s}`, t: 'o' })),
  };
}

function view(f: Fake): CatalogView {
  return {
    table: (_s, t) => f.tables[t],
    createTime: () => null,
    columns: (_s, t) => (f.columns[t] ? new Map(Object.entries(f.columns[t]!)) : undefined),
    primaryKey: (_s, t) => f.pk[t] ?? [],
    ownTriggers: () => f.triggers,
    cascadingKeys: () => f.fks ?? [],
    logTableComment: (id) => `mvsched:mlog:${id}`,
    gates: new Set([7]),
    consumers: new Map(),
    tableIds: new Map(),
  };
}

const problem = (f: Fake) => evaluateLog(log, view(f)).problem;

describe('drift rules', () => {
  it('an untouched table and log have no problem (other columns may come and go)', () => {
    expect(problem(healthy())).toBeUndefined();
    const f = healthy();
    delete f.columns.o!.other;
    f.columns.o!.added = { type: 'int(11)', cs: null };
    expect(problem(f)).toBeUndefined();
  });

  it('base table dropped, renamed, or re-created', () => {
    const dropped = healthy();
    delete dropped.tables.o;
    dropped.triggers = [];
    expect(problem(dropped)).toBe('base table app.o was dropped');

    const renamed = healthy();
    delete renamed.tables.o;
    renamed.triggers = renamed.triggers.map((t) => ({ ...t, t: 'o_old' }));
    expect(problem(renamed)).toBe('base table app.o was renamed to app.o_old');

    const swapped = healthy();
    swapped.triggers = swapped.triggers.map((t) => ({ ...t, t: 'o_old' }));
    expect(problem(swapped)).toMatch(/renamed to app\.o_old and another table took its name/);

    const recreated = healthy();
    recreated.triggers = [];
    expect(problem(recreated)).toMatch(/dropped and re-created/);

    const view_ = healthy();
    view_.tables.o = { type: 'VIEW', comment: '' };
    expect(problem(view_)).toBe('base table app.o was dropped');
  });

  it('a trigger dropped', () => {
    const f = healthy();
    f.triggers = f.triggers.filter((t) => !t.name.endsWith('_upd'));
    expect(problem(f)).toBe('trigger mvs_mlog_7_upd of the log on app.o dropped');
  });

  it('a tracked or key column dropped, renamed, retyped or re-charset', () => {
    const dropped = healthy();
    delete dropped.columns.o!.g;
    expect(problem(dropped)).toBe('column g of app.o, which its log tracks, was dropped or renamed');

    const key = healthy();
    delete key.columns.o!.id;
    expect(problem(key)).toMatch(/column id of app\.o/);

    const retyped = healthy();
    retyped.columns.o!.g = { type: 'varchar(100)', cs: 'utf8mb4' };
    expect(problem(retyped)).toBe('column g of app.o changed type from varchar(10) to varchar(100)');

    const charset = healthy();
    charset.columns.o!.g = { type: 'varchar(10)', cs: 'latin1' };
    expect(problem(charset)).toMatch(/changed character set from utf8mb4 to latin1/);
  });

  it('the log table dropped, altered, or replaced by someone else', () => {
    const gone = healthy();
    delete gone.tables['mlog$o'];
    expect(problem(gone)).toBe('log table app.mlog$o was dropped');

    const altered = healthy();
    delete altered.columns['mlog$o']!.x;
    expect(problem(altered)).toBe('column x of log table app.mlog$o was dropped or renamed');

    const internal = healthy();
    delete internal.columns['mlog$o']!.old_new;
    expect(problem(internal)).toMatch(/old_new of log table/);

    const foreign = healthy();
    foreign.tables['mlog$o'] = { type: 'BASE TABLE', comment: 'my own table' };
    expect(problem(foreign)).toMatch(/replaced by a table mvsched did not make/);

    // A log table an earlier release made has no comment: still the log's.
    const legacy = healthy();
    legacy.tables['mlog$o'] = { type: 'BASE TABLE', comment: '' };
    expect(problem(legacy)).toBeUndefined();
  });

  it('the primary key changed, or a cascading foreign key appeared', () => {
    const pk = healthy();
    pk.pk.o = ['id', 'g'];
    expect(problem(pk)).toBe('the primary key of app.o changed from (id) to (id, g)');

    const fk = healthy();
    fk.fks = [{ name: 'fk_o_c', parent: 'c', onDelete: 'CASCADE', onUpdate: 'RESTRICT' }];
    expect(problem(fk)).toBe('app.o became the child of foreign key fk_o_c (ON DELETE CASCADE) on c: the rows it changes fire no triggers');

    const setNull = healthy();
    setNull.fks = [{ name: 'fk2', parent: 'c', onDelete: 'RESTRICT', onUpdate: 'SET NULL' }];
    expect(problem(setNull)).toMatch(/ON UPDATE SET NULL/);
  });
});

describe('drift rules of a BINLOG log (no triggers; the catalog rules are the same)', () => {
  const binlogLog: LogUnderCheck = { ...log, captureMode: 'BINLOG' };
  function binlogHealthy(): Fake {
    const f = healthy();
    f.triggers = [];
    f.columns['mlog$o']!['_mlog$bpos'] = { type: 'bigint(20) unsigned', cs: null };
    return f;
  }
  const binlogProblem = (f: Fake) => evaluateLog(binlogLog, view(f)).problem;

  it('has no problem without triggers, and is not asked for any', () => {
    expect(binlogProblem(binlogHealthy())).toBeUndefined();
    // The same catalog is a broken trigger log.
    expect(problem(binlogHealthy())).toMatch(/dropped and re-created/);
  });

  it('base table gone, columns, key, log table and its binlog position column', () => {
    const dropped = binlogHealthy();
    delete dropped.tables.o;
    expect(binlogProblem(dropped)).toBe('base table app.o was dropped or renamed');

    const col = binlogHealthy();
    delete col.columns.o!.x;
    expect(binlogProblem(col)).toBe('column x of app.o, which its log tracks, was dropped or renamed');

    const retyped = binlogHealthy();
    retyped.columns.o!.x = { type: 'decimal(12,2)', cs: null };
    expect(binlogProblem(retyped)).toBe('column x of app.o changed type from decimal(10,2) to decimal(12,2)');

    const pk = binlogHealthy();
    pk.pk.o = ['g'];
    expect(binlogProblem(pk)).toMatch(/primary key of app\.o changed/);

    const bpos = binlogHealthy();
    delete bpos.columns['mlog$o']!['_mlog$bpos'];
    expect(binlogProblem(bpos)).toBe('column _mlog$bpos of log table app.mlog$o was dropped or renamed');

    const gone = binlogHealthy();
    delete gone.tables['mlog$o'];
    expect(binlogProblem(gone)).toBe('log table app.mlog$o was dropped');

    const fk = binlogHealthy();
    fk.fks = [{ name: 'fk_o_c', parent: 'c', onDelete: 'CASCADE', onUpdate: 'RESTRICT' }];
    expect(binlogProblem(fk)).toMatch(/the rows it changes are not in the row binary log/);
  });
});
