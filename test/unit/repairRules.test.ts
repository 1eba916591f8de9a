import { describe, expect, it } from 'vitest';
import { planRepair, skipReason, type SkipReason } from '../../src/repair/rules.js';
import { partitionStale } from '../../src/versions/freshness.js';
import type { PartitionState, RepairInfo, VersionEntry } from '../../src/versions/types.js';

// DESIGN.md §2 "Base-table versions, freshness and repair", as table-driven facts over the pure
// rules: which repair infos are skipped and why, what a kept one writes, and when a partition is
// stale for an MV.

const entry = (partitionId: number, version: number, lastRefreshTime: number, ext = -1, files = -1): VersionEntry => ({
  partitionId,
  version,
  lastRefreshTime,
  extLastFileModifiedTime: ext,
  fileNumber: files,
});

const info = (
  partitionName: string,
  partitionId: number,
  lastVersion: number,
  newVersion: number,
  newVersionTime: number,
  lastVersionTime?: number,
): RepairInfo => ({
  partitionName,
  partitionId,
  lastVersion,
  newVersion,
  newVersionTime,
  ...(lastVersionTime !== undefined ? { lastVersionTime } : {}),
});

/** The MV's map for one table: p1 (id 11) at version 5 read at t=1000, p2 (id 12) at 7 / 2000. */
const map = () =>
  new Map<string, VersionEntry>([
    ['p1', entry(11, 5, 1000, 555, 3)],
    ['p2', entry(12, 7, 2000)],
  ]);

describe('skipReason (rule 1)', () => {
  const cases: Array<{ fact: string; entries: Map<string, VersionEntry> | undefined; info: RepairInfo; reason: SkipReason | undefined }> = [
    { fact: 'no map for the table at all (never refreshed with it)', entries: undefined, info: info('p1', 11, 5, 6, 3000), reason: 'no-table-entry' },
    { fact: 'an empty map for the table', entries: new Map(), info: info('p1', 11, 5, 6, 3000), reason: 'no-table-entry' },
    { fact: 'no entry for the partition name', entries: map(), info: info('p3', 13, 5, 6, 3000), reason: 'no-partition-entry' },
    { fact: 'the entry has another partition id (partition recreated)', entries: map(), info: info('p1', 99, 5, 6, 3000), reason: 'partition-id-mismatch' },
    { fact: 'the entry is past lastVersion (already applied / refreshed since)', entries: map(), info: info('p1', 11, 4, 5, 3000), reason: 'version-behind' },
    { fact: 'the entry is before lastVersion (an earlier chain link is missing)', entries: map(), info: info('p1', 11, 6, 7, 3000), reason: 'version-ahead' },
    { fact: 'lastVersionTime newer than the entry\'s lastRefreshTime', entries: map(), info: info('p1', 11, 5, 6, 3000, 1001), reason: 'last-version-time-newer' },
    { fact: 'lastVersionTime equal to lastRefreshTime: kept', entries: map(), info: info('p1', 11, 5, 6, 3000, 1000), reason: undefined },
    { fact: 'lastVersionTime older than lastRefreshTime: kept', entries: map(), info: info('p1', 11, 5, 6, 3000, 999), reason: undefined },
    { fact: 'no lastVersionTime: kept on id and version alone', entries: map(), info: info('p2', 12, 7, 8, 3000), reason: undefined },
    // The checks run in the rule's order: the id is compared before the version, the version
    // before the time.
    { fact: 'id and version both wrong: the id is reported', entries: map(), info: info('p1', 99, 1, 2, 3000), reason: 'partition-id-mismatch' },
    { fact: 'version and time both wrong: the version is reported', entries: map(), info: info('p1', 11, 6, 7, 3000, 9999), reason: 'version-ahead' },
  ];
  it.each(cases)('$fact -> $reason', ({ entries, info: i, reason }) => {
    expect(skipReason(entries, i)).toBe(reason);
  });
});

