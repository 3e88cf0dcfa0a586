/**
 * A stream nobody polls for the retention period expires; a poll just before that
 * pushes its expiry out without telling the distributors (no subscriptions bump),
 * since they read an expiry again once it has passed. The API's clock and a
 * distributor's are a second or two apart: a distributor that found the stream
 * expired must not keep skipping it when the API, on a clock behind, still served
 * the poll as on time.
 */
import { describe, expect, it } from 'vitest';
import { SubscriptionCache } from '../../functions/adapters/subscription-cache.ts';
import { pollStream } from '../../functions/app/streams.ts';
import { streamRig } from '../support/streams.ts';

const rig = streamRig();
const DAY = 86_400_000;

describe('a stream polled just before it expires, on a clock behind the distributor', () => {
  it('is appended to again by a distributor that found it expired a moment before', async () => {
    const SKEW_MS = 2_000;
    const k = { tenantId: 'ten_exp', resource: 'doc:1' };
    const t0 = Date.now() - 7 * DAY;
    const start = await pollStream({ streams: rig.streams, retentionDays: 7, now: () => t0 }, k.tenantId, k.resource, undefined);
    const expiresAt = t0 + 7 * DAY;
    const cache = new SubscriptionCache({
      client: rig.client,
      controlTable: rig.control,
      lookups: { onResource: async () => [], streamExpiry: (t, r) => rig.streams.streamExpiry(t, r) },
    });
    const version = await cache.version(k.tenantId);
    // A second past the expiry on the distributor's clock: nobody has polled.
    expect(await cache.streamActive(k.tenantId, k.resource, version, expiresAt + 1_000)).toBe(false);

    // The consumer polls at that same moment; the API's clock, 2 s behind, finds it on time.
    const apiNow = expiresAt + 1_000 - SKEW_MS;
    const poll = await pollStream({ streams: rig.streams, retentionDays: 7, now: () => apiNow }, k.tenantId, k.resource, start.sync);
    expect(poll.status).toBe(200);

    // The distributor's next turn must append to the stream the consumer goes on reading.
    expect(await cache.streamActive(k.tenantId, k.resource, await cache.version(k.tenantId), expiresAt + 2_000)).toBe(true);
  });
});
