import { describe, expect, it } from 'vitest';
import { liftRecheck, releasedSince } from '../../functions/core/switches.ts';

describe('the recheck after a hold under a switch', () => {
  it('answers for every hold of its window of the switch cache, and runs a margin past its end', () => {
    expect(liftRecheck(10_000, 5_000, 1_000)).toEqual({ heldBefore: 15_000, delaySeconds: 6 });
    expect(liftRecheck(14_999, 5_000, 1_000)).toEqual({ heldBefore: 15_000, delaySeconds: 2 });
    expect(liftRecheck(14_100, 500, 1_000)).toEqual({ heldBefore: 14_500, delaySeconds: 2 });
    // SQS delays a message 15 minutes at most.
    expect(liftRecheck(0, 3_600_000, 1_000).delaySeconds).toBe(900);
  });

  it('starts no release when one began after the holds it answers for (past the margin for clocks)', () => {
    expect(releasedSince(16_001, 15_000, 1_000)).toBe(true);
    expect(releasedSince(16_000, 15_000, 1_000)).toBe(false);
    expect(releasedSince(14_000, 15_000, 1_000)).toBe(false);
    expect(releasedSince(undefined, 15_000, 1_000)).toBe(false);
  });
});