describe('planRepair', () => {
  it('a kept info becomes {partitionId, newVersion, lastRefreshTime=newVersionTime, -1, -1}', () => {
    const plan = planRepair(map(), [info('p1', 11, 5, 100, 4242, 1000)]);
    expect(plan.skipped).toEqual([]);
    // The external-table fields are reset (p1 had 555 / 3).
    expect([...plan.updates]).toEqual([['p1', entry(11, 100, 4242, -1, -1)]]);
    expect(plan.maxNewVersionTime).toBe(4242);
  });

  it('every info skipped: no updates and no new refresh time (rule 2: nothing to write)', () => {
    const infos = [info('p3', 13, 5, 6, 3000), info('p1', 11, 4, 5, 3000), info('p2', 99, 7, 8, 3000)];
    const plan = planRepair(map(), infos);
    expect(plan.updates.size).toBe(0);
    expect(plan.maxNewVersionTime).toBeUndefined();
    expect(plan.skipped).toEqual([
      { info: infos[0], reason: 'no-partition-entry' },
      { info: infos[1], reason: 'version-behind' },
      { info: infos[2], reason: 'partition-id-mismatch' },
    ]);
  });

  it('no map for the table: every info skipped as no-table-entry', () => {
    const infos = [info('p1', 11, 5, 6, 3000), info('p2', 12, 7, 8, 3000)];
    const plan = planRepair(undefined, infos);
    expect(plan.updates.size).toBe(0);
    expect(plan.skipped.map((s) => s.reason)).toEqual(['no-table-entry', 'no-table-entry']);
    expect(plan.maxNewVersionTime).toBeUndefined();
  });

  it('a later info for the same partition name wins', () => {
    const plan = planRepair(map(), [info('p1', 11, 5, 6, 3000), info('p1', 11, 5, 9, 2500)]);
    expect(plan.skipped).toEqual([]);
    expect([...plan.updates]).toEqual([['p1', entry(11, 9, 2500)]]);
  });

  it('maxNewVersionTime is the max newVersionTime over the kept infos only', () => {
    const plan = planRepair(map(), [
      info('p1', 11, 5, 6, 3000),
      info('p2', 12, 7, 8, 5000),
      info('p3', 13, 1, 2, 9000), // skipped: no entry; its time does not count
      info('p2', 99, 7, 8, 8000), // skipped: id mismatch
    ]);
    expect(plan.updates.size).toBe(2);
    expect(plan.maxNewVersionTime).toBe(5000);
    expect(plan.skipped.map((s) => s.reason)).toEqual(['no-partition-entry', 'partition-id-mismatch']);
  });

  it('a mix: kept and skipped infos are split, kept ones keyed by partition name', () => {
    const plan = planRepair(map(), [info('p2', 12, 7, 8, 3000), info('p1', 11, 5, 6, 2000, 1500)]);
    expect([...plan.updates.keys()]).toEqual(['p2']);
    expect(plan.updates.get('p2')).toEqual(entry(12, 8, 3000));
    expect(plan.skipped).toEqual([{ info: info('p1', 11, 5, 6, 2000, 1500), reason: 'last-version-time-newer' }]);
    expect(plan.maxNewVersionTime).toBe(3000);
  });

  it('a chain in one batch: the first link applies, the second is version-ahead (checked against the map as it is)', () => {
    const first = info('p1', 11, 5, 6, 3000);
    const second = info('p1', 11, 6, 7, 4000);
    const plan = planRepair(map(), [first, second]);
    expect([...plan.updates]).toEqual([['p1', entry(11, 6, 3000)]]);
    expect(plan.skipped).toEqual([{ info: second, reason: 'version-ahead' }]);
    expect(plan.maxNewVersionTime).toBe(3000);

    // Once the first link has landed, the second applies.
    const after = map();
    after.set('p1', plan.updates.get('p1')!);
    const next = planRepair(after, [second]);
    expect([...next.updates]).toEqual([['p1', entry(11, 7, 4000)]]);
    expect(next.skipped).toEqual([]);
  });

  it('does not modify the map it is given', () => {
    const m = map();
    const before = JSON.stringify([...m]);
    planRepair(m, [info('p1', 11, 5, 6, 3000)]);
    expect(JSON.stringify([...m])).toBe(before);
  });
});

describe('partitionStale (freshness)', () => {
  const part = (partitionId: number, version: number, versionTime: number): PartitionState => ({
    partitionName: 'p1',
    partitionId,
    version,
    versionTime,
    dataVersion: version,
  });
  const e = entry(11, 5, 1000);
  const cases: Array<{ fact: string; p: PartitionState; entry: VersionEntry | undefined; stale: boolean }> = [
    { fact: 'missing entry', p: part(11, 5, 1000), entry: undefined, stale: true },
    { fact: 'missing entry, version 2', p: part(11, 2, 0), entry: undefined, stale: true },
    { fact: 'missing entry, but version 1 (an empty partition)', p: part(11, 1, 1000), entry: undefined, stale: false },
    { fact: 'partition id differs', p: part(12, 5, 1000), entry: e, stale: true },
    { fact: 'version newer', p: part(11, 6, 1000), entry: e, stale: true },
    { fact: 'version older (differs)', p: part(11, 4, 1000), entry: e, stale: true },
    { fact: 'versionTime newer than lastRefreshTime', p: part(11, 5, 1001), entry: e, stale: true },
    { fact: 'versionTime older than lastRefreshTime', p: part(11, 5, 999), entry: e, stale: false },
    { fact: 'id, version and time equal', p: part(11, 5, 1000), entry: e, stale: false },
    { fact: 'entry present for a version-1 partition, version differs', p: part(11, 1, 1000), entry: e, stale: true },
  ];
  it.each(cases)('$fact -> stale=$stale', ({ p, entry: en, stale }) => {
    expect(partitionStale(p, en)).toBe(stale);
  });
});
