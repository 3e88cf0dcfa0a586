import { describe, expect, it } from 'vitest';
import { PACE_BURST_MS, paceInterval, paceSendAt } from '../../functions/core/endpoint-pace.ts';

describe("an endpoint's pace", () => {
  it('gives each POST 1000 / rate ms of the endpoint', () => {
    expect([paceInterval(50), paceInterval(4), paceInterval(1)]).toEqual([20, 250, 1000]);
  });

  it("sends a second's worth of the rate at once and no more, then each send one share after the one before", () => {
    const now = 1_000_000;
    const interval = paceInterval(50);
    // The shares of 60 sends reserved together at `now` on a free endpoint.
    const sendAt = Array.from({ length: 60 }, (_, i) => paceSendAt(now + i * interval, now, interval));
    expect(sendAt.filter((t) => t === now)).toHaveLength(50);
    expect(sendAt.slice(50)).toEqual(Array.from({ length: 10 }, (_, i) => now + (i + 1) * interval));
  });

  it('sends at once what its share allows and at most a second ahead of a share far off', () => {
    const now = 1_000_000;
    expect(paceSendAt(now - 5_000, now, 20)).toBe(now);
    expect(paceSendAt(now + 60_000, now, 20)).toBe(now + 60_000 - PACE_BURST_MS + 20);
    // At one POST a second, nothing goes early: the burst is the one share.
    expect(paceSendAt(now + 1_000, now, 1_000)).toBe(now + 1_000);
  });
});
