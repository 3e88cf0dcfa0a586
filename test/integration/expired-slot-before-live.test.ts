/**
 * An object's queue that waited past the retention period (a pause lifted after a week):
 * its oldest events expired and DynamoDB's TTL deleted their items, while later ones
 * are still live. A missing slot is judged by the reservation of the item after it,
 * which is only an upper bound of its own: one reserved more than the retention period
 * ago may be an accepted event TTL deleted, and must be counted and announced by a
 * `sluice.gap` marker (reason `retention`), never skipped as an ingest that died.
 */
import { DeleteCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { beforeAll, expect, it } from 'vitest';
import { QueueStore, slotItemKey } from '../../functions/adapters/queue-store.ts';
import { NO_SWITCHES } from '../../functions/adapters/switch-store.ts';
import { Distributor } from '../../functions/app/distributor.ts';
import { buildConfig } from '../../functions/core/config.ts';
import type { DeliveredEvent, GapMarker, ObjectKey } from '../../functions/core/model.ts';
import { NO_LOGS } from '../../functions/core/telemetry.ts';
import { withEventsTable } from '../support/events-table.ts';
import { webhookFixture } from '../support/fixtures.ts';

const events = withEventsTable();
let store: QueueStore;

beforeAll(() => {
  store = new QueueStore({ client: events.client, tableName: events.table, retentionDays: 7 });
});

type Sent = DeliveredEvent | GapMarker;

const DAY_MS = 86_400_000;

/**
 * A distributor of `key`'s object over `queues`, at `retentionDays`, whose deliveries'
 * events and metrics are kept (`sent`, `counted`), on the clock `now` (its waits pass
 * at once, moving the clock when `sleep` is given).
 */
function recordingDistributor(
  queues: QueueStore,
  key: ObjectKey,
  retentionDays: number,
  now: () => number,
  sleep: (ms: number) => void = () => undefined,
) {
  const sent: Sent[] = [];
  const counted: Array<[string, number, unknown]> = [];
  const distributor = new Distributor({
    queues,
    switches: NO_SWITCHES,
    subscriptions: { onResource: async () => [webhookFixture({ id: 'wh_one', tenantId: key.tenantId })] },
    deliveries: { send: async (messages) => void sent.push(...messages.flatMap((m) => m.events as Sent[])) },
    doorbell: { ring: async () => undefined },
    config: buildConfig({ retentionDays }),
    metrics: { count: (name, n = 1, dims) => void counted.push([name, n, dims]) },
    logger: NO_LOGS,
    now,
    sleep: async (ms) => sleep(ms),
  });
  return { distributor, sent, counted };
}

/**
 * Under a pause, an event accepted 8 days before `t0` (its item deleted since by TTL, as
 * at a 7-day retention) and one 6 days before; then one lifted turn of a distributor at
 * `retentionDays` (after `beforeTurn`): what it sent and counted.
 */
async function liftedAfterTtl(key: ObjectKey, t0: number, retentionDays: number, beforeTurn?: () => Promise<void>) {
  const limits = { cap: 100, ratePerSecond: 1e6, burst: 1e6 };
  const slots: number[] = [];
  for (const [i, reservedAt] of [t0 - 8 * DAY_MS, t0 - 6 * DAY_MS].entries()) {
    const reservation = await store.reserve(key, 1, limits, reservedAt, false);
    if (!reservation) throw new Error('refused');
    slots.push(reservation.firstSlot);
    const event = {
      id: `evt_${i + 1}`,
      slot: reservation.firstSlot,
      input: { resource: key.resource, parents: [], type: 'a.b', data: { n: i + 1 }, idempotencyKey: undefined },
      createdAt: new Date(reservedAt).toISOString(),
    };
    await store.writeEventsOf([{ key, events: [event], reservedAt }]);
  }
  await events.client.send(new DeleteCommand({ TableName: events.table, Key: slotItemKey(key, slots[0] ?? 0) }));
  await beforeTurn?.();

  const queues = new QueueStore({ client: events.client, tableName: events.table, retentionDays });
  const { distributor, sent, counted } = recordingDistributor(queues, key, retentionDays, () => t0);
  await distributor.runTurn(key, 'lifted');
  return { sent, counted };
}

it('announces a TTL-deleted event before a live one as lost to retention, not as a slot no ingest wrote', async () => {
  const { sent, counted } = await liftedAfterTtl({ tenantId: 'ten_ttl2', resource: 'obj:1' }, Date.now(), 7);

  expect(sent.filter((e) => e.type !== 'sluice.gap').map((e) => e.id)).toEqual(['evt_2']);
  expect(sent.filter((e) => e.type === 'sluice.gap').map((e) => e.data)).toEqual([{ dropped: 1, reason: 'retention' }]);
  expect(counted).toContainEqual(['EventsDropped', 1, { reason: 'retention' }]);
});

it('announces an event TTL deleted under the retention period it was accepted with, after the period was raised', async () => {
  // The platform team raised retentionDays from 7 to 14 while the object waited (paused):
  // its items keep the TTL they were written with, and DynamoDB deletes the oldest at 7
  // days. Judged by the new 14 days, its missing slot passed for one no ingest wrote.
  const { sent, counted } = await liftedAfterTtl({ tenantId: 'ten_ttl3', resource: 'obj:1' }, Date.now(), 14);

  expect(sent.filter((e) => e.type !== 'sluice.gap').map((e) => e.id)).toEqual(['evt_2']);
  expect(sent.filter((e) => e.type === 'sluice.gap').map((e) => e.data)).toEqual([{ dropped: 1, reason: 'retention' }]);
  expect(counted).toContainEqual(['EventsDropped', 1, { reason: 'retention' }]);
});

it('announces an event TTL deleted under the period it was accepted with, also when its meta item does not name that period', async () => {
  // A paused backlog accepted before the meta item kept scheduled_retention_ms (2e82f68),
  // then the upgrade and retentionDays raised from 7 to 14: the meta item named no period
  // until the next event's ingest gave it the new one, and judged by 14 days the slot
  // TTL deleted at 7 passed for one no ingest wrote.
  const key: ObjectKey = { tenantId: 'ten_ttl9', resource: 'obj:1' };
  const t0 = Date.now();
  const { sent, counted } = await liftedAfterTtl(key, t0, 14, async () => {
    await events.client.send(
      new UpdateCommand({
        TableName: events.table,
        Key: { pk: `${key.tenantId}#${key.resource}`, sk: 'meta' },
        UpdateExpression: 'REMOVE scheduled_retention_ms',
      }),
    );
    const raised = new QueueStore({ client: events.client, tableName: events.table, retentionDays: 14 });
    const reservedAt = t0 - DAY_MS;
    const after = await raised.reserve(key, 1, { cap: 100, ratePerSecond: 1e6, burst: 1e6 }, reservedAt, false);
    if (!after) throw new Error('refused');
    const input = { resource: key.resource, parents: [], type: 'a.b', data: { n: 3 }, idempotencyKey: undefined };
    await raised.writeEventsOf([
      { key, events: [{ id: 'evt_3', slot: after.firstSlot, input, createdAt: new Date(reservedAt).toISOString() }], reservedAt },
    ]);
  });

  expect(sent.filter((e) => e.type !== 'sluice.gap').map((e) => e.id)).toEqual(['evt_2', 'evt_3']);
  expect(sent.filter((e) => e.type === 'sluice.gap').map((e) => e.data)).toEqual([{ dropped: 1, reason: 'retention' }]);
  expect(counted).toContainEqual(['EventsDropped', 1, { reason: 'retention' }]);
});

it('skips a slot no ingest wrote among events kept 7 days, though a later event of the chunk was written under a shorter period', async () => {
  // retentionDays was lowered to 1 for a while, then set back to 7: an ingest that died 3
  // days ago left its slot empty between two events written for 7 days, and an event of
  // the lowered period's came 12 hours ago. The empty slot's neighbours say it was
  // reserved under 7 days: no event of it can have been TTL deleted.
  const key: ObjectKey = { tenantId: 'ten_ttl10', resource: 'obj:1' };
  const t0 = Date.now();
  const limits = { cap: 100, ratePerSecond: 1e6, burst: 1e6 };
  const lowered = new QueueStore({ client: events.client, tableName: events.table, retentionDays: 1 });
  const plan: Array<[number, QueueStore | undefined]> = [
    [t0 - 3 * DAY_MS, store],
    [t0 - 3 * DAY_MS + 60_000, undefined],
    [t0 - 3 * DAY_MS + 120_000, store],
    [t0 - DAY_MS / 2, lowered],
  ];
  for (const [i, [reservedAt, writer]] of plan.entries()) {
    const reservation = await (writer ?? store).reserve(key, 1, limits, reservedAt, false);
    if (!reservation) throw new Error('refused');
    const input = { resource: key.resource, parents: [], type: 'a.b', data: { n: i + 1 }, idempotencyKey: undefined };
    const event = { id: `evt_${i + 1}`, slot: reservation.firstSlot, input, createdAt: new Date(reservedAt).toISOString() };
    await writer?.writeEventsOf([{ key, events: [event], reservedAt }]);
  }

  const { distributor, sent, counted } = recordingDistributor(store, key, 7, () => t0);
  await distributor.runTurn(key, 'turn');

  expect(sent.filter((e) => e.type !== 'sluice.gap').map((e) => e.id)).toEqual(['evt_1', 'evt_3', 'evt_4']);
  expect(sent.filter((e) => e.type === 'sluice.gap').map((e) => e.data)).toEqual([]);
  expect(counted.filter(([name]) => name === 'EventsDropped')).toEqual([]);
});

it('skips a slot no ingest wrote that an earlier turn of a long-scheduled object stopped at, though its object was scheduled over the retention period ago', async () => {
  // The object was paused for 8 days, then lifted: the turn that drains it announces its
  // oldest event (TTL deleted, or expired) and goes on to one accepted a day ago, then
  // stops at the slot after it, reserved with it by an ingest that then died. The object
  // stays scheduled (each turn waits for that slot and rings again), so the turn that
  // skips the slot once its ingest must be gone starts there, with nothing of its own
  // consumed before it: judged by when the object was scheduled, 8 days ago, the slot
  // passed for an event TTL may have deleted. It was reserved after the event a day old:
  // nothing of it can have expired.
  const key: ObjectKey = { tenantId: 'ten_ttl11', resource: 'obj:1' };
  const t0 = Date.now();
  const limits = { cap: 100, ratePerSecond: 1e6, burst: 1e6 };
  const accept = async (n: number, reservedAt: number, written = true) => {
    const reservation = (await store.reserve(key, 1, limits, reservedAt, false)) ?? (await store.reserve(key, 1, limits, reservedAt, true));
    if (!reservation) throw new Error('refused');
    if (!written) return;
    const input = { resource: key.resource, parents: [], type: 'a.b', data: { n }, idempotencyKey: undefined };
    const event = { id: `evt_${n}`, slot: reservation.firstSlot, input, createdAt: new Date(reservedAt).toISOString() };
    await store.writeEventsOf([{ key, events: [event], reservedAt }]);
  };
  const lifted = t0 - DAY_MS;
  await accept(1, t0 - 8 * DAY_MS);
  await accept(2, lifted);
  // Its ingest died between its two writes.
  await accept(3, lifted, false);

  let clock = lifted + 1_000;
  const { distributor, sent, counted } = recordingDistributor(
    store,
    key,
    7,
    () => clock,
    (ms) => {
      clock += ms;
    },
  );
  // The turn after the lift: the 8-day-old event announced, the day-old one delivered,
  // and the empty slot waited for until the turn's time is up.
  expect((await distributor.runTurn(key, 'lifted')).outcome).toBe('rerung');
  expect(sent.filter((e) => e.type === 'sluice.gap').map((e) => e.data)).toEqual([{ dropped: 1, reason: 'retention' }]);
  expect(sent.filter((e) => e.type !== 'sluice.gap').map((e) => e.id)).toEqual(['evt_2']);

  await accept(4, lifted + 10_000);
  clock = lifted + 10 * 60_000;
  sent.length = 0;
  counted.length = 0;
  expect((await distributor.runTurn(key, 'later')).outcome).toBe('idle');

  expect(sent.filter((e) => e.type !== 'sluice.gap').map((e) => e.id)).toEqual(['evt_4']);
  expect(sent.filter((e) => e.type === 'sluice.gap').map((e) => e.data)).toEqual([]);
  expect(counted.filter(([name]) => name === 'EventsDropped')).toEqual([]);
  expect(counted).toContainEqual(['SlotsSkipped', 1, undefined]);
});
