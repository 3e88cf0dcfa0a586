import { describe, expect, it } from 'vitest';
import { newCounts, recordInvocation } from '../../bench/accounting.ts';
import { costPerMillion, PRICES } from '../../bench/cost.ts';

describe('benchmark cost model', () => {
  it('sums invocations and their durations per function', () => {
    const counts = newCounts();
    recordInvocation(counts, 'api', 12);
    recordInvocation(counts, 'api', 8);
    expect(counts.invocations.api).toEqual({ count: 2, ms: 20 });
  });

  it('prices each service per million delivered events', () => {
    const counts = newCounts();
    counts.wru = 3_000_000;
    counts.rru = 2_000_000;
    counts.sqsStandardRequests = 1_000_000;
    counts.sqsFifoRequests = 200_000;
    counts.invocations.delivery = { count: 100_000, ms: 100_000 * 20 };
    const cost = costPerMillion(counts, 1_000_000, 100_000, 0);
    expect(cost.api_gateway).toBeCloseTo(0.35, 3);
    expect(cost.dynamodb).toBeCloseTo(3 * PRICES.dynamoWruPerMillion + 2 * PRICES.dynamoRruPerMillion, 3);
    expect(cost.sqs).toBeCloseTo(0.4 + 0.1, 3);
    // 100,000 invocations of 20 ms at 0.5 GB: $0.02 + 1,000 GB-s.
    expect(cost.lambda).toBeCloseTo(0.02 + 1_000 * PRICES.lambdaArmPerGbSecond, 3);
    expect(cost.total).toBeCloseTo(cost.api_gateway + cost.lambda + cost.dynamodb + cost.sqs, 2);
  });
});
