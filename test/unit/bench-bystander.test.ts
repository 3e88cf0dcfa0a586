import { describe, expect, it } from 'vitest';
import { startBystander } from '../../bench/bystander.ts';
import { floodProcess } from '../../bench/flood.ts';

describe('the hot-object scenario’s bystander', () => {
  it('answers every request of the same flood 429 at once, as a usage plan refuses it, and counts them', async () => {
    const bystander = await startBystander();
    try {
      const result = await floodProcess({
        label: 'bystander',
        apiUrl: bystander.url,
        key: 'sk_test',
        resources: ['doc:hot'],
        parent: 'doc:root',
        eventsPerRequest: 50,
        requestsPerSecond: 0,
        concurrency: 4,
        durationMs: 300,
        flood: true,
      });
      expect(result.stats.requests).toBeGreaterThan(0);
      expect(await bystander.requests()).toBe(result.stats.requests);
      // Refused as the tenant's API throttle refuses: every event rejected, none failed or accepted.
      expect(result.stats).toMatchObject({
        status429: result.stats.requests,
        rejected: result.stats.requests * 50,
        accepted: 0,
        failed: 0,
      });
    } finally {
      await bystander.stop();
    }
  });
});
