/**
 * A chunk published again after its holder died gives each event the seq its plan gave,
 * even when an event expired after the plan and DynamoDB's TTL deleted its item: that
 * seq is a hole a `sluice.gap` marker announces, not a shift of every later seq.
 */
import { DeleteCommand } from '@aws-sdk/lib-dynamodb';
import { beforeAll, expect, it } from 'vitest';
import { QueueStore, slotItemKey } from '../../functions/adapters/queue-store.ts';
import { NO_SWITCHES } from '../../functions/adapters/switch-store.ts';
import { Distributor } from '../../functions/app/distributor.ts';
import { buildConfig } from '../../functions/core/config.ts';
import type { DeliveredEvent, GapMarker, ObjectKey } from '../../functions/core/model.ts';
import { NO_LOGS, NO_METRICS } from '../../functions/core/telemetry.ts';
import { withEventsTable } from '../support/events-table.ts';
import { webhookFixture } from '../support/fixtures.ts';

const events = withEventsTable();
let store: QueueStore;

beforeAll(() => {
  store = new QueueStore({ client: events.client, tableName: events.table, retentionDays: 7 });
});

type Sent = DeliveredEvent | GapMarker;

function distributor(now: () => number, send: (events: Sent[]) => void, config = buildConfig({})) {
  return new Distributor({
    queues: store,
    switches: NO_SWITCHES,
    subscriptions: { onResource: async () => [webhookFixture({ id: 'wh_one', tenantId: 'ten_ttl' })] },
    deliveries: { send: async (messages) => send(messages.flatMap((m) => m.events as Sent[])) },
    doorbell: { ring: async () => undefined },
    config,
    metrics: NO_METRICS,
    logger: NO_LOGS,
    now,
    sleep: async () => undefined,
  });
}

/**
 * Three events in one reservation of `key`, written under a 7-day retention: slot 1
 * fresh, slot 2 expiring 10 s after `t0` (a week-old backlog, a pause just lifted), slot 3 fresh.
 */
async function queueOneNearExpiry(key: ObjectKey, t0: number): Promise<void> {
  const reservedAts = [t0 - 1_000, t0 - 7 * 86_400_000 + 10_000, t0 - 500];
  const reservation = await store.reserve(key, 3, { cap: 100, ratePerSecond: 1e6, burst: 1e6 }, t0 - 1_000, false);
  if (!reservation) throw new Error('refused');
  for (const [i, reservedAt] of reservedAts.entries()) {
    const event = {
      id: `evt_${i + 1}`,
      slot: reservation.firstSlot + i,
      input: { resource: key.resource, parents: [], type: 'a.b', data: { n: i + 1 }, idempotencyKey: undefined },
      createdAt: new Date(reservedAt).toISOString(),
    };
    await store.writeEventsOf([{ key, events: [event], reservedAt }]);
  }
}

it('keeps each event its planned seq, and marks the one TTL deleted, when a chunk is published again', async () => {
  const key: ObjectKey = { tenantId: 'ten_ttl', resource: 'obj:1' };
  const t0 = Date.now();
  await queueOneNearExpiry(key, t0);
  // The first holder plans slots 1-3 at t0 (all live; slot 2 near its expiry, so the
  // chunk is committed first, with a turn record) and dies publishing.
  const first = distributor(
    () => t0,
    () => {
      throw new Error('the holder died');
    },
  );
  await expect(first.runTurn(key, 'dies')).rejects.toThrow('the holder died');
  expect(await store.readMeta(key)).toMatchObject({ cursor: 3, seq: 3, turn: { fromSlot: 1, toSlot: 3, firstSeq: 1 } });
  // Slot 2 expired 10 s after t0; DynamoDB's TTL deletes its item.
  await events.client.send(new DeleteCommand({ TableName: events.table, Key: slotItemKey(key, 2) }));

  // Its doorbell comes back after the visibility timeout: the next holder publishes the chunk again.
  const sent: Sent[] = [];
  await distributor(
    () => t0 + 130_000,
    (events) => void sent.push(...events),
  ).runTurn(key, 'next');

  const delivered = sent.filter((e): e is DeliveredEvent => e.type !== 'sluice.gap').map((e) => `${e.id}#${e.seq}`);
  expect(delivered).toEqual(['evt_1#1', 'evt_3#3']);
  expect(sent.filter((e) => e.type === 'sluice.gap')).toMatchObject([{ resource: 'obj:1', data: { dropped: 1, reason: 'retention' } }]);
});

