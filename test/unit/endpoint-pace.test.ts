import { describe, expect, it } from 'vitest';
import { PACE_BURST_MS, PACE_GRACE_MS, paceInterval, paceSendAt, paceStillHeld } from '../../functions/core/endpoint-pace.ts';

describe("an endpoint's pace", () => {
  it('gives each POST 1000 / rate ms of the endpoint', () => {
    expect([paceInterval(50), paceInterval(4), paceInterval(1)]).toEqual([20, 250, 1000]);
  });

  it('sends at once what starts within a second of now, and the rest when its share starts less that second', () => {
    const now = 1_000_000;
    expect(paceSendAt(now - 5_000, now)).toBe(now);
    expect(paceSendAt(now + PACE_BURST_MS, now)).toBe(now);
    expect(paceSendAt(now + PACE_BURST_MS + 20, now)).toBe(now + 20);
    expect(paceSendAt(now + 60_000, now)).toBe(now + 60_000 - PACE_BURST_MS);
  });

  it('lets a delivery use the time it was given while it is no later than the grace, and never one it was not given', () => {
    const now = 1_000_000;
    expect(paceStillHeld(now + 300, now)).toBe(true);
    expect(paceStillHeld(now - PACE_GRACE_MS, now)).toBe(true);
    expect(paceStillHeld(now - PACE_GRACE_MS - 1, now)).toBe(false);
    expect(paceStillHeld(undefined, now)).toBe(false);
  });
});
