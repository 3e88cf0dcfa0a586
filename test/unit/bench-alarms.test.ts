import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { watchAlarms } from '../../bench/alarms.ts';

beforeEach(() => {
  vi.useFakeTimers({ now: 0 });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('benchmark alarm watch', () => {
  it('tells an alarm already in ALARM when the watch began from one the storm fired, and counts each time one fires', () => {
    // Prepare: `slow` is in ALARM before the storm and ends before it; `storm` fires twice in it.
    let states: Record<string, 'OK' | 'ALARM'> = { slow: 'ALARM', storm: 'OK' };
    const watch = watchAlarms(() => Object.entries(states).map(([name, state]) => ({ name, state })));

    // Act
    vi.advanceTimersByTime(10_000);
    states = { slow: 'OK', storm: 'OK' };
    vi.advanceTimersByTime(10_000);
    const stormStart = Date.now();
    states = { slow: 'OK', storm: 'ALARM' };
    vi.advanceTimersByTime(3_000);
    states = { slow: 'OK', storm: 'OK' };
    vi.advanceTimersByTime(3_000);
    states = { slow: 'OK', storm: 'ALARM' };
    vi.advanceTimersByTime(3_000);
    watch.stop();

    // Assert
    expect(watch.firedSince(stormStart)).toEqual([
      { name: 'slow', after_s: -20 },
      { name: 'storm', after_s: 1 },
      { name: 'storm', after_s: 7 },
    ]);
  });
});
