import { describe, expect, it } from 'vitest';
import { firstTryTenant, percentile, type StageSample, stageSpread } from '../../bench/stages.ts';

describe('benchmark stages', () => {
  it('takes percentiles by nearest rank, and none of nothing', () => {
    const values = Array.from({ length: 100 }, (_, i) => 100 - i);
    // The p-th percentile is the smallest value that p% of the values do not exceed:
    // of 1..100, the p99 is 99 (the slowest 1% is the 100 alone), not the maximum.
    expect([percentile(values, 50), percentile(values, 99), percentile(values, 100), percentile(values, 0)]).toEqual([50, 99, 100, 1]);
    expect([percentile([7], 99), percentile([1, 2, 3], 50), percentile([1, 2, 3, 4], 50)]).toEqual([7, 2, 2]);
    expect(percentile([], 99)).toBeNull();
  });

  it("names a doorbell's tenant and a first attempt's, but not what waits on purpose", () => {
    expect(firstTryTenant('Distribute', JSON.stringify({ tenant: 'ten_a', resource: 'r:1' }))).toBe('ten_a');
    expect(firstTryTenant('DistributeBulk', JSON.stringify({ tenant: 'ten_c', resource: 'r:1', bulk: true }))).toBe('ten_c');
    const delivery = { deliveryId: 'msg_1', tenantId: 'ten_b', webhookId: 'wh_1', events: [], attempt: 1 };
    expect(firstTryTenant('Deliver', JSON.stringify(delivery))).toBe('ten_b');
    expect(firstTryTenant('Deliver', JSON.stringify({ ...delivery, attempt: 2 }))).toBeUndefined();
    expect(firstTryTenant('Deliver', JSON.stringify({ ...delivery, notBefore: 1 }))).toBeUndefined();
    expect(firstTryTenant('Deliver', JSON.stringify({ kind: 'probe', tenantId: 'ten_b', webhookId: 'wh_1', token: 't' }))).toBeUndefined();
    expect(firstTryTenant('Deliver', 'not json')).toBeUndefined();
  });

  it("splits a window by stage: the tenant's own waits, everyone's invocations", () => {
    const samples: StageSample[] = [
      { stage: 'doorbell_wait', tenant: 'ten_a', at: 10, ms: 2 },
      { stage: 'doorbell_wait', tenant: 'ten_b', at: 10, ms: 900 },
      { stage: 'distributor_run', at: 11, ms: 30 },
      { stage: 'delivery_wait', tenant: 'ten_a', at: 12, ms: 5 },
      { stage: 'delivery_run', at: 13, ms: 20 },
      { stage: 'delivery_run', at: 99, ms: 10_000 },
    ];
    expect(stageSpread(samples, 'ten_a', 0, 50)).toEqual({
      doorbell_wait: { p50: 2, p99: 2 },
      distributor_run: { p50: 30, p99: 30 },
      delivery_wait: { p50: 5, p99: 5 },
      delivery_run: { p50: 20, p99: 20 },
    });
  });
});