it("gives the marker of a republished chunk an id of its own, not that of the next chunk's marker", async () => {
  const key: ObjectKey = { tenantId: 'ten_ttl', resource: 'obj:2' };
  const day = 86_400_000;
  const t0 = Date.now();
  const limits = { cap: 100, ratePerSecond: 1e6, burst: 1e6 };
  const write = async (slot: number, n: number, reservedAt: number) =>
    store.writeEventsOf([
      {
        key,
        events: [
          {
            id: `evt_${n}`,
            slot,
            input: { resource: key.resource, parents: [], type: 'a.b', data: { n }, idempotencyKey: undefined },
            createdAt: new Date(reservedAt).toISOString(),
          },
        ],
        reservedAt,
      },
    ]);
  // Slot 1 fresh, slot 2 expiring 10 s after t0: the chunk is committed first, with a turn record.
  const reservation = await store.reserve(key, 2, limits, t0 - 1_000, false);
  if (!reservation) throw new Error('refused');
  await write(reservation.firstSlot, 1, t0 - 1_000);
  await write(reservation.firstSlot + 1, 2, t0 - 7 * day + 10_000);
  await expect(
    distributor(
      () => t0,
      () => {
        throw new Error('the holder died');
      },
    ).runTurn(key, 'dies'),
  ).rejects.toThrow('the holder died');
  expect(await store.readMeta(key)).toMatchObject({ cursor: 2, turn: { fromSlot: 1, toSlot: 2 } });
  // Meanwhile slot 3 was written (its event from the same old backlog, expiring 20 s after t0),
  // and slot 2's item is deleted by the TTL.
  const later = await store.reserve(key, 1, limits, t0, false);
  if (!later) throw new Error('refused');
  await write(later.firstSlot, 3, t0 - 7 * day + 20_000);
  await events.client.send(new DeleteCommand({ TableName: events.table, Key: slotItemKey(key, 2) }));

  const sent: Sent[] = [];
  await distributor(
    () => t0 + 130_000,
    (events) => void sent.push(...events),
  ).runTurn(key, 'next');

  // Two events lost, each announced: the republished chunk's (slot 2) and the next chunk's (slot 3).
  const markers = sent.filter((e): e is GapMarker => e.type === 'sluice.gap');
  expect(markers.map((m) => m.data.dropped)).toEqual([1, 1]);
  expect(new Set(markers.map((m) => m.id)).size).toBe(2);
});

it('announces accepted events TTL deleted from a backlog kept past the retention period, though the events after them are young', async () => {
  // An object paused for eight days while its producer kept publishing: the events of its
  // first day outlived the retention period and DynamoDB's TTL deleted them; those of the
  // last day are still there when the pause is lifted.
  const key: ObjectKey = { tenantId: 'ten_ttl', resource: 'obj:3' };
  const day = 86_400_000;
  const t0 = Date.now();
  const limits = { cap: 100, ratePerSecond: 1e6, burst: 1e6 };
  const publish = async (n: number, reservedAt: number) => {
    const reservation = await store.reserve(key, 1, limits, reservedAt, false);
    if (!reservation) throw new Error('refused');
    await store.writeEventsOf([
      {
        key,
        events: [
          {
            id: `evt_${n}`,
            slot: reservation.firstSlot,
            input: { resource: key.resource, parents: [], type: 'a.b', data: { n }, idempotencyKey: undefined },
            createdAt: new Date(reservedAt).toISOString(),
          },
        ],
        reservedAt,
      },
    ]);
  };
  for (const n of [1, 2, 3]) await publish(n, t0 - 8 * day + n * 1_000);
  for (const n of [4, 5]) await publish(n, t0 - day + n * 1_000);
  for (const slot of [1, 2, 3]) await events.client.send(new DeleteCommand({ TableName: events.table, Key: slotItemKey(key, slot) }));

  const sent: Sent[] = [];
  await distributor(
    () => t0,
    (events) => void sent.push(...events),
  ).runTurn(key, 'lifted');

  expect(sent.filter((e): e is DeliveredEvent => e.type !== 'sluice.gap').map((e) => `${e.id}#${e.seq}`)).toEqual(['evt_4#1', 'evt_5#2']);
  expect(sent.filter((e) => e.type === 'sluice.gap')).toMatchObject([{ resource: 'obj:3', data: { dropped: 3, reason: 'retention' } }]);
});

it('gives no seq to two events when an event nears the TTL it was written with, after retentionDays was raised', async () => {
  // Written under a retention of 7 days, slot 2 expires 10 s after t0; the distributors now
  // run with 14. Judged by 14 days, it was not near its expiry: the chunk was published
  // before its commit, and the holder that died in between left the next one to number
  // the chunk afresh, without the event TTL had deleted meanwhile.
  const raised = buildConfig({ retentionDays: 14 });
  const key: ObjectKey = { tenantId: 'ten_ttl', resource: 'obj:4' };
  const t0 = Date.now();
  await queueOneNearExpiry(key, t0);
  // The first holder's deliveries reach the deliver queue; it dies before its last write.
  const sent: Sent[] = [];
  const first = distributor(
    () => t0,
    (events) => {
      sent.push(...events);
      throw new Error('the holder died');
    },
    raised,
  );
  await expect(first.runTurn(key, 'dies')).rejects.toThrow('the holder died');
  await events.client.send(new DeleteCommand({ TableName: events.table, Key: slotItemKey(key, 2) }));
  await distributor(
    () => t0 + 130_000,
    (events) => void sent.push(...events),
    raised,
  ).runTurn(key, 'next');

  // A consumer drops a seq it has seen: one seq given to two events loses the second.
  const idOfSeq = new Map<number, Set<string>>();
  const delivered = sent.filter((e): e is DeliveredEvent => e.type !== 'sluice.gap');
  for (const e of delivered) idOfSeq.set(e.seq, new Set([...(idOfSeq.get(e.seq) ?? []), e.id]));
  expect([...idOfSeq].filter(([, ids]) => ids.size > 1)).toEqual([]);
  expect(delivered.map((e) => e.id)).toContain('evt_3');
});
