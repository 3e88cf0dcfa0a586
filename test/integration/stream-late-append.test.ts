/**
 * A stream entry's position is the time the distributor stamped it, and a reader
 * serves positions up to 3 s before its own clock (SPEC §3 Event streams). An append
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

describe('appends of large events to a busy stream', () => {
  it('go in pieces stamped as each is written, so a chunk’s size alone never lands it late and fails the turn', async () => {
    let clock = Date.now();
    const now = () => clock;
    const tenantId = 'ten_big';
    const parent = 'folder:1';
    const reader: StreamDeps = { streams: rig.streams, retentionDays: 7, now };
    const start = await pollStream(reader, tenantId, parent, undefined);
    let token = start.sync;
    // Two children of one parent with a stream, each with a request of 15 events of 60 KiB
    // (a chunk of about 900 KiB, as much as a turn reads at once).
    const children = ['doc:a', 'doc:b'];
    let id = 0;
    const data = 'x'.repeat(60 * 1024);
    for (const resource of children) {
      await publish(
        ingestAt(rig, now, () => `evt_big${++id}`),
        tenantId,
        Array.from({ length: 15 }, () => ({ resource, parents: [parent], type: 'a.b', data, idempotencyKey: undefined })),
      );
    }
    // A stream's log is one partition, written at about 1 MB a second by everyone who
    // appends to it: each append takes the time of its bytes, on a clock both turns share.
    const counted: string[] = [];
    const distributor = distributorAt(rig, now, {
      streams: {
        active: (t, resource, at) => rig.streams.active(t, resource, at),
        append: async (t, resource, entries, at) => {
          clock += Buffer.byteLength(JSON.stringify(entries)) / 1024;
          await rig.streams.append(t, resource, entries, at);
        },
      },
      metrics: { count: (name) => void counted.push(name) },
    });
    const outcomes = await Promise.all(children.map((resource) => distributor.runTurn({ tenantId, resource }, 'w')));
    expect(outcomes).toMatchObject([
      { outcome: 'idle', distributed: 15 },
      { outcome: 'idle', distributed: 15 },
    ]);
    expect(counted).not.toContain('StreamAppendsLate');

    // The stream has every event once, each child's in seq order.
    clock += STREAM_SETTLE_MS + 1;
    const read: DeliveredEvent[] = [];
    for (let pages = 0; pages < 10; pages++) {
      const page = await pollStream(reader, tenantId, parent, token);
      expect(page.status).toBe(200);
      const events = (page as { data: DeliveredEvent[] }).data;
      read.push(...events);
      token = page.sync;
      if (!(page as { has_more: boolean }).has_more) break;
    }
    for (const resource of children) {
      expect(read.filter((e) => e.resource === resource).map((e) => e.seq)).toEqual(Array.from({ length: 15 }, (_, i) => i + 1));
    }
  });
});
