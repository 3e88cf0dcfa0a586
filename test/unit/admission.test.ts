import { describe, expect, it } from 'vitest';
import { advanceTat, decideAdmission, emissionInterval, QUEUE_FULL_RETRY_MS, rateStep, tatLimit } from '../../functions/core/admission.ts';

const limits = { cap: 1_000, ratePerSecond: 100, burst: 200 };
const NOW = 1_000_000;

describe('per-object admission (GCRA token bucket and queue cap)', () => {
  it('admits a full burst into a new object', () => {
    expect(decideAdmission({ depth: 0, tat: undefined }, 200, limits, NOW)).toEqual({ admit: 200, reason: undefined, retryAfterMs: 0 });
  });

  it('admits only what is left of the burst, then says when the next token comes', () => {
    // 150 events just went in: tat = now + 150 × 10 ms.
    const tat = advanceTat(undefined, 150, NOW, limits);
    expect(tat).toBe(NOW + 1_500);
    const decision = decideAdmission({ depth: 150, tat }, 100, limits, NOW);
    expect(decision).toMatchObject({ admit: 50, reason: 'rate_limited' });
    const empty = decideAdmission({ depth: 200, tat: advanceTat(tat, 50, NOW, limits) }, 1, limits, NOW);
    expect(empty).toEqual({ admit: 0, reason: 'rate_limited', retryAfterMs: 10 });
  });

  it('refills at the rate: after one second, 100 more', () => {
    const tat = advanceTat(undefined, 200, NOW, limits);
    expect(decideAdmission({ depth: 0, tat }, 200, limits, NOW + 1_000).admit).toBe(100);
    expect(decideAdmission({ depth: 0, tat }, 200, limits, NOW + 60_000).admit).toBe(200);
  });

  it('sustains exactly the rate over time', () => {
    let tat: number | undefined;
    let admitted = 0;
    for (let ms = 0; ms < 10_000; ms += 5) {
      const d = decideAdmission({ depth: 0, tat }, 1, limits, NOW + ms);
      if (d.admit === 1) {
        tat = advanceTat(tat, 1, NOW + ms, limits);
        admitted++;
      }
    }
    // The burst (200) plus 100/s for 10 s, give or take one token.
    expect(admitted).toBeGreaterThanOrEqual(1_199);
    expect(admitted).toBeLessThanOrEqual(1_201);
  });

  it('takes no fewer than a quarter of a second of the rate from a request it cannot take whole', () => {
    expect(rateStep(50, limits)).toBe(25);
    expect(rateStep(3, limits)).toBe(3);
    // Ten tokens left: a request of 50 waits until there are 25 (150 ms), one of 3 enters whole.
    const tat = NOW + 1_900;
    expect(decideAdmission({ depth: 0, tat }, 50, limits, NOW)).toEqual({ admit: 0, reason: 'rate_limited', retryAfterMs: 150 });
    expect(decideAdmission({ depth: 0, tat }, 3, limits, NOW).admit).toBe(3);
    expect(decideAdmission({ depth: 0, tat }, 50, limits, NOW + 150)).toMatchObject({ admit: 25, reason: 'rate_limited' });
  });

  it('reports queue_full when the cap is what binds', () => {
    expect(decideAdmission({ depth: 990, tat: undefined }, 50, limits, NOW)).toEqual({
      admit: 10,
      reason: 'queue_full',
      retryAfterMs: QUEUE_FULL_RETRY_MS,
    });
    expect(decideAdmission({ depth: 1_000, tat: undefined }, 1, limits, NOW).admit).toBe(0);
  });

  it('bounds the busy-form write so the bucket can never go below empty', () => {
    // A busy write of n events is allowed while tat ≤ tatLimit(n): tat after it ≤ now + burst × T.
    const n = 30;
    expect(tatLimit(n, NOW, limits) + n * emissionInterval(limits)).toBe(NOW + limits.burst * emissionInterval(limits));
  });
});
