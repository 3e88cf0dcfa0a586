import { describe, expect, it } from 'vitest';
import {
  FAILING_WAIT_MAX_SECONDS,
  failingWaitSeconds,
  parseRetryAfter,
  RETRY_AFTER_MAX_SECONDS,
  retryDelaySeconds,
  sqsDelay,
} from '../../functions/core/backoff.ts';
import { DEFAULT_CONFIG } from '../../functions/core/config.ts';

const policy = { scheduleSeconds: DEFAULT_CONFIG.retryScheduleSeconds, jitter: 0.2 };
const NOW = Date.parse('2026-11-22T10:00:00Z');
const status = { kind: 'status' as const };

describe('retry schedule', () => {
  it('follows the schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, then dead letter', () => {
    const noJitter = { ...policy, jitter: 0 };
    const waits = Array.from({ length: 9 }, (_, attempt) => retryDelaySeconds(noJitter, attempt, status, NOW));
    expect(waits).toEqual([0, 5, 300, 1_800, 7_200, 18_000, 36_000, 36_000, undefined]);
  });

  it('keeps jitter within ±20 %', () => {
    for (const r of [0, 0.25, 0.5, 0.75, 0.999999]) {
      const wait = retryDelaySeconds(policy, 2, status, NOW, () => r) as number;
      expect(wait).toBeGreaterThanOrEqual(240);
      expect(wait).toBeLessThanOrEqual(360);
    }
    expect(retryDelaySeconds(policy, 2, status, NOW, () => 0)).toBe(240);
    expect(retryDelaySeconds(policy, 2, status, NOW, () => 1)).toBe(360);
  });

  it('penalises timeouts and 429s by doubling the wait', () => {
    const noJitter = { ...policy, jitter: 0 };
    expect(retryDelaySeconds(noJitter, 1, { kind: 'timeout' }, NOW)).toBe(10);
    expect(retryDelaySeconds(noJitter, 1, { kind: 'throttled' }, NOW)).toBe(10);
    expect(retryDelaySeconds(noJitter, 0, { kind: 'timeout' }, NOW)).toBe(1);
    expect(retryDelaySeconds(noJitter, 1, { kind: 'connection' }, NOW)).toBe(5);
  });

  it('honours Retry-After within bounds, never waiting less than the schedule says', () => {
    const noJitter = { ...policy, jitter: 0 };
    expect(retryDelaySeconds(noJitter, 1, { kind: 'throttled', retryAfter: '120' }, NOW)).toBe(120);
    expect(retryDelaySeconds(noJitter, 1, { kind: 'throttled', retryAfter: '999999' }, NOW)).toBe(RETRY_AFTER_MAX_SECONDS);
    expect(retryDelaySeconds(noJitter, 2, { kind: 'status', retryAfter: '1' }, NOW)).toBe(300);
    expect(retryDelaySeconds(noJitter, 1, { kind: 'status', retryAfter: 'soon' }, NOW)).toBe(5);
  });

  it('reads Retry-After as seconds or as an HTTP date', () => {
    expect(parseRetryAfter('30', NOW)).toBe(30);
    expect(parseRetryAfter('Sun, 22 Nov 2026 10:01:00 GMT', NOW)).toBe(60);
    expect(parseRetryAfter('Sun, 22 Nov 2026 09:00:00 GMT', NOW)).toBe(0);
    // RFC 9110 §5.6.7: a recipient accepts all three HTTP-date formats, each in GMT.
    expect(parseRetryAfter('Sunday, 22-Nov-26 10:02:00 GMT', NOW)).toBe(120);
    expect(parseRetryAfter('Sun Nov 22 10:02:00 2026', NOW)).toBe(120);
    expect(parseRetryAfter('Sun Nov  1 10:00:00 2026', NOW)).toBe(0);
    expect(parseRetryAfter('Sun, 22 Nov 2026 10:02:00 +0100', NOW)).toBeUndefined();
    expect(parseRetryAfter('-5', NOW)).toBeUndefined();
    expect(parseRetryAfter(undefined, NOW)).toBeUndefined();
  });

  it('chains waits longer than SQS allows', () => {
    expect(sqsDelay(36_000)).toEqual({ delaySeconds: 900, remainingSeconds: 35_100 });
    expect(sqsDelay(42)).toEqual({ delaySeconds: 42, remainingSeconds: 0 });
    expect(sqsDelay(0)).toEqual({ delaySeconds: 0, remainingSeconds: 0 });
  });
});

describe("waits for a failing endpoint's attempt", () => {
  it('doubles each time in a row from the interval, up to five minutes', () => {
    const waits = Array.from({ length: 9 }, (_, n) => failingWaitSeconds(5_000, n));
    expect(waits).toEqual([5, 10, 20, 40, 80, 160, 300, 300, 300]);
    expect(FAILING_WAIT_MAX_SECONDS).toBe(300);
    expect(failingWaitSeconds(5_000, 10_000)).toBe(300);
  });
  it('is never shorter than an interval set longer than the cap', () => {
    expect(failingWaitSeconds(600_000, 0)).toBe(600);
    expect(failingWaitSeconds(600_000, 4)).toBe(600);
  });
});
