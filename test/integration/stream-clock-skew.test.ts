/**
 * A stream entry's position is stamped by the distributor's clock and served by the
 * API's, which run on other containers: Lambda's clocks are NTP-synced but not equal,
 * a second or two apart. An append whose instance's clock is behind the reader's
 * must still never land behind a token the reader already handed out.
 */
import { describe, expect, it } from 'vitest';
import { publish } from '../../functions/app/ingest.ts';
import { pollStream, type StreamDeps } from '../../functions/app/streams.ts';
import type { DeliveredEvent } from '../../functions/core/model.ts';
import { distributorAt, ingestAt, streamRig } from '../support/streams.ts';

const rig = streamRig();

describe('a stream read on a clock ahead of the distributor', () => {
  it('gets every event, with the clocks 2 s apart and an append that takes 0.6 s', async () => {
    let clock = Date.now();
    const SKEW_MS = 2_000;
    const distributorNow = () => clock;
    const readerNow = () => clock + SKEW_MS;
    const k = { tenantId: 'ten_skew', resource: 'doc:1' };
    const reader: StreamDeps = { streams: rig.streams, retentionDays: 7, now: readerNow };
    const poll = (token: string | undefined) => pollStream(reader, k.tenantId, k.resource, token);
    const start = await poll(undefined);
    let token = start.sync;
    let id = 0;
    await publish(
      ingestAt(rig, distributorNow, () => `evt_skew${++id}`),
      k.tenantId,
      [{ resource: k.resource, parents: [], type: 'a.b', data: { n: 1 }, idempotencyKey: undefined }],
    );
    // The append takes 0.6 s (a throttled batch retried); the consumer polls meanwhile.
    const distributor = distributorAt(rig, distributorNow, {
      streams: {
        active: (tenantId, resource, at) => rig.streams.active(tenantId, resource, at),
        append: async (tenantId, resource, entries, at) => {
          clock += 600;
          const meanwhile = await poll(token);
          expect(meanwhile.status).toBe(200);
          token = meanwhile.sync;
          await rig.streams.append(tenantId, resource, entries, at);
        },
      },
    });
    expect(await distributor.runTurn(k, 'w')).toMatchObject({ outcome: 'idle', distributed: 1 });

    // Later, once everything has settled on every clock, the consumer reads on.
    const seen: DeliveredEvent[] = [];
    for (let i = 0; i < 3; i++) {
      clock += 5_000;
      const page = await poll(token);
      expect(page.status).toBe(200);
      seen.push(...(page as { data: DeliveredEvent[] }).data);
      token = page.sync;
    }
    expect(seen.map((e) => e.data)).toEqual([{ n: 1 }]);
  });
});
