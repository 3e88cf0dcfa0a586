/**
 * A stream nobody polls for the retention period expires. The API's clock and a
 * distributor's are a second or two apart (STREAM_CLOCKS_APART_MS): a distributor on a
 * clock ahead finds the stream expired, and appends none of its events, while the API,
 * on a clock behind, may still find it on time. A poll answered 200 then would let the
 * consumer's token go on past events the stream never got. So the API takes a stream
 * for expired that margin before its record does (the record is kept that much longer):
 * a poll that may come after a distributor skipped the stream is answered 412 (start
 * again), and the stream it starts anew is appended to by that distributor's next turn.
 */
import { describe, expect, it } from 'vitest';
import { SubscriptionCache } from '../../functions/adapters/subscription-cache.ts';
import { publish } from '../../functions/app/ingest.ts';
import { pollStream, STREAM_SETTLE_MS } from '../../functions/app/streams.ts';
import { distributorAt, ingestAt, streamRig } from '../support/streams.ts';

const rig = streamRig();
const DAY = 86_400_000;

describe('a stream polled just before it expires, on a clock behind the distributor', () => {
  it('is started again (412) when a distributor found it expired, and appended to again by that distributor', async () => {
    const SKEW_MS = 2_000;
    const k = { tenantId: 'ten_exp', resource: 'doc:1' };
    const at = (now: number) => ({ streams: rig.streams, retentionDays: 7, now: () => now });
    const event = (id: string, now: number) =>
      publish(
        ingestAt(
          rig,
          () => now,
          () => id,
        ),
        k.tenantId,
        [{ resource: k.resource, parents: [], type: 'a.b', data: id, idempotencyKey: undefined }],
      );
    const t0 = Date.now() - 7 * DAY;
    const start = await pollStream(at(t0), k.tenantId, k.resource, undefined);
    const expiresAt = (await rig.streams.streamExpiry(k.tenantId, k.resource)) ?? 0;
    const cache = new SubscriptionCache({
      client: rig.client,
      controlTable: rig.control,
      lookups: { onResource: async () => [], streamExpiry: (t, r) => rig.streams.streamExpiry(t, r) },
    });
    // A second past the expiry on the distributor's clock, nobody having polled: its turn
    // appends the event to no stream.
    await event('evt_exp1', expiresAt + 900);
    expect(await distributorAt(rig, () => expiresAt + 1_000, { lookupCache: cache }).runTurn(k, 'w')).toMatchObject({ distributed: 1 });

    // The consumer polls at that same moment, on the API's clock 2 s behind: its token
    // must not go on, since the event is not in the stream.
    const apiNow = expiresAt + 1_000 - SKEW_MS;
    const poll = await pollStream(at(apiNow), k.tenantId, k.resource, start.sync);
    expect(poll.status).toBe(412);

    // The distributor's next turn appends to the stream started anew, which the consumer reads.
    await event('evt_exp2', expiresAt + 1_900);
    expect(await distributorAt(rig, () => expiresAt + 2_000, { lookupCache: cache }).runTurn(k, 'w')).toMatchObject({ distributed: 1 });
    const page = await pollStream(at(expiresAt + 2_000 + STREAM_SETTLE_MS + 1), k.tenantId, k.resource, poll.sync);
    expect(page).toMatchObject({ status: 200, data: [{ id: 'evt_exp2', seq: 2 }] });
  });
});
