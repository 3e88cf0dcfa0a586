import { describe, expect, it } from 'vitest';
import { LogTally } from '../../functions/core/telemetry.ts';

describe('LogTally', () => {
  it("answers a key's counts at its first note, then once an interval with everything counted since", () => {
    const tally = new LogTally(60_000);

    expect(tally.note('a', 0, { x: 1 })).toEqual({ x: 1 });
    expect(tally.note('a', 10_000, { x: 2, y: 1 })).toBeUndefined();
    expect(tally.note('b', 20_000)).toEqual({});
    expect(tally.note('a', 59_999, { x: 1 })).toBeUndefined();
    expect(tally.note('a', 60_000, { y: 1 })).toEqual({ x: 3, y: 2 });
    expect(tally.note('a', 61_000)).toBeUndefined();
  });

  it('forgets every key when a new one finds its memory full', () => {
    const tally = new LogTally(60_000, 2);
    tally.note('a', 0);
    tally.note('b', 0);

    // 'a' is still remembered: not due.
    expect(tally.note('a', 1_000)).toBeUndefined();
    // 'c' finds the memory full: all forgotten, so 'a' is due again at once.
    expect(tally.note('c', 1_000)).toEqual({});
    expect(tally.note('a', 1_000)).toEqual({});
  });
});
