import { describe, expect, it } from 'vitest';
import type { FastSetup } from '../../src/fast/explain.js';
import { emptyFromTops, topsCover, type LogTop } from '../../src/refresh/emptyFast.js';
import type { MlogLink } from '../../src/refresh/method.js';

// The early probe of an empty FAST run: tops of the logs the previous run consumed, read before
// the run knows its links. Only a guess that names exactly the run's logs may answer.

const link = (mlogId: number, watermark: number, over: Partial<MlogLink> = {}): MlogLink => ({
  mlogId,
  watermark,
  purgeMethod: 'DEFERRED',
  table: { schema: 's', name: `t${mlogId}` },
  logTable: `mlog$t${mlogId}`,
  broken: null,
  mvToken: 7,
  captureMode: 'TRIGGERS',
  modifiedMs: 0,
  ...over,
});
const top = (l: MlogLink): LogTop => ({ mlogId: l.mlogId, schema: l.table.schema, logTable: l.logTable });
const setup = (mode: string, ...ids: number[]) => ({ shape: 'join', mlogs: ids.map((id) => ({ mlog_id: id, capture_mode: mode })) }) as unknown as FastSetup;
const at = new Date('2026-12-03T10:00:00.000Z');

describe('early probe of an empty FAST run', () => {
  it('covers only a guess naming the same logs in the same tables', () => {
    const links = [link(1, 5), link(2, 9)];
    expect(topsCover(links.map(top), links)).toBe(true);
    expect(topsCover([top(links[0]!)], links)).toBe(false);
    expect(topsCover([top(links[0]!), { ...top(links[1]!), mlogId: 3 }], links)).toBe(false);
    expect(topsCover([top(links[0]!), { ...top(links[1]!), logTable: 'mlog$other' }], links)).toBe(false);
    expect(topsCover([top(links[0]!), { ...top(links[1]!), schema: 'x' }], links)).toBe(false);
  });

  it('finds nothing to apply only when no log has a row past the watermark', () => {
    const links = [link(1, 5), link(2, 9)];
    const s = setup('TRIGGERS', 1, 2);
    expect(emptyFromTops(s, links, { at, top: new Map([[1, 5], [2, 0]]) })).toEqual({ dataTime: at });
    expect(emptyFromTops(s, links, { at, top: new Map([[1, 5], [2, 10]]) })).toBe('backlog');
    expect(emptyFromTops(s, links, { at, top: new Map([[1, 5]]) })).toBe('backlog');
  });

  it('never answers for BINLOG logs or an MV whose base table identity is not known yet', () => {
    const links = [link(1, 5)];
    expect(emptyFromTops(setup('BINLOG', 1), links, { at, top: new Map([[1, 0]]) })).toBe('binlog');
    expect(emptyFromTops(setup('TRIGGERS', 1), [link(1, 5, { mvToken: null })], { at, top: new Map([[1, 0]]) })).toBe('unknown-identity');
  });
});
