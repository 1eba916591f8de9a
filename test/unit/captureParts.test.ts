import { describe, expect, it } from 'vitest';
import { LogRegistry, capturedLogOf } from '../../src/capture/logRegistry.js';
import { bytesBehind } from '../../src/capture/serverPosition.js';
import { binlogSettingProblems } from '../../src/capture/settings.js';

const ok = { logBin: true, format: 'ROW', rowImage: 'FULL', rowMetadata: 'FULL', mariadb: true, version: '10.11.19-MariaDB' };

describe('binlog settings capture needs', () => {
  it('none missing on a row-based binlog with full images and metadata', () => {
    expect(binlogSettingProblems(ok)).toEqual([]);
  });

  it('names each missing setting', () => {
    expect(binlogSettingProblems({ ...ok, logBin: false })).toEqual(['the binary log is off (start the server with log_bin)']);
    expect(binlogSettingProblems({ ...ok, format: 'MIXED', rowImage: 'MINIMAL', rowMetadata: 'NO_LOG' })).toEqual([
      'binlog_format is MIXED, must be ROW',
      'binlog_row_image is MINIMAL, must be FULL',
      'binlog_row_metadata is NO_LOG, must be FULL',
    ]);
    expect(binlogSettingProblems({ ...ok, rowMetadata: null, version: '10.4.1-MariaDB' })[0]).toMatch(/has no binlog_row_metadata/);
  });
});

describe('bytes behind the server', () => {
  const files = [
    { name: 'b.000001', size: 1000 },
    { name: 'b.000002', size: 500 },
    { name: 'b.000003', size: 300 },
  ];
  it('counts the rest of the current file and every later one', () => {
    expect(bytesBehind(files, 'b.000003', 300)).toBe(0);
    expect(bytesBehind(files, 'b.000003', 100)).toBe(200);
    expect(bytesBehind(files, 'b.000001', 900)).toBe(100 + 500 + 300);
  });
  it('is unknown for a file the server no longer has', () => {
    expect(bytesBehind(files, 'b.000000', 4)).toBeNull();
    expect(bytesBehind(files, null, null)).toBeNull();
  });
});

describe('the set of captured logs', () => {
  const row = (over: Record<string, unknown> = {}) => ({
    mlog_id: 7,
    table_schema: 's',
    base_table_name: 't',
    mlog_name: 'mlog$t',
    mlog_columns: '["a","id"]',
    pk_columns: '["id"]',
    capture_mode: 'BINLOG',
    state: 'OK',
    ...over,
  });

  it('captures BINLOG logs in state OK only, with the primary key first', () => {
    expect(capturedLogOf(row())).toEqual({ mlogId: 7, schema: 's', table: 't', logTable: 'mlog$t', columns: ['id', 'a'] });
    expect(capturedLogOf(row({ capture_mode: 'TRIGGERS' }))).toBeUndefined();
    expect(capturedLogOf(row({ state: 'BROKEN' }))).toBeUndefined();
  });

  it('follows inserts, updates and deletes of mvs_mlogs rows', () => {
    const reg = new LogRegistry();
    expect(reg.applyRowChange(null, row()).added?.mlogId).toBe(7);
    expect(reg.forTable('s', 't')?.mlogId).toBe(7);
    expect(reg.ids()).toEqual([7]);
    expect(reg.applyRowChange(row(), row({ state: 'BROKEN' })).removed?.mlogId).toBe(7);
    expect(reg.forTable('s', 't')).toBeUndefined();
    reg.applyRowChange(null, row({ mlog_id: 8 }));
    expect(reg.applyRowChange(row({ mlog_id: 8 }), null).removed?.mlogId).toBe(8);
    expect(reg.size).toBe(0);
  });

  it('keeps one log per base table: a re-created log replaces the old one', () => {
    const reg = new LogRegistry();
    reg.applyRowChange(null, row());
    reg.applyRowChange(null, row({ mlog_id: 9 }));
    expect(reg.ids()).toEqual([9]);
    expect(reg.get(7)).toBeUndefined();
  });
});
