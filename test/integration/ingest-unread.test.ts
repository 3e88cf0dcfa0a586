/**
 * An ingest whose slot write partly failed, and whose read of the written slots failed
 * too, must not withdraw (and answer as not stored) events a running turn may already
 * have delivered: the same idempotency key would then be delivered twice.
 */
import { expect, it } from 'vitest';
import { IdempotencyStore } from '../../functions/adapters/idempotency-store.ts';
import { QueueStore } from '../../functions/adapters/queue-store.ts';
import { NO_SWITCHES } from '../../functions/adapters/switch-store.ts';
import { Distributor } from '../../functions/app/distributor.ts';
import { publish } from '../../functions/app/ingest.ts';
import { buildConfig } from '../../functions/core/config.ts';
import type { DeliveredEvent, EventInput, ObjectKey } from '../../functions/core/model.ts';
import { NO_LOGS, NO_METRICS } from '../../functions/core/telemetry.ts';
import { withEventsTable } from '../support/events-table.ts';
import { webhookFixture } from '../support/fixtures.ts';

const events = withEventsTable();

const throttled = (message: string) => Object.assign(new Error(message), { name: 'ProvisionedThroughputExceededException' });

/** A queue store whose batched write of a request's events lands its first 25-item batch only, then fails. */
class FirstBatchOnly extends QueueStore {
  override async writeEventsOf(reservations: Parameters<QueueStore['writeEventsOf']>[0]) {
    const [r] = reservations;
    if (!r) return;
    await super.writeEventsOf([{ ...r, events: r.events.slice(0, 25) }]);
    throw throttled('BatchWrite left 5 items unprocessed');
  }
}

/**
 * One object's queue as a turn sees it (no faults), with a distributor whose deliveries to
 * the object's one webhook are recorded, and the ingest's dependencies around `queues`.
 */
function objectQueue(resource: string, webhookId: string) {
  const key: ObjectKey = { tenantId: 'ten_w', resource };
  const config = buildConfig({ objectRatePerSecond: 100_000, objectBurst: 100_000, turnMaxMs: 200 });
  const delivered: DeliveredEvent[] = [];
  const plain = new QueueStore({ client: events.client, tableName: events.table, retentionDays: 7 });
  const distributor = new Distributor({
    queues: plain,
    switches: NO_SWITCHES,
    subscriptions: { onResource: async () => [webhookFixture({ id: webhookId, tenantId: key.tenantId })] },
    deliveries: { send: async (messages) => void delivered.push(...messages.flatMap((m) => m.events as DeliveredEvent[])) },
    doorbell: { ring: async () => undefined },
    config,
    metrics: NO_METRICS,
    logger: NO_LOGS,
    now: Date.now,
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  });
  let id = 0;
  const ingest = (queues: QueueStore, now: () => number = Date.now) =>
    ({
      queues,
      idempotency: new IdempotencyStore({ client: events.client, tableName: events.table, retentionDays: 7, ingestGraceMs: 60_000 }),
      doorbell: { ring: async () => undefined },
      config,
      metrics: NO_METRICS,
      logger: NO_LOGS,
      now,
      newEventId: () => `evt_${webhookId}_${++id}`,
    }) as unknown as Parameters<typeof publish>[0];
  /** 30 events on the object, each with an idempotency key of its own. */
  const keyed = (prefix: string): EventInput[] =>
    Array.from({ length: 30 }, (_, n) => ({
      resource,
      parents: [],
      type: 'a.b',
      data: { n: n + 1 },
      idempotencyKey: `${prefix}-${n + 1}`,
    }));
  return { key, delivered, plain, distributor, ingest, keyed };
}

it('never answers "not stored" (and gives back the key of) an event that may have been delivered', async () => {
  const { key, delivered, plain, distributor, ingest, keyed } = objectQueue('obj:1', 'wh_one');
  // The first 25-item batch of slots lands, the second fails; reading the written slots
  // fails too, while the turn of an earlier request's doorbell runs and delivers them.
  class Faulty extends FirstBatchOnly {
    override async writtenSlots(): Promise<Set<number>> {
      await distributor.runTurn(key, 'running-turn');
      throw throttled('Throughput exceeds the current capacity');
    }
  }
  const deps = ingest(new Faulty({ client: events.client, tableName: events.table, retentionDays: 7 }));
  const inputs = keyed('key');
  const earlier = await publish({ ...deps, queues: plain }, key.tenantId, [
    { resource: key.resource, parents: [], type: 'a.b', data: { n: 0 }, idempotencyKey: undefined },
  ]);
  expect(earlier.results[0]?.status).toBe('accepted');

  const outcome = await publish(deps, key.tenantId, inputs);

  const answers = outcome.results.map((r) => r.status);
  const deliveredN = new Set(delivered.map((e) => (e.data as { n: number }).n));
  const notStoredYetDelivered = answers.flatMap((a, i) => (a !== 'accepted' && deliveredN.has(i + 1) ? [i + 1] : []));
  expect(notStoredYetDelivered).toEqual([]);
  // The 25 written are accepted (delivered or not yet), the 5 never written are not.
  expect(answers.slice(0, 25).every((a) => a === 'accepted')).toBe(true);
  expect(answers.slice(25).every((a) => a !== 'accepted')).toBe(true);
  // A retry with their keys finds them stored: nothing is delivered twice.
  const again = await publish({ ...deps, queues: plain }, key.tenantId, inputs.slice(1, 3));
  expect(again.results.map((r) => r.status)).toEqual(['duplicate', 'duplicate']);
});

it('fails a request whose write, read of the written slots and voids all failed as a whole, though what it wrote is delivered (its keys answer a retry duplicate)', async () => {
  const { key, delivered, plain, distributor, ingest, keyed } = objectQueue('obj:2', 'wh_two');
  // DynamoDB failing: the first 25-item batch lands, the second fails; then neither the
  // read of the written slots nor their voids go through.
  class Failing extends FirstBatchOnly {
    override async writtenSlots(): Promise<Set<number>> {
      throw throttled('Throughput exceeds the current capacity');
    }
    override async voidSlots(): Promise<Set<number>> {
      throw throttled('Throughput exceeds the current capacity');
    }
  }
  const inputs = keyed('unsure');

  // Every event answered not stored: the request fails as a whole (500).
  await expect(
    publish(ingest(new Failing({ client: events.client, tableName: events.table, retentionDays: 7 })), key.tenantId, inputs),
  ).rejects.toThrow('BatchWrite left 5 items unprocessed');

  // What it wrote is delivered all the same: "nothing of it stored or delivered" is not so.
  await distributor.runTurn(key, 'turn');
  expect(delivered.map((e) => (e.data as { n: number }).n)).toEqual(Array.from({ length: 25 }, (_, n) => n + 1));
  // Sent again with their keys past the ingest grace, those are answered duplicate, the rest accepted: none twice.
  const retry = await publish(
    ingest(plain, () => Date.now() + 2 * 60_000),
    key.tenantId,
    inputs,
  );
  expect(retry.results.map((r) => r.status)).toEqual([...Array(25).fill('duplicate'), ...Array(5).fill('accepted')]);
});
