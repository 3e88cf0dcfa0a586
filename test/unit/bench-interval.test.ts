import { describe, expect, it } from 'vitest';
import { p99RatioInterval, requestLatencies } from '../../bench/interval.ts';

/** `n` requests of 10 events, each event `ms` late. */
const requests = (n: number, ms: number) => Array.from({ length: n }, () => Array.from({ length: 10 }, () => ms));

describe('p99 ratio interval', () => {
  it('is exactly the ratio when every request of each window took the same time', () => {
    expect(p99RatioInterval(requests(50, 40), requests(50, 20))).toEqual({ low: 2, high: 2 });
  });

  it('holds 1 for two windows of the same requests, and is the same from the same seed', () => {
    const window = Array.from({ length: 180 }, (_, i) => Array.from({ length: 10 }, (_, j) => 20 + ((i * 7 + j * 13) % 40)));
    const interval = p99RatioInterval(window, window);
    expect(interval?.low).toBeLessThanOrEqual(1);
    expect(interval?.high).toBeGreaterThanOrEqual(1);
    expect(p99RatioInterval(window, window)).toEqual(interval);
  });

  it("is wide when a window's p99 rests on one slow request", () => {
    // 1 request of 100: its 10 events are the slowest 1%, so a resample's p99 is 100 ms
    // when it draws that request twice or more (about a quarter of them) and 20 ms otherwise.
    const window = [...requests(99, 20), ...requests(1, 100)];
    const interval = p99RatioInterval(window, window);
    expect(interval).toEqual({ low: 0.2, high: 5 });
  });

  it('says nothing of an empty window', () => {
    expect(p99RatioInterval([], requests(5, 10))).toBeNull();
    expect(p99RatioInterval(requests(5, 10), [])).toBeNull();
  });

  it("groups a label's delivered events by their request's 202, inside the window", () => {
    const events = [
      { label: 'calm', acceptedAt: 1_000, receivedAt: 1_030 },
      { label: 'calm', acceptedAt: 1_000, receivedAt: 1_050 },
      { label: 'calm', acceptedAt: 1_200, receivedAt: 1_210 },
      { label: 'calm', acceptedAt: 1_200, receivedAt: null },
      { label: 'hot', acceptedAt: 1_000, receivedAt: 1_900 },
      { label: 'calm', acceptedAt: 2_000, receivedAt: 2_001 },
    ];
    expect(requestLatencies(events, 'calm', 1_000, 2_000)).toEqual([[30, 50], [10]]);
  });
});
