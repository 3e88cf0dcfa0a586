import { describe, expect, it } from 'vitest';
import { BULK_HOLD_MS, DoorbellLanes } from '../../functions/core/lanes.ts';

function lanesAt(start: number, ringsPerSecond = 3) {
  const clock = { now: start };
  return { clock, lanes: new DoorbellLanes({ ringsPerSecond, now: () => clock.now }) };
}

describe('DoorbellLanes', () => {
  it("keeps a tenant's rings in the main lane up to its limit in one second, and sends the rest to the bulk lane", () => {
    const { lanes } = lanesAt(10_000);

    const seen = Array.from({ length: 5 }, () => lanes.laneFor('ten_a'));

    expect(seen.map((s) => s.lane)).toEqual(['main', 'main', 'main', 'bulk', 'bulk']);
    expect(seen.map((s) => s.entered)).toEqual([false, false, false, true, false]);
  });

  it("counts each tenant on its own: one tenant's flood moves no other tenant", () => {
    const { lanes } = lanesAt(10_000);
    for (let i = 0; i < 10; i++) lanes.laneFor('ten_noisy');

    expect(lanes.laneFor('ten_calm')).toEqual({ lane: 'main', entered: false });
    expect(lanes.laneFor('ten_noisy').lane).toBe('bulk');
  });

  it('counts anew each second: the limit spread over seconds stays in the main lane', () => {
    const { clock, lanes } = lanesAt(10_000);
    const seen: string[] = [];
    for (let second = 0; second < 4; second++) {
      clock.now = 10_000 + second * 1_000 + 999;
      for (let i = 0; i < 3; i++) seen.push(lanes.laneFor('ten_a').lane);
    }

    expect(seen.every((lane) => lane === 'main')).toBe(true);
  });

  it('keeps the tenant in the bulk lane until BULK_HOLD_MS pass without a second over the limit, then lets it back', () => {
    const { clock, lanes } = lanesAt(10_000);
    for (let i = 0; i < 4; i++) lanes.laneFor('ten_a');

    clock.now = 10_000 + BULK_HOLD_MS - 1;
    expect(lanes.laneFor('ten_a').lane).toBe('bulk');
    clock.now = 10_000 + BULK_HOLD_MS;
    expect(lanes.laneFor('ten_a')).toEqual({ lane: 'main', entered: false });
  });

  it('holds it longer while its seconds stay over the limit, and reports the entry once per stay', () => {
    const { clock, lanes } = lanesAt(10_000);
    const entries: number[] = [];
    for (let second = 0; second < 30; second++) {
      clock.now = 10_000 + second * 1_000;
      for (let i = 0; i < 5; i++) if (lanes.laneFor('ten_a').entered) entries.push(second);
    }

    clock.now = 10_000 + 29 * 1_000 + BULK_HOLD_MS - 1;
    expect(lanes.laneFor('ten_a').lane).toBe('bulk');
    expect(entries).toEqual([0]);
  });
});
