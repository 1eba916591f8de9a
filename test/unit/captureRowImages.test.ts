import { describe, expect, it } from 'vitest';
import { logRowsFor, resolveImageKeys, sameValue } from '../../src/capture/rowImages.js';

describe('binlog row images to MV-log rows', () => {
  it('maps log columns to table-map names case-insensitively and names a missing one', () => {
    expect(resolveImageKeys(['ID', 'amount'], ['id', 'Amount', 'note'])).toEqual({ keys: ['id', 'Amount'] });
    expect(resolveImageKeys(['id', 'amount'], ['id', 'amt'])).toEqual({ missing: 'amount' });
  });

  it('writes I +1, D -1, and U -1 / U +1 in event order, like the triggers', () => {
    const keys = ['id', 'a'];
    expect(logRowsFor('insert', [{ id: 1, a: 'x', other: 5 }, { id: 2, a: null }], keys)).toEqual([
      [1, 'x', 'I', 1],
      [2, null, 'I', 1],
    ]);
    expect(logRowsFor('delete', [{ id: 1, a: 'x' }], keys)).toEqual([[1, 'x', 'D', -1]]);
    expect(logRowsFor('update', [{ before: { id: 1, a: 'x' }, after: { id: 1, a: 'y' } }], keys)).toEqual([
      [1, 'x', 'U', -1],
      [1, 'y', 'U', 1],
    ]);
  });

  it('an UPDATE that changes no logged column writes nothing', () => {
    const keys = ['id', 'a'];
    expect(logRowsFor('update', [{ before: { id: 1, a: 'x', b: 1 }, after: { id: 1, a: 'x', b: 2 } }], keys)).toEqual([]);
    expect(logRowsFor('update', [{ before: { id: 1, a: null }, after: { id: 1, a: null } }], keys)).toEqual([]);
    // a primary key change is a change
    expect(logRowsFor('update', [{ before: { id: 1, a: 'x' }, after: { id: 2, a: 'x' } }], keys)).toHaveLength(2);
  });

  it('compares strings as bytes and NULL only with NULL', () => {
    expect(sameValue('a', 'A')).toBe(false);
    expect(sameValue('a', 'a ')).toBe(false);
    expect(sameValue('é', 'é')).toBe(true);
    expect(sameValue(null, null)).toBe(true);
    expect(sameValue(null, '')).toBe(false);
    expect(sameValue(0, null)).toBe(false);
    expect(sameValue(Buffer.from([1, 2]), Buffer.from([1, 2]))).toBe(true);
    expect(sameValue(Buffer.from([1, 2]), Buffer.from([1, 3]))).toBe(false);
    expect(sameValue('1.50', '1.50')).toBe(true);
  });

  it('writes a JSON value decoded to an object back as JSON text', () => {
    expect(logRowsFor('insert', [{ id: 1, j: { k: [1, 2] } }], ['id', 'j'])).toEqual([[1, '{"k":[1,2]}', 'I', 1]]);
  });
});
