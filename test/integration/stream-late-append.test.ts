/**
 * A stream entry's position is the time the distributor stamped it, and a reader
 * serves positions up to 2 s before its own clock (SPEC §3 Event streams). An append
 * that lands later than that (throttled batches retried, a stalled container) could
 * sit behind a token a reader already holds: the distributor writes it again at a
 * fresh position, so the stream still serves every event.
 */
import { describe, expect, it } from 'vitest';
import { publish } from '../../functions/app/ingest.ts';
import { pollStream, STREAM_SETTLE_MS, type StreamDeps } from '../../functions/app/streams.ts';
import type { DeliveredEvent } from '../../functions/core/model.ts';
import { distributorAt, ingestAt, streamRig } from '../support/streams.ts';

const rig = streamRig();

describe('a stream append that lands late', () => {
  it('is written again at a fresh position, so a reader that moved past the first one still gets every event', async () => {
    let clock = Date.now();
    const now = () => clock;
    const k = { tenantId: 'ten_late', resource: 'doc:1' };
    const reader: StreamDeps = { streams: rig.streams, retentionDays: 7, now };
    const poll = async (token: string | undefined) => {
      const page = await pollStream(reader, k.tenantId, k.resource, token);
      return page;
    };
    // A consumer starts the stream, then two events are accepted on its resource.
    const start = await poll(undefined);
    let token = start.sync;
    let id = 0;
    await publish(
      ingestAt(rig, now, () => `evt_late${++id}`),
      k.tenantId,
      [1, 2].map((n) => ({ resource: k.resource, parents: [], type: 'a.b', data: { n }, idempotencyKey: undefined })),
    );
    // The first append is slow: before it lands, the consumer polls past its position.
    const counted: string[] = [];
    let appends = 0;
    const distributor = distributorAt(rig, now, {
      streams: {
        active: (tenantId, resource, at) => rig.streams.active(tenantId, resource, at),
        append: async (tenantId, resource, entries, at) => {
          if (++appends === 1) {
            clock += STREAM_SETTLE_MS + 500;
            const passed = await poll(token);
            expect(passed).toMatchObject({ status: 200, data: [] });
            token = passed.sync;
          }
          await rig.streams.append(tenantId, resource, entries, at);
        },
      },
      metrics: { count: (name) => void counted.push(name) },
    });
    expect(await distributor.runTurn(k, 'w')).toMatchObject({ outcome: 'idle', distributed: 2 });
    expect(appends).toBe(2);
    expect(counted).toContain('StreamAppendsLate');

    // Once the fresh copy has settled, the consumer's next page has both events.
    clock += STREAM_SETTLE_MS + 1;
    const page = await poll(token);
    expect(page.status).toBe(200);
    const events = (page as { data: DeliveredEvent[] }).data;
    expect(events.map((e) => [e.seq, e.data])).toEqual([
      [1, { n: 1 }],
      [2, { n: 2 }],
    ]);
  });
});
