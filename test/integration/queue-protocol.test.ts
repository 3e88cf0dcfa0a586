/**
 * The per-object queue protocol against the embedded DynamoDB: leases and fencing,
 * the cap, coalesced doorbells, and a crashed holder's chunk published again
 * with the same seqs.
 */

import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DeleteCommand } from '@aws-sdk/lib-dynamodb';
import type { Context, SQSEvent } from 'aws-lambda';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { instrument, newCounts } from '../../bench/accounting.ts';
import { documentClient } from '../../functions/adapters/aws.ts';
import { IdempotencyStore } from '../../functions/adapters/idempotency-store.ts';
import { INLINE_MAX_BYTES, QueueStore, type QuietSnapshot, slotItemKey } from '../../functions/adapters/queue-store.ts';
import { NO_SWITCHES } from '../../functions/adapters/switch-store.ts';
import { Distributor } from '../../functions/app/distributor.ts';
import { type EventResult, publish } from '../../functions/app/ingest.ts';
import { deepestQueues, INDEX_LINGER_MS, RECONCILE_MARGIN_MS, reconcile } from '../../functions/app/reconciler.ts';
import { buildConfig } from '../../functions/core/config.ts';
import { FencedOutError, LeaseHeldError } from '../../functions/core/errors.ts';
import { objectGroupId } from '../../functions/core/keys.ts';
import type { DeliveredEvent, DeliveryMessage, EventInput, ObjectKey, Webhook } from '../../functions/core/model.ts';
import type { Switch } from '../../functions/core/switches.ts';
import { NO_LOGS, NO_METRICS } from '../../functions/core/telemetry.ts';
import { RECORD_FAILURE_METRICS } from '../../functions/definitions/alarms.ts';
import { DISTRIBUTE_QUEUE } from '../../functions/definitions/queues.ts';
import { makeDistributorHandler } from '../../functions/distributor/process.ts';
import { createTables, type Emulators, startEmulators } from '../../sandbox/emulators.ts';
import { loseFirstAnswers } from '../support/faults.ts';
import { webhookFixture } from '../support/fixtures.ts';

let emulators: Emulators;
let store: QueueStore;
let eventsTable: string;
let client: ReturnType<typeof documentClient>;
let counter = 0;
const key = (): ObjectKey => ({ tenantId: 'ten_test', resource: `obj:${++counter}` });
const input = (resource: string, n: number): EventInput => ({ resource, parents: [], type: 'a.b', data: { n }, idempotencyKey: undefined });

const webhook: Webhook = webhookFixture({ id: 'wh_one', tenantId: 'ten_test' });

/** A distributor's dependencies, its outputs recorded in memory (the deliver queue and doorbell are not under test here). */
function recordingDistributorDeps(queues: QueueStore = store, overrides: Record<string, unknown> = {}, now = Date.now) {
  const sent: DeliveryMessage<DeliveredEvent>[] = [];
  const rings: string[] = [];
  const deps: ConstructorParameters<typeof Distributor>[0] = {
    queues,
    switches: NO_SWITCHES,
    subscriptions: { onResource: async () => [webhook] },
    deliveries: { send: async (messages) => void sent.push(...(messages as DeliveryMessage<DeliveredEvent>[])) },
    doorbell: { ring: async (k, token) => void rings.push(`${k.resource}:${token}`) },
    config: buildConfig(overrides),
    metrics: NO_METRICS,
    logger: NO_LOGS,
    now,
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  };
  return Object.assign(deps, { sent, rings });
}

/** A distributor whose outputs are recorded in memory. */
function recordingDistributor(overrides: Record<string, unknown> = {}, now = Date.now, queues: QueueStore = store) {
  const { sent, rings, ...deps } = recordingDistributorDeps(queues, overrides, now);
  const distributor = new Distributor(deps);
  const seqs = () => sent.flatMap((m) => m.events.map((e) => e.seq));
  return { distributor, sent, rings, seqs };
}

/** A store whose first last-chunk write comes after `meanwhile` ran: an ingest between the lease and that write. */
function racedStore(meanwhile: () => Promise<unknown>, queues: QueueStore = store) {
  let raced = false;
  class RacingStore extends QueueStore {
    override async commitLastChunk(...args: Parameters<QueueStore['commitLastChunk']>) {
      if (!raced) {
        raced = true;
        await meanwhile();
      }
      return queues.commitLastChunk(...args);
    }
  }
  return new RacingStore({ client, tableName: eventsTable, retentionDays: 7 });
}

/** A distributor under a drop switch on `k`'s resource (its deliveries recorded, as `recordingDistributor`'s). */
function droppingDistributor(
  k: ObjectKey,
  queues: QueueStore = store,
  overrides: Partial<ConstructorParameters<typeof Distributor>[0]> = {},
) {
  const drop: Switch = {
    id: 'sw_drop',
    scope: 'resource',
    tenant: k.tenantId,
    target: k.resource,
    action: 'drop',
    reason: 'test',
    created_at: '',
  };
  const distributor = new Distributor({
    ...recordingDistributorDeps(queues),
    switches: { current: async () => [drop], refresh: async () => [drop] },
    ...overrides,
  });
  return { drop, distributor };
}

/** Reserves slots with no rate limit in the way; fails the test if the cap refuses. */
async function reserveSlots(k: ObjectKey, count: number, now: number) {
  const limits = { cap: 100, ratePerSecond: 1e6, burst: 1e6 };
  const reservation = (await store.reserve(k, count, limits, now, false)) ?? (await store.reserve(k, count, limits, now, true));
  if (!reservation) throw new Error('reservation refused');
  return reservation;
}

function ingestDeps(rings: string[], overrides: Record<string, unknown> = {}) {
  let id = 0;
  const config = buildConfig({ objectRatePerSecond: 100_000, objectBurst: 100_000, ...overrides });
  return {
    queues: store,
    idempotency: new IdempotencyStore({ client, tableName: eventsTable, retentionDays: 7, ingestGraceMs: 60_000 }),
    doorbell: { ring: async (k: ObjectKey, token: string) => void rings.push(`${k.resource}:${token}`) },
    config,
    metrics: NO_METRICS,
    logger: NO_LOGS,
    now: Date.now,
    newEventId: () => `evt_${++id}`,
  } as unknown as Parameters<typeof publish>[0];
}

/** A queue store whose DynamoDB calls are counted, as the bench counts them. */
/**
 * UpdateItem calls on the object queue's own items: not the reject counters' item beside
 * the meta item, which ingest writes at most once a second per object (see countRejected).
 */
function queueUpdates(counts: ReturnType<typeof newCounts>): number {
  const counters = Object.entries(counts.dynamoTargets)
    .filter(([target]) => target.startsWith('UpdateItem ') && target.endsWith('/rejected'))
    .reduce((n, [, c]) => n + c, 0);
  return (counts.calls.dynamodb?.UpdateItemCommand ?? 0) - counters;
}

function counted() {
  const counts = newCounts();
  const c = documentClient(emulators.dynamo);
  instrument(counts, c, 'dynamodb');
  const queues = new QueueStore({ client: c, tableName: eventsTable, retentionDays: 7 });
  return { counts, queues };
}

beforeAll(async () => {
  emulators = await startEmulators();
  const tables = await createTables(new DynamoDBClient({ ...emulators.dynamo }));
  eventsTable = tables.Events as string;
  client = documentClient(emulators.dynamo);
  store = new QueueStore({ client, tableName: eventsTable, retentionDays: 7 });
});

afterAll(async () => {
  await emulators?.stop();
});

/** A pause switch on one object, as a stage's switch cache holds it. */
function resourcePause(k: ObjectKey): Switch {
  return { id: 'sw_p', scope: 'resource', tenant: k.tenantId, target: k.resource, action: 'pause', reason: '', created_at: '' };
}

describe('ingest', () => {
  it('rings the doorbell only when the object goes from idle to scheduled', async () => {
    const k = key();
    const rings: string[] = [];
    const deps = ingestDeps(rings);
    for (let i = 0; i < 5; i++) await publish(deps, k.tenantId, [input(k.resource, i)]);
    expect(rings).toHaveLength(1);
    const meta = await store.readMeta(k);
    expect(meta).toMatchObject({ depth: 5, lastSlot: 5, scheduled: true });

    const { distributor } = recordingDistributor();
    expect((await distributor.runTurn(k, 'w1')).outcome).toBe('idle');
    await publish(deps, k.tenantId, [input(k.resource, 6)]);
    expect(rings).toHaveLength(2);
  });

  it('keeps depth within the cap: admits what fits in order and rejects the rest as queue_full', async () => {
    const k = key();
    const deps = ingestDeps([], { objectQueueCap: 5 });
    const first = await publish(
      deps,
      k.tenantId,
      [0, 1, 2].map((n) => input(k.resource, n)),
    );
    expect(first.results.map((r) => r.status)).toEqual(['accepted', 'accepted', 'accepted']);
    const second = await publish(
      deps,
      k.tenantId,
      [3, 4, 5, 6].map((n) => input(k.resource, n)),
    );
    expect(second.results.map((r) => r.status)).toEqual(['accepted', 'accepted', 'rejected', 'rejected']);
    expect(second.httpStatus).toBe(202);
    const third = await publish(deps, k.tenantId, [input(k.resource, 7)]);
    expect(third.httpStatus).toBe(429);
    expect(third.retryAfterSeconds).toBeGreaterThan(0);
    expect(third.results[0]).toMatchObject({ status: 'rejected', error: { code: 'queue_full' } });
    expect((await store.readMeta(k))?.depth).toBe(5);
  });

  it("keeps a new object's first request within the cap too", async () => {
    const k = key();
    const deps = ingestDeps([], { objectQueueCap: 3 });
    const first = await publish(
      deps,
      k.tenantId,
      [0, 1, 2, 3, 4, 5].map((n) => input(k.resource, n)),
    );
    expect(first.results.map((r) => (r.status === 'rejected' ? r.error.code : r.status))).toEqual([
      'accepted',
      'accepted',
      'accepted',
      'queue_full',
      'queue_full',
      'queue_full',
    ]);
    expect((await store.readMeta(k))?.depth).toBe(3);
  });

  it('answers queue_full, not rate_limited, for what a drained queue has no room for, once the container knows its rate', async () => {
    const k = key();
    const deps = ingestDeps([], { objectQueueCap: 5 });
    const codes = (outcome: Awaited<ReturnType<typeof publish>>) =>
      outcome.results.map((r) => (r.status === 'rejected' ? r.error.code : r.status));
    const seven = () => [0, 1, 2, 3, 4, 5, 6].map((n) => input(k.resource, n));
    const fits = ['accepted', 'accepted', 'accepted', 'accepted', 'accepted', 'queue_full', 'queue_full'];
    expect(codes(await publish(deps, k.tenantId, seven()))).toEqual(fits);
    const { distributor } = recordingDistributor();
    expect((await distributor.runTurn(k, 'w')).outcome).toBe('idle');
    expect((await store.readMeta(k))?.depth).toBe(0);

    // The object is far inside its rate (100,000/s): only the cap holds the last two back.
    expect(codes(await publish(deps, k.tenantId, seven()))).toEqual(fits);
  });

  it("stores a request's events for all its objects in one batched write", async () => {
    const [a, b, c] = [key(), key(), key()];
    const { counts, queues } = counted();
    const deps = { ...ingestDeps([]), queues } as Parameters<typeof publish>[0];
    // Two events each on three objects: none is kept on a meta item, six slot items in all.
    const inputs = [a, b, c].flatMap((k) => [input(k.resource, 1), input(k.resource, 2)]);
    const outcome = await publish(deps, a.tenantId, inputs);
    expect(outcome.results.map((r) => r.status)).toEqual(Array(6).fill('accepted'));
    expect(counts.calls.dynamodb).toEqual({ UpdateItemCommand: 3, BatchWriteItemCommand: 1 });
    const { distributor, sent } = recordingDistributor();
    for (const k of [a, b, c]) expect((await distributor.runTurn(k, 'w')).outcome).toBe('idle');
    expect(sent.flatMap((m) => m.events.map((e) => `${e.resource}/${e.seq}`)).sort()).toEqual(
      [a, b, c].flatMap((k) => [`${k.resource}/1`, `${k.resource}/2`]).sort(),
    );
  });

  it('answers events it could not store as internal, voids their slots at once, and keeps the ones on meta items', async () => {
    const [busy, quiet] = [key(), key()];
    // DynamoDB failing the batched write (the emulator cannot be made to): the reserves went through.
    class FailingWrites extends QueueStore {
      override async writeEventsOf(): Promise<void> {
        throw new Error('InternalServerError');
      }
    }
    const queues = new FailingWrites({ client, tableName: eventsTable, retentionDays: 7 });
    const rings: string[] = [];
    const deps = { ...ingestDeps(rings), queues } as Parameters<typeof publish>[0];
    const outcome = await publish(deps, busy.tenantId, [input(busy.resource, 1), input(busy.resource, 2), input(quiet.resource, 3)]);
    expect(outcome.results).toMatchObject([
      { status: 'rejected', error: { code: 'internal' } },
      { status: 'rejected', error: { code: 'internal' } },
      { status: 'accepted' },
    ]);
    // Both objects were rung: the distributor skips the voided slots without waiting out the grace period.
    expect(rings.sort()).toEqual([`${busy.resource}:s1`, `${quiet.resource}:s1`].sort());
    const { distributor, sent } = recordingDistributor({ ingestGraceMs: 60_000 });
    expect((await distributor.runTurn(busy, 'w')).outcome).toBe('idle');
    expect((await distributor.runTurn(quiet, 'w')).outcome).toBe('idle');
    expect(sent.flatMap((m) => m.events.map((e) => (e as DeliveredEvent).data))).toEqual([{ n: 3 }]);
    expect(await store.readMeta(busy)).toMatchObject({ depth: 0, cursor: 2, seq: 0 });
  });

  it('answers as accepted the events a partly failed write did store, and never voids a slot once its event is written', async () => {
    const [landed, lost] = [key(), key()];
    // One object's items land and the other's do not, and the write as a whole fails
    // (as when one of its parallel batches throws): the emulator cannot be made to.
    class PartlyFailingWrites extends QueueStore {
      override async writeEventsOf(reservations: Parameters<QueueStore['writeEventsOf']>[0]): Promise<void> {
        await super.writeEventsOf(reservations.filter((r) => r.key.resource === landed.resource));
        throw new Error('InternalServerError');
      }
    }
    const queues = new PartlyFailingWrites({ client, tableName: eventsTable, retentionDays: 7 });
    const deps = { ...ingestDeps([]), queues } as Parameters<typeof publish>[0];
    const inputs = [input(landed.resource, 1), input(landed.resource, 2), input(lost.resource, 3), input(lost.resource, 4)];
    const outcome = await publish(deps, landed.tenantId, inputs);
    expect(outcome.results.map((r) => (r.status === 'rejected' ? r.error.code : r.status))).toEqual([
      'accepted',
      'accepted',
      'internal',
      'internal',
    ]);
    const { distributor, sent } = recordingDistributor({ ingestGraceMs: 60_000 });
    for (const k of [landed, lost]) expect((await distributor.runTurn(k, 'w')).outcome).toBe('idle');
    expect(sent.flatMap((m) => m.events.map((e) => (e as DeliveredEvent).data))).toEqual([{ n: 1 }, { n: 2 }]);
  });

  /**
   * A client on which a request's BatchWriteItem of 25 items fails after 5 ms (as when
   * the SDK's retries of a throttled batch run out), while the one of fewer items is
   * handled by `other`: DynamoDB's answer to that batch, late or partial.
   */
  function oneBatchFails(other: (items: unknown[], send: () => Promise<unknown>) => Promise<unknown>) {
    const c = documentClient(emulators.dynamo);
    c.middlewareStack.add(
      (next) => async (args) => {
        const items = (args.input as { RequestItems?: Record<string, unknown[]> }).RequestItems?.[eventsTable];
        if (!items) return next(args);
        if (items.length === 25) {
          await new Promise((resolve) => setTimeout(resolve, 5));
          throw Object.assign(new Error('Throughput exceeded'), { name: 'ProvisionedThroughputExceededException' });
        }
        return (await other(items, () => next(args))) as Awaited<ReturnType<typeof next>>;
      },
      { step: 'initialize', name: 'oneBatchFails' },
    );
    return new QueueStore({ client: c, tableName: eventsTable, retentionDays: 7 });
  }

  /** The answers to a request's events, and the events a turn delivers, by their `n`. */
  async function answeredAndDelivered(k: ObjectKey, outcome: Awaited<ReturnType<typeof publish>>) {
    const answers = outcome.results.map((r) => (r.status === 'rejected' ? r.error.code : r.status));
    const { distributor, sent } = recordingDistributor({ ingestGraceMs: 60_000 });
    expect((await distributor.runTurn(k, 'w')).outcome).toBe('idle');
    return { answers, delivered: sent.flatMap((m) => m.events.map((e) => ((e as DeliveredEvent).data as { n: number }).n)) };
  }

  it("waits for a write's other batch still in flight before voiding, so what it stores is answered accepted and the rest is not delivered", async () => {
    const [failing, late] = [key(), key()];
    let landed: Promise<unknown> = Promise.resolve();
    // The second object's 5 events: DynamoDB answers their batch 200 ms after the first object's 25 failed.
    const queues = oneBatchFails(async (_items, send) => {
      landed = new Promise((resolve) => setTimeout(resolve, 200)).then(send);
      return landed;
    });
    const deps = { ...ingestDeps([]), queues } as Parameters<typeof publish>[0];
    const outcome = await publish(deps, failing.tenantId, [
      ...Array.from({ length: 25 }, (_, n) => input(failing.resource, n + 1)),
      ...Array.from({ length: 5 }, (_, n) => input(late.resource, n + 26)),
    ]);
    await landed;
    const first = await answeredAndDelivered(failing, { ...outcome, results: outcome.results.slice(0, 25) });
    const second = await answeredAndDelivered(late, { ...outcome, results: outcome.results.slice(25) });
    // Without waiting, the first object's voids and the read of the second's slots came
    // first, its late puts landed after: answered internal ("send it again") and
    // delivered all the same.
    expect([...first.answers, ...second.answers]).toEqual([...Array(25).fill('internal'), ...Array(5).fill('accepted')]);
    expect([...first.delivered, ...second.delivered]).toEqual([26, 27, 28, 29, 30]);
  });

  it("withdraws an object's events written behind one that was not, so sent again they keep their order", async () => {
    const k = key();
    // The write stores events 1 and 3 of the object's four, then fails (the emulator cannot be made to).
    class GappedWrites extends QueueStore {
      override async writeEventsOf(reservations: Parameters<QueueStore['writeEventsOf']>[0]): Promise<void> {
        const odd = (e: { input: EventInput }) => (e.input.data as { n: number }).n % 2 === 1;
        await super.writeEventsOf(reservations.map((r) => ({ ...r, events: r.events.filter(odd) })));
        throw new Error('InternalServerError');
      }
    }
    const queues = new GappedWrites({ client, tableName: eventsTable, retentionDays: 7 });
    const deps = { ...ingestDeps([]), queues } as Parameters<typeof publish>[0];
    const outcome = await publish(
      deps,
      k.tenantId,
      [1, 2, 3, 4].map((n) => input(k.resource, n)),
    );
    const { answers, delivered } = await answeredAndDelivered(k, outcome);
    // Without the withdrawal, 3 was accepted and delivered before 2, sent again, could be.
    expect(answers).toEqual(['accepted', 'internal', 'internal', 'internal']);
    expect(delivered).toEqual([1]);
    // The producer sends again what was not stored: the object's events arrive in order.
    const again = await publish(
      ingestDeps([]),
      k.tenantId,
      [2, 3, 4].map((n) => input(k.resource, n)),
    );
    expect((await answeredAndDelivered(k, again)).delivered).toEqual([2, 3, 4]);
  });

  it('answers as accepted an event whose withdrawal failed, since it will be delivered', async () => {
    const k = key();
    class FailingWithdrawals extends QueueStore {
      override async writeEventsOf(reservations: Parameters<QueueStore['writeEventsOf']>[0]): Promise<void> {
        await super.writeEventsOf(reservations.map((r) => ({ ...r, events: r.events.slice(1) })));
        throw new Error('InternalServerError');
      }
      override async withdrawSlot(): Promise<void> {
        throw new Error('InternalServerError');
      }
    }
    const queues = new FailingWithdrawals({ client, tableName: eventsTable, retentionDays: 7 });
    const deps = { ...ingestDeps([]), queues } as Parameters<typeof publish>[0];
    const outcome = await publish(
      deps,
      k.tenantId,
      [1, 2].map((n) => input(k.resource, n)),
    );
    const { answers, delivered } = await answeredAndDelivered(k, outcome);
    // Answered internal, it would be delivered and then sent again: twice.
    expect(answers).toEqual(['internal', 'accepted']);
    expect(delivered).toEqual([2]);
  });

  it("stops retrying a write's unprocessed items once its other batch failed, so none lands after the voids", async () => {
    const k = key();
    let tries = 0;
    let retried: Promise<unknown> = Promise.resolve();
    // Slots 26..30: left unprocessed on the first try (DynamoDB throttling the partition).
    const queues = oneBatchFails(async (items, send) => {
      if (++tries === 1) return { output: { UnprocessedItems: { [eventsTable]: items } }, response: {} };
      retried = send();
      return retried;
    });
    const deps = { ...ingestDeps([]), queues } as Parameters<typeof publish>[0];
    // None of its events stored: the request fails as a whole (500).
    await expect(
      publish(
        deps,
        k.tenantId,
        Array.from({ length: 30 }, (_, n) => input(k.resource, n + 1)),
      ),
    ).rejects.toThrow('Throughput exceeded');
    await new Promise((resolve) => setTimeout(resolve, 200));
    await retried;
    const { delivered } = await answeredAndDelivered(k, { results: [], httpStatus: 202, retryAfterSeconds: undefined });
    // Not retried once the other batch failed: nothing landed after the voids, and nothing is delivered.
    expect(delivered).toEqual([]);
    expect(tries).toBe(1);
  });

  it('answers stored events as accepted though their doorbell could not be rung, and the reconciler rings it', async () => {
    const k = key();
    const deps = {
      ...ingestDeps([]),
      doorbell: {
        ring: async () => {
          throw new Error('SQS unavailable');
        },
      },
    } as Parameters<typeof publish>[0];
    const outcome = await publish(deps, k.tenantId, [input(k.resource, 1), input(k.resource, 2)]);
    expect(outcome).toMatchObject({ httpStatus: 202, results: [{ status: 'accepted' }, { status: 'accepted' }] });
    expect(await store.readMeta(k)).toMatchObject({ scheduled: true, depth: 2 });
    const rings: string[] = [];
    const later = Date.now() + 120_000;
    await reconcile({
      queues: store,
      doorbell: { ring: async (o: ObjectKey, token: string) => void rings.push(`${o.resource}:${token}`) },
      switches: { list: async () => [] },
      config: buildConfig({}),
      metrics: NO_METRICS,
      logger: NO_LOGS,
      now: () => later,
    });
    expect(rings.some((r) => r.startsWith(`${k.resource}:`))).toBe(true);
  });

  it("answers an event whose idempotency key could not be claimed as not stored, and its object's later events with it; other objects' as accepted", async () => {
    const k = key();
    const base = ingestDeps([]);
    class FailingClaims extends IdempotencyStore {
      override async claim(...args: Parameters<IdempotencyStore['claim']>): ReturnType<IdempotencyStore['claim']> {
        if (args[1] === 'key-down') throw new Error('InternalServerError');
        return super.claim(...args);
      }
    }
    const deps = {
      ...base,
      idempotency: new FailingClaims({ client, tableName: eventsTable, retentionDays: 7, ingestGraceMs: 60_000 }),
    } as Parameters<typeof publish>[0];
    const other = key();
    const outcome = await publish(deps, k.tenantId, [
      { ...input(k.resource, 1), idempotencyKey: 'key-down' },
      { ...input(other.resource, 2), idempotencyKey: 'key-up' },
      input(other.resource, 3),
      // The same object's later events are not stored either: sent again after them, the first would come last.
      { ...input(k.resource, 4), idempotencyKey: 'key-after' },
      input(k.resource, 5),
    ]);
    expect(outcome.results.map((r) => (r.status === 'rejected' ? r.error.code : r.status))).toEqual([
      'internal',
      'accepted',
      'accepted',
      'internal',
      'internal',
    ]);
    expect(await store.readMeta(k)).toBeUndefined();
    // The claimed key was confirmed: sending it again is a duplicate.
    const again = await publish(deps, k.tenantId, [{ ...input(other.resource, 2), idempotencyKey: 'key-up' }]);
    expect(again.results).toMatchObject([{ status: 'duplicate' }]);
    // The key of the event left out was given back: sent again, it is accepted.
    const later = await publish(deps, k.tenantId, [{ ...input(k.resource, 4), idempotencyKey: 'key-after' }]);
    expect(later.results).toMatchObject([{ status: 'accepted' }]);
  });

  it("answers as not stored an event whose key could not name its slot, and the object's later events with it", async () => {
    const k = key();
    class FailingNotes extends IdempotencyStore {
      override async noteReservation(
        ...args: Parameters<IdempotencyStore['noteReservation']>
      ): ReturnType<IdempotencyStore['noteReservation']> {
        if (args[1] === 'note-down') throw new Error('InternalServerError');
        return super.noteReservation(...args);
      }
    }
    const deps = {
      ...ingestDeps([]),
      idempotency: new FailingNotes({ client, tableName: eventsTable, retentionDays: 7, ingestGraceMs: 60_000 }),
    } as Parameters<typeof publish>[0];
    const outcome = await publish(deps, k.tenantId, [
      { ...input(k.resource, 1), idempotencyKey: 'note-1' },
      { ...input(k.resource, 2), idempotencyKey: 'note-down' },
      { ...input(k.resource, 3), idempotencyKey: 'note-3' },
    ]);
    const { answers, delivered } = await answeredAndDelivered(k, outcome);
    // Without the cut, 3 was stored and delivered, and 2, sent again, came after it.
    expect(answers).toEqual(['accepted', 'internal', 'internal']);
    expect(delivered).toEqual([1]);
    const again = await publish(ingestDeps([]), k.tenantId, [
      { ...input(k.resource, 2), idempotencyKey: 'note-down' },
      { ...input(k.resource, 3), idempotencyKey: 'note-3' },
    ]);
    expect(again.results).toMatchObject([{ status: 'accepted' }, { status: 'accepted' }]);
    expect((await answeredAndDelivered(k, again)).delivered).toEqual([2, 3]);
  });

  it('fails a request as a whole (the API answers 500) when no idempotency key of it could be claimed and nothing was stored', async () => {
    const k = key();
    // DynamoDB failing every claim (the emulator cannot be made to), as it fails a reserve.
    class FailingClaims extends IdempotencyStore {
      override async claim(): ReturnType<IdempotencyStore['claim']> {
        throw new Error('InternalServerError');
      }
    }
    const rings: string[] = [];
    const deps = {
      ...ingestDeps(rings),
      idempotency: new FailingClaims({ client, tableName: eventsTable, retentionDays: 7, ingestGraceMs: 60_000 }),
    } as Parameters<typeof publish>[0];
    // Answered 202 with every event internal, the ingest-5xx alarm never saw the storage failing.
    await expect(
      publish(deps, k.tenantId, [
        { ...input(k.resource, 1), idempotencyKey: 'down-1' },
        { ...input(k.resource, 2), idempotencyKey: 'down-2' },
      ]),
    ).rejects.toThrow('InternalServerError');
    expect(await store.readMeta(k)).toBeUndefined();
    expect(rings).toEqual([]);
  });

  it('fails a request as a whole (the API answers 500) when none of its events could be written after their reserve', async () => {
    const k = key();
    // DynamoDB failing the batched write (the emulator cannot be made to): the reserve went through.
    class FailingWrites extends QueueStore {
      override async writeEventsOf(): Promise<void> {
        throw new Error('InternalServerError');
      }
    }
    const queues = new FailingWrites({ client, tableName: eventsTable, retentionDays: 7 });
    const deps = { ...ingestDeps([]), queues } as Parameters<typeof publish>[0];
    // Answered 202 with every event internal, the ingest-5xx alarm never saw the storage failing.
    await expect(publish(deps, k.tenantId, [input(k.resource, 1), input(k.resource, 2)])).rejects.toThrow('InternalServerError');
    // Nothing of it is delivered: its slots were voided.
    const { distributor, sent } = recordingDistributor({ ingestGraceMs: 60_000 });
    expect((await distributor.runTurn(k, 'w')).outcome).toBe('idle');
    expect(sent).toEqual([]);
  });

  it('recognises its own reserve when the SDK retried it after the answer to an applied first try was lost', async () => {
    // The first try of each reserve reaches DynamoDB, but its answer is lost (the
    // connection resets): the SDK tries again, as it does for such errors.
    const lossy = documentClient(emulators.dynamo);
    const answered = new WeakSet<object>();
    lossy.middlewareStack.add(
      (next) => async (args) => {
        const result = await next(args);
        const input = args.input as { UpdateExpression?: string };
        if (String(input.UpdateExpression).includes('ADD #depth :count, #last_slot :count') && !answered.has(args.input as object)) {
          answered.add(args.input as object);
          throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
        }
        return result;
      },
      { step: 'deserialize', name: 'loseFirstAnswer' },
    );
    const queues = new QueueStore({ client: lossy, tableName: eventsTable, retentionDays: 7 });
    for (const events of [1, 2]) {
      const k = key();
      const rings: string[] = [];
      const deps = { ...ingestDeps(rings), queues } as Parameters<typeof publish>[0];
      const outcome = await publish(
        deps,
        k.tenantId,
        Array.from({ length: events }, (_, n) => input(k.resource, n)),
      );
      expect(outcome.results.map((r) => r.status)).toEqual(Array(events).fill('accepted'));
      // Rung at once (its own first try flipped the object), each event stored once.
      expect(rings).toHaveLength(1);
      expect(await store.readMeta(k)).toMatchObject({ lastSlot: events, depth: events });
      const { distributor, seqs } = recordingDistributor({ ingestGraceMs: 60_000 });
      expect(await distributor.runTurn(k, 'w')).toMatchObject({ outcome: 'idle', distributed: events });
      expect(seqs()).toEqual(Array.from({ length: events }, (_, n) => n + 1));
    }
  });

  it("answers an object's events as not stored when its reserve fails, and still stores and rings the others", async () => {
    const [failing, fine] = [key(), key()];
    // DynamoDB failing one object's reserve (the emulator cannot be made to).
    class FailingReserve extends QueueStore {
      override async reserve(...args: Parameters<QueueStore['reserve']>): ReturnType<QueueStore['reserve']> {
        if (args[0].resource === failing.resource) throw new Error('InternalServerError');
        return super.reserve(...args);
      }
    }
    const queues = new FailingReserve({ client, tableName: eventsTable, retentionDays: 7 });
    const rings: string[] = [];
    const deps = { ...ingestDeps(rings), queues } as Parameters<typeof publish>[0];
    const outcome = await publish(deps, fine.tenantId, [input(failing.resource, 1), input(fine.resource, 2), input(fine.resource, 3)]);
    expect(outcome.results).toMatchObject([
      { status: 'rejected', error: { code: 'internal' } },
      { status: 'accepted' },
      { status: 'accepted' },
    ]);
    expect(rings).toEqual([`${fine.resource}:s1`]);
    const { distributor, sent } = recordingDistributor();
    expect((await distributor.runTurn(fine, 'w')).outcome).toBe('idle');
    expect(sent.flatMap((m) => m.events.map((e) => (e as DeliveredEvent).data))).toEqual([{ n: 2 }, { n: 3 }]);
    expect(await store.readMeta(failing)).toBeUndefined();
    // With nothing stored, the request fails as a whole (the API answers 500).
    await expect(publish(deps, fine.tenantId, [input(failing.resource, 4)])).rejects.toThrow('InternalServerError');
  });

  it('never lets concurrent ingests overshoot the cap', async () => {
    const k = key();
    const deps = ingestDeps([], { objectQueueCap: 20 });
    const outcomes = await Promise.all(Array.from({ length: 40 }, (_, n) => publish(deps, k.tenantId, [input(k.resource, n)])));
    const accepted = outcomes.filter((o) => o.results[0]?.status === 'accepted').length;
    expect(accepted).toBe(20);
    expect((await store.readMeta(k))?.depth).toBe(20);
    expect(await store.reserve(k, 1, { cap: 20, ratePerSecond: 1e6, burst: 1e6 }, Date.now(), false)).toBeUndefined();
  });

  it("delivers each object's events once and in the producer's order, whichever of its requests' writes, claims or slot names fail", async () => {
    const flags = fc.array(fc.boolean(), { minLength: 8, maxLength: 8 });
    const request = fc.record({
      objects: fc.array(fc.nat(1), { minLength: 1, maxLength: 8 }),
      // Which of the request's items DynamoDB writes when its write fails.
      written: flags,
      fails: fc.boolean(),
      // Which events carry an idempotency key, and of those which keys' claim or naming of their slot fails.
      keyed: flags,
      claimDown: flags,
      noteDown: flags,
    });
    await fc.assert(
      fc.asyncProperty(fc.array(request, { minLength: 1, maxLength: 6 }), async (requests) => {
        const objects = [key(), key()];
        let failing: { written: boolean[] } | undefined;
        // The emulator cannot be made to fail part of a write: this store writes some items, then throws.
        class PartlyWriting extends QueueStore {
          override async writeEventsOf(reservations: Parameters<QueueStore['writeEventsOf']>[0]): Promise<void> {
            if (!failing) return super.writeEventsOf(reservations);
            let item = 0;
            const { written } = failing;
            await super.writeEventsOf(reservations.map((r) => ({ ...r, events: r.events.filter(() => written[item++ % 8]) })));
            throw new Error('InternalServerError');
          }
        }
        const down = { claims: new Set<string>(), notes: new Set<string>() };
        class FailingKeys extends IdempotencyStore {
          override async claim(...args: Parameters<IdempotencyStore['claim']>): ReturnType<IdempotencyStore['claim']> {
            if (down.claims.has(args[1])) throw new Error('InternalServerError');
            return super.claim(...args);
          }
          override async noteReservation(
            ...args: Parameters<IdempotencyStore['noteReservation']>
          ): ReturnType<IdempotencyStore['noteReservation']> {
            if (down.notes.has(args[1])) throw new Error('InternalServerError');
            return super.noteReservation(...args);
          }
        }
        const deps = {
          ...ingestDeps([]),
          queues: new PartlyWriting({ client, tableName: eventsTable, retentionDays: 7 }),
          idempotency: new FailingKeys({ client, tableName: eventsTable, retentionDays: 7, ingestGraceMs: 60_000 }),
        };
        const { distributor, sent } = recordingDistributor({ ingestGraceMs: 60_000 });
        // The producer numbers each object's events and sends again, first and in order, what was not stored.
        const made = [0, 0];
        const owed: number[][] = [[], []];
        const send = async (spec: { objects: number[]; keyed?: boolean[]; claimDown?: boolean[]; noteDown?: boolean[] }) => {
          const batch = spec.objects.map((o) => ({ o, n: owed[o]?.shift() ?? ++(made[o] as number) }));
          down.claims.clear();
          down.notes.clear();
          const inputs = batch.map(({ o, n }, i) => {
            const resource = objects[o]?.resource as string;
            if (!spec.keyed?.[i]) return input(resource, n);
            // The same key each time the event is sent.
            const idempotencyKey = `${resource}-${n}`;
            if (spec.claimDown?.[i]) down.claims.add(idempotencyKey);
            if (spec.noteDown?.[i]) down.notes.add(idempotencyKey);
            return { ...input(resource, n), idempotencyKey };
          });
          const outcome = await publish(deps as Parameters<typeof publish>[0], objects[0]?.tenantId as string, inputs).catch(
            // Nothing stored and a claim failed: the API answers 500, and the producer sends it all again.
            () => ({ results: inputs.map(() => ({ status: 'rejected' as const })) }),
          );
          outcome.results.forEach((result, i) => {
            const { o, n } = batch[i] as { o: number; n: number };
            if (result.status !== 'accepted') owed[o]?.push(n);
          });
          for (const list of owed) list.sort((a, b) => a - b);
          for (const k of objects) {
            // An object nothing was ever reserved on has no queue to take a turn on.
            if (await store.readMeta(k)) expect((await distributor.runTurn(k, 'w')).outcome).toBe('idle');
          }
        };
        for (const r of requests) {
          failing = r.fails ? { written: r.written } : undefined;
          await send(r);
        }
        failing = undefined;
        down.claims.clear();
        while (owed.some((list) => list.length > 0)) await send({ objects: owed.flatMap((list, o) => list.map(() => o)) });
        const delivered = (k: ObjectKey) =>
          sent.flatMap((m) =>
            m.events.filter((e) => e.resource === k.resource).map((e) => ((e as DeliveredEvent).data as { n: number }).n),
          );
        objects.forEach((k, o) => {
          expect(delivered(k)).toEqual(Array.from({ length: made[o] as number }, (_, i) => i + 1));
        });
      }),
      { numRuns: 40, endOnFailure: true },
    );
  });
});

describe('leases and fencing', () => {
  it('admits one holder at a time and a new one after expiry, with a higher fence', async () => {
    const k = key();
    await reserveSlots(k, 1, Date.now());
    const now = Date.now();
    const first = await store.acquireLease(k, 'a', now, 1_000);
    await expect(store.acquireLease(k, 'b', now + 10, 1_000)).rejects.toBeInstanceOf(LeaseHeldError);
    const second = await store.acquireLease(k, 'b', now + 1_001, 1_000);
    expect(second.fence).toBe(first.fence + 1);
  });

  it('rejects every write of a fenced-out holder', async () => {
    const k = key();
    const now = Date.now();
    await reserveSlots(k, 2, now);
    const stale = await store.acquireLease(k, 'stale', now, 1_000);
    await store.acquireLease(k, 'fresh', now + 2_000, 1_000);
    await expect(
      store.commitChunk(k, stale.fence, stale.cursor, { cursor: 1, seq: 1, consumed: 1, turn: { fromSlot: 1, toSlot: 1, firstSeq: 1 } }),
    ).rejects.toBeInstanceOf(FencedOutError);
    await expect(store.finishTurn(k, stale.fence, Date.now())).rejects.toBeInstanceOf(FencedOutError);
    expect(await store.readMeta(k)).toMatchObject({ cursor: 0, seq: 0, depth: 2 });
  });

  it('does not back off when the lease is held: it leaves the object to its holder', async () => {
    const k = key();
    const rings: string[] = [];
    await publish(ingestDeps(rings), k.tenantId, [input(k.resource, 1)]);
    await store.acquireLease(k, 'other', Date.now(), 30_000);
    const { distributor, sent } = recordingDistributor();
    const started = Date.now();
    expect((await distributor.runTurn(k, 'me')).outcome).toBe('lease_held');
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(sent).toHaveLength(0);
  });
});

describe('turns', () => {
  it('drains a bounded turn, then rings again for the rest', async () => {
    const k = key();
    const rings: string[] = [];
    await publish(
      ingestDeps(rings),
      k.tenantId,
      Array.from({ length: 100 }, (_, n) => input(k.resource, n)),
    );
    await publish(
      ingestDeps(rings),
      k.tenantId,
      Array.from({ length: 30 }, (_, n) => input(k.resource, 100 + n)),
    );
    const { distributor, seqs, rings: rerings } = recordingDistributor({ turnMaxEvents: 50 });
    expect(await distributor.runTurn(k, 'w')).toEqual({ outcome: 'rerung', distributed: 50 });
    expect(rerings).toHaveLength(1);
    expect(await distributor.runTurn(k, 'w')).toEqual({ outcome: 'rerung', distributed: 50 });
    expect(await distributor.runTurn(k, 'w')).toEqual({ outcome: 'idle', distributed: 30 });
    expect(seqs()).toEqual(Array.from({ length: 130 }, (_, i) => i + 1));
    expect(await store.readMeta(k)).toMatchObject({ depth: 0, cursor: 130, seq: 130, scheduled: false });
  });

  it('publishes a crashed holder’s committed chunk again with the same seqs', async () => {
    const k = key();
    await publish(
      ingestDeps([]),
      k.tenantId,
      [1, 2, 3].map((n) => input(k.resource, n)),
    );
    // A holder commits slots 1-3 as seqs 1-3 and dies before publishing them.
    const now = Date.now();
    const crashed = await store.acquireLease(k, 'crashed', now, 1_000);
    await store.commitChunk(k, crashed.fence, 0, { cursor: 3, seq: 3, consumed: 3, turn: { fromSlot: 1, toSlot: 3, firstSeq: 1 } });
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 4)]);

    const { distributor, sent, seqs } = recordingDistributor({}, () => Date.now() + 2_000);
    expect(await distributor.runTurn(k, 'next')).toMatchObject({ outcome: 'idle', distributed: 4 });
    expect(seqs()).toEqual([1, 2, 3, 4]);
    expect(sent.flatMap((m) => m.events.map((e) => (e.data as { n: number }).n))).toEqual([1, 2, 3, 4]);
  });

  it("publishes a crashed holder's chunk again with the seqs it planned, though more of its events have expired since", async () => {
    const k = key();
    const day = 86_400_000;
    const now = Date.now();
    // Slot 1 was reserved 8 days ago (expired); slots 2-3 expire 5 s from now.
    for (const [count, reservedAt] of [
      [1, now - 8 * day],
      [2, now - 7 * day + 5_000],
    ] as const) {
      const r = await reserveSlots(k, count, reservedAt);
      const events = Array.from({ length: count }, (_, i) => ({
        id: `evt_${r.firstSlot + i}`,
        slot: r.firstSlot + i,
        input: input(k.resource, r.firstSlot + i),
        createdAt: new Date(reservedAt).toISOString(),
      }));
      await store.writeEventsOf([{ key: k, events, reservedAt }]);
    }
    // A holder planned slots 1-3 now (slot 1 expired: slots 2-3 became seqs 1-2), committed, and died.
    const crashed = await store.acquireLease(k, 'crashed', now, 1_000);
    await store.commitChunk(k, crashed.fence, 0, {
      cursor: 3,
      seq: 2,
      consumed: 3,
      turn: { fromSlot: 1, toSlot: 3, firstSeq: 1, plannedAt: now },
    });
    const { distributor, sent } = recordingDistributor({}, () => now + 10_000);
    expect(await distributor.runTurn(k, 'next')).toMatchObject({ outcome: 'idle', distributed: 2 });
    expect(sent.flatMap((m) => m.events.map((e) => `${(e.data as { n: number }).n}#${e.seq}`))).toEqual(['2#1', '3#2']);
  });

  it('never gives a seq already published to another event when a holder dies before its last write and some of its events expire meanwhile', async () => {
    const k = key();
    const day = 86_400_000;
    const t0 = Date.now();
    // Slots 1-2 expire 20 s after t0 (a week-old backlog, a pause just lifted); slot 3 is new.
    for (const [count, reservedAt] of [
      [2, t0 - 7 * day + 20_000],
      [1, t0],
    ] as const) {
      const r = await reserveSlots(k, count, reservedAt);
      const events = Array.from({ length: count }, (_, i) => ({
        id: `evt_${r.firstSlot + i}`,
        slot: r.firstSlot + i,
        input: input(k.resource, r.firstSlot + i),
        createdAt: new Date(reservedAt).toISOString(),
      }));
      await store.writeEventsOf([{ key: k, events, reservedAt }]);
    }
    // A holder publishes the three events as seqs 1-3 and dies before its last write.
    class DyingStore extends QueueStore {
      override async commitLastChunk(): Promise<'idle' | 'pending'> {
        throw new Error('the holder died');
      }
      override async finishTurn(): Promise<'idle' | 'pending'> {
        throw new Error('the holder died');
      }
    }
    const dying = new DyingStore({ client, tableName: eventsTable, retentionDays: 7 });
    const first = recordingDistributor({}, () => t0 + 1_000, dying);
    await expect(first.distributor.runTurn(k, 'dies')).rejects.toThrow('the holder died');
    // The next holder comes a minute later, once slots 1-2 have expired.
    const next = recordingDistributor({}, () => t0 + 60_000);
    await next.distributor.runTurn(k, 'next');
    const seqOf = new Map<number, string>();
    for (const e of [...first.sent, ...next.sent].flatMap((m) => m.events)) {
      if (e.type === 'sluice.gap') continue;
      expect(seqOf.get(e.seq) ?? e.id).toBe(e.id);
      seqOf.set(e.seq, e.id);
    }
    expect(seqOf.size).toBe(3);
    expect(await store.readMeta(k)).toMatchObject({ depth: 0, cursor: 3, seq: 3, scheduled: false });
  });

  it('publishes a chunk again as it was planned when an event expired between the lease and the plan: none lost, no seq changed', async () => {
    const k = key();
    const day = 86_400_000;
    // An event kept on the meta item that expires at E (a week old, a pause just lifted,
    // say), and a newer one in a slot after it.
    const E = Math.floor((Date.now() + 10_000) / 1000) * 1000;
    const limits = { cap: 100, ratePerSecond: 1e6, burst: 1e6 };
    const reservedAt = E - 7 * day;
    const kept = await store.reserve(k, 1, limits, reservedAt, false, {
      id: 'evt_kept',
      input: input(k.resource, 1),
      createdAt: new Date(reservedAt).toISOString(),
    });
    expect(kept?.inlined).toBe(true);
    const later = await reserveSlots(k, 1, E - 1_000);
    await store.writeEventsOf([
      {
        key: k,
        events: [{ id: 'evt_slot', slot: later.firstSlot, input: input(k.resource, 2), createdAt: new Date(E - 1_000).toISOString() }],
        reservedAt: E - 1_000,
      },
    ]);
    // The first holder takes its lease just before E and plans just after it, then dies
    // publishing (its chunk near expiry, it commits first, with a turn record, if it takes
    // the kept event: judged at the lease, it would; judged at the plan, it has expired).
    let calls = 0;
    const attempted: DeliveredEvent[] = [];
    const first = new Distributor({
      ...recordingDistributorDeps(store, {}, () => (calls++ === 0 ? E - 1 : E + 1)),
      deliveries: {
        send: async (messages) => {
          for (const m of messages) attempted.push(...(m.events as DeliveredEvent[]));
          throw new Error('the holder died');
        },
      },
    });
    await expect(first.runTurn(k, 'dies')).rejects.toThrow('the holder died');
    const next = recordingDistributor({}, () => E + 60_000);
    await next.distributor.runTurn(k, 'next');
    // Every event has one seq, whoever published it; the expired one is counted in a
    // retention marker, not lost; and the meta item numbers what was published.
    const seqs = new Map<string, Set<number>>();
    for (const e of [...attempted, ...next.sent.flatMap((m) => m.events)]) {
      if (e.type !== 'sluice.gap') seqs.set(e.id, (seqs.get(e.id) ?? new Set()).add(e.seq));
    }
    expect([...seqs]).toEqual([['evt_slot', new Set([1])]]);
    const markers = next.sent.flatMap((m) => m.events).filter((e) => e.type === 'sluice.gap');
    expect(markers.map((e) => e.data)).toEqual([{ dropped: 1, reason: 'retention' }]);
    expect(await store.readMeta(k)).toMatchObject({ depth: 0, cursor: 2, seq: 1 });
  });

  it('goes on after a holder died in the middle of a drop-switch turn, and marks what it dropped when the switch is lifted', async () => {
    const k = key();
    await publish(
      ingestDeps([]),
      k.tenantId,
      [1, 2, 3].map((n) => input(k.resource, n)),
    );
    // The holder drops the chunk (committing it), then dies before it ends the turn.
    class DyingStore extends QueueStore {
      override async finishTurn(): Promise<'idle' | 'pending'> {
        throw new Error('holder died');
      }
    }
    const { distributor: dying } = droppingDistributor(k, new DyingStore({ client, tableName: eventsTable, retentionDays: 7 }));
    await expect(dying.runTurn(k, 'dying')).rejects.toThrow('holder died');
    expect((await store.readMeta(k))?.turn).toBeUndefined();

    const { distributor, sent } = recordingDistributor({}, () => Date.now() + 60_000);
    expect(await distributor.runTurn(k, 'next')).toMatchObject({ outcome: 'idle', distributed: 0 });
    expect(sent.flatMap((m) => m.events)).toMatchObject([{ type: 'sluice.gap', data: { dropped: 3, reason: 'switch_drop' } }]);
  });

  it('reads the switches afresh before it leaves an object paused: a cache that still shows a lifted pause does not strand its events', async () => {
    const k = key();
    await publish(
      ingestDeps([]),
      k.tenantId,
      [1, 2].map((n) => input(k.resource, n)),
    );
    // This container read the switches while the pause was on; it has been lifted since
    // (its lift rang the objects that were waiting then, not this one, rung after by its ingest).
    const pause = resourcePause(k);
    const { sent, rings, ...deps } = recordingDistributorDeps();
    const distributor = new Distributor({ ...deps, switches: { current: async () => [pause], refresh: async () => [] } });
    expect(await distributor.runTurn(k, 'stale')).toMatchObject({ outcome: 'idle', distributed: 2 });
    expect(sent.flatMap((m) => m.events.map((e) => e.seq))).toEqual([1, 2]);

    // A pause still in force leaves the object scheduled, for its lift to ring.
    const held = key();
    await publish(ingestDeps([]), held.tenantId, [input(held.resource, 1)]);
    const inForce = { ...pause, target: held.resource };
    const paused = new Distributor({ ...deps, switches: { current: async () => [inForce], refresh: async () => [inForce] } });
    expect(await paused.runTurn(held, 'paused')).toMatchObject({ outcome: 'paused', distributed: 0 });
    expect(await store.readMeta(held)).toMatchObject({ scheduled: true, depth: 1 });
    expect(rings).toEqual([]);
  });

  it('rings an object it left paused when the pause was lifted meanwhile: the lift rang while this turn held the lease', async () => {
    const k = key();
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 1)]);
    // The pause is in force when the turn reads it, and lifted before its paused end is
    // written: the lift's ring found this turn's lease (in the other lane) and was let go.
    const pause = resourcePause(k);
    let reads = 0;
    const { sent, rings, ...deps } = recordingDistributorDeps();
    const distributor = new Distributor({
      ...deps,
      switches: { current: async () => [pause], refresh: async () => (reads++ === 0 ? [pause] : []) },
    });
    expect(await distributor.runTurn(k, 'lifted')).toMatchObject({ outcome: 'rerung', distributed: 0 });
    expect(rings).toHaveLength(1);
    expect(await store.readMeta(k)).toMatchObject({ scheduled: true, depth: 1 });
    // Its ring's turn delivers it.
    expect(await new Distributor({ ...deps, switches: NO_SWITCHES }).runTurn(k, 'next')).toMatchObject({ distributed: 1 });
    expect(sent.flatMap((m) => m.events.map((e) => e.seq))).toEqual([1]);
  });

  it('reads the switches afresh before it drops: a cache that still shows a lifted drop does not leave a marker owed with nothing to ring for it', async () => {
    const k = key();
    await publish(
      ingestDeps([]),
      k.tenantId,
      [1, 2].map((n) => input(k.resource, n)),
    );
    const lifted: Switch = { ...resourcePause(k), action: 'drop' };
    const { sent, rings, ...deps } = recordingDistributorDeps();
    const distributor = new Distributor({ ...deps, switches: { current: async () => [lifted], refresh: async () => [] } });
    expect(await distributor.runTurn(k, 'stale')).toMatchObject({ outcome: 'idle', distributed: 2 });
    expect(sent.flatMap((m) => m.events.map((e) => e.seq))).toEqual([1, 2]);
    expect(await store.readMeta(k)).toMatchObject({ depth: 0, scheduled: false, switchDropped: 0 });
  });

  it('ends a turn on a quiet object with one write after the lease, and goes idle', async () => {
    const k = key();
    await publish(
      ingestDeps([]),
      k.tenantId,
      [1, 2].map((n) => input(k.resource, n)),
    );
    const { counts, queues } = counted();
    const { distributor: measured, seqs: measuredSeqs } = recordingDistributor({}, Date.now, queues);
    expect(await measured.runTurn(k, 'w')).toMatchObject({ outcome: 'idle', distributed: 2 });
    expect(measuredSeqs()).toEqual([1, 2]);
    // The lease, one read, and the write that commits and ends the turn.
    expect(counts.calls.dynamodb).toEqual({ UpdateItemCommand: 2, QueryCommand: 1 });
    expect(await store.readMeta(k)).toMatchObject({ depth: 0, cursor: 2, seq: 2, scheduled: false });
  });

  it('ends a turn out of time with events left behind in one write that keeps the object scheduled, and rings again', async () => {
    const k = key();
    await publish(
      ingestDeps([]),
      k.tenantId,
      [1, 2, 3].map((n) => input(k.resource, n)),
    );
    const { counts, queues } = counted();
    const { distributor, seqs, rings } = recordingDistributor({ turnMaxEvents: 2 }, Date.now, queues);
    expect(await distributor.runTurn(k, 'w')).toEqual({ outcome: 'rerung', distributed: 2 });
    // The lease, one read, the chunk's commit and the write that releases the lease: no
    // write for idle that the event left behind would refuse.
    expect(counts.calls.dynamodb).toEqual({ UpdateItemCommand: 3, QueryCommand: 1 });
    expect(rings).toHaveLength(1);
    expect(await store.readMeta(k)).toMatchObject({ depth: 1, cursor: 2, seq: 2, scheduled: true, leaseUntil: undefined });
    expect(await distributor.runTurn(k, 'w')).toEqual({ outcome: 'idle', distributed: 1 });
    expect(seqs()).toEqual([1, 2, 3]);
  });

  it.each([
    ['with time left', 0],
    // Releasing the lease then would waste the write that kept it.
    ['though its time ran out during the write that kept the lease', 5_000],
  ])('goes on with an event that arrives between the lease and the last write, %s, in the same turn and in order', async (_, jumpMs) => {
    const k = key();
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 1)]);
    // Event 2 comes (and the clock jumps), after the turn chose to keep its lease.
    let late = 0;
    const racing = racedStore(async () => {
      await publish(ingestDeps([]), k.tenantId, [input(k.resource, 2)]);
      late = jumpMs;
    });
    const { distributor, rings, seqs } = recordingDistributor({}, () => Date.now() + late, racing);
    expect(await distributor.runTurn(k, 'w')).toEqual({ outcome: 'idle', distributed: 2 });
    expect(seqs()).toEqual([1, 2]);
    // No doorbell, no second invocation, no second lease (each take raises the fence): the turn kept its lease.
    expect(rings).toEqual([]);
    expect(await store.readMeta(k)).toMatchObject({ depth: 0, cursor: 2, seq: 2, scheduled: false, fence: 1 });
  });

  it('rings again for an event that arrives between the lease and the last write when the turn has no time left', async () => {
    const k = key();
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 1)]);
    const racing = racedStore(() => publish(ingestDeps([]), k.tenantId, [input(k.resource, 2)]));
    const { distributor, rings, seqs } = recordingDistributor({ turnMaxEvents: 1 }, Date.now, racing);
    expect(await distributor.runTurn(k, 'w')).toMatchObject({ outcome: 'rerung', distributed: 1 });
    expect(seqs()).toEqual([1]);
    expect(rings).toHaveLength(1);
    expect(await store.readMeta(k)).toMatchObject({ depth: 1, cursor: 1, scheduled: true });
    expect((await store.readMeta(k))?.leaseUntil).toBeUndefined();
  });

  it('waits within its turn for an event reserved meanwhile, and rings again when its ingest has not written it by the end', async () => {
    const k = key();
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 1)]);
    const racing = racedStore(() => reserveSlots(k, 1, Date.now()));
    const { distributor, rings, seqs } = recordingDistributor({ turnMaxMs: 300 }, Date.now, racing);
    expect(await distributor.runTurn(k, 'w')).toMatchObject({ outcome: 'rerung', distributed: 1 });
    expect(seqs()).toEqual([1]);
    expect(rings).toHaveLength(1);
    expect(await store.readMeta(k)).toMatchObject({ depth: 1, cursor: 1, scheduled: true });
  });

  /** A holder of `k` that publishes its turn and dies before its last write: what it sent. */
  async function diesBeforeLastWrite(k: ObjectKey) {
    class DyingStore extends QueueStore {
      override async commitLastChunk(): Promise<'idle' | 'pending'> {
        throw new Error('the holder died');
      }
    }
    const dying = new DyingStore({ client, tableName: eventsTable, retentionDays: 7 });
    const first = recordingDistributor({ leaseMs: 500, turnMaxMs: 400 }, Date.now, dying);
    await expect(first.distributor.runTurn(k, 'dies')).rejects.toThrow('the holder died');
    return first;
  }

  it('publishes the same seqs and delivery ids again when a holder dies between publishing and its last write', async () => {
    const k = key();
    await publish(
      ingestDeps([]),
      k.tenantId,
      [1, 2].map((n) => input(k.resource, n)),
    );
    const first = await diesBeforeLastWrite(k);
    const next = recordingDistributor({}, () => Date.now() + 1_000);
    expect(await next.distributor.runTurn(k, 'next')).toMatchObject({ outcome: 'idle', distributed: 2 });
    expect(next.seqs()).toEqual(first.seqs());
    expect(next.sent.map((m) => m.deliveryId)).toEqual(first.sent.map((m) => m.deliveryId));
  });

  it('publishes the events of a holder that died before its last write again under another delivery id when more of its object came meanwhile', async () => {
    const k = key();
    const deps = ingestDeps([]);
    await publish(
      deps,
      k.tenantId,
      [1, 2].map((n) => input(k.resource, n)),
    );
    const first = await diesBeforeLastWrite(k);
    // A third event comes before the next holder: it plans the three as one chunk.
    await publish(deps, k.tenantId, [input(k.resource, 3)]);
    const next = recordingDistributor({}, () => Date.now() + 1_000);
    expect(await next.distributor.runTurn(k, 'next')).toMatchObject({ outcome: 'idle', distributed: 3 });
    // The same events with the same seqs (README: drop duplicates by the events' id), under another webhook-id.
    expect(first.sent.map((m) => m.events.map((e) => [e.id, e.seq]))).toEqual([
      [
        ['evt_1', 1],
        ['evt_2', 2],
      ],
    ]);
    expect(next.sent.map((m) => m.events.map((e) => [e.id, e.seq]))).toEqual([
      [
        ['evt_1', 1],
        ['evt_2', 2],
        ['evt_3', 3],
      ],
    ]);
    expect(next.sent[0]?.deliveryId).not.toBe(first.sent[0]?.deliveryId);
  });

  it("merges the deliveries of one invocation's turns to one webhook into one delivery, and every object goes idle", async () => {
    const keys = Array.from({ length: 10 }, () => key());
    const deps = ingestDeps([]);
    await publish(
      deps,
      'ten_test',
      keys.flatMap((k) => [input(k.resource, 1), input(k.resource, 2)]),
    );
    const { distributor, sent } = recordingDistributor();
    const handler = makeDistributorHandler(distributor, NO_LOGS);
    // One SQS batch of ten doorbells, one per object (message group), as Lambda hands it over.
    const records = keys.map((k, i) => ({
      messageId: `m${i}`,
      body: JSON.stringify({ tenant: k.tenantId, resource: k.resource }),
      attributes: { MessageGroupId: `${k.tenantId}#${k.resource}` },
    }));
    const response = await handler({ Records: records } as unknown as SQSEvent, {} as Context);
    expect(response.batchItemFailures).toEqual([]);
    expect(sent).toHaveLength(1);
    const events = sent[0]?.events ?? [];
    expect(events).toHaveLength(20);
    for (const k of keys) {
      expect(events.filter((e) => e.resource === k.resource).map((e) => e.seq)).toEqual([1, 2]);
      expect(await store.readMeta(k)).toMatchObject({ depth: 0, scheduled: false });
    }
  });

  it('counts and logs a doorbell whose turn failed, which fails no invocation (Lambda counts no error for it)', async () => {
    const [broken, fine] = [key(), key()];
    await publish(ingestDeps([]), 'ten_test', [input(broken.resource, 1), input(fine.resource, 1)]);
    // DynamoDB refuses the lease of one object.
    class RefusingStore extends QueueStore {
      override async acquireLease(...args: Parameters<QueueStore['acquireLease']>) {
        if (args[0].resource === broken.resource) throw Object.assign(new Error('Internal server error'), { name: 'InternalServerError' });
        return super.acquireLease(...args);
      }
    }
    const { distributor } = recordingDistributor({}, Date.now, new RefusingStore({ client, tableName: eventsTable, retentionDays: 7 }));
    const counted: string[] = [];
    const logged: Array<{ message: string; fields: Record<string, unknown> }> = [];
    const logger = { ...NO_LOGS, error: (message: string, fields: Record<string, unknown> = {}) => void logged.push({ message, fields }) };
    const handler = makeDistributorHandler(distributor, logger, { count: (name) => void counted.push(name) });
    const records = [broken, fine].map((k, i) => ({
      messageId: `m${i}`,
      body: JSON.stringify({ tenant: k.tenantId, resource: k.resource }),
      // The group id as the doorbell sends it: a hash, which names nobody to on-call.
      attributes: { MessageGroupId: objectGroupId(k), ApproximateReceiveCount: '2' },
    }));
    const response = await handler({ Records: records } as unknown as SQSEvent, {} as Context);
    expect(response.batchItemFailures).toEqual([{ itemIdentifier: 'm0' }]);
    expect(counted).toEqual([RECORD_FAILURE_METRICS.distributor]);
    // The line names the object whose turn failed, as the deliver-queue's names its webhook.
    expect(logged).toMatchObject([
      {
        message: expect.stringContaining('doorbell record failed'),
        fields: {
          tenant: broken.tenantId,
          resource: broken.resource,
          messageId: 'm0',
          receiveCount: 2,
          error: { name: 'InternalServerError' },
        },
      },
    ]);
    expect(await store.readMeta(fine)).toMatchObject({ depth: 0, scheduled: false });
  });

  it('says when a failed doorbell is at its last receive, which SQS moves to the dead-letter queue instead of giving back', async () => {
    const { distributor } = recordingDistributor({});
    const logged: Array<{ message: string; fields: Record<string, unknown> }> = [];
    const logger = { ...NO_LOGS, error: (message: string, fields: Record<string, unknown> = {}) => void logged.push({ message, fields }) };
    const handler = makeDistributorHandler(distributor, logger);
    // A body no turn can read fails at every receive: the 9th comes back, the 10th (maxReceiveCount) does not.
    for (const count of [DISTRIBUTE_QUEUE.maxReceiveCount - 1, DISTRIBUTE_QUEUE.maxReceiveCount]) {
      const record = { messageId: `m${count}`, body: '{}', attributes: { MessageGroupId: 'g', ApproximateReceiveCount: String(count) } };
      await handler({ Records: [record] } as unknown as SQSEvent, {} as Context);
    }
    expect(logged.map((line) => [line.message, line.fields.receiveCount, line.fields.deadLettered])).toEqual([
      ['A doorbell record failed; SQS brings it back after its visibility timeout', 9, undefined],
      [expect.stringContaining('at its last receive; SQS moves it to the dead-letter queue'), 10, true],
    ]);
  });

  it("ends a long turn early when other objects' doorbells share its batch, and rings again for the rest", async () => {
    const hot = key();
    const calm = key();
    const deps = ingestDeps([]);
    await publish(
      deps,
      hot.tenantId,
      Array.from({ length: 100 }, (_, i) => input(hot.resource, i)),
    );
    await publish(
      deps,
      hot.tenantId,
      Array.from({ length: 100 }, (_, i) => input(hot.resource, 100 + i)),
    );
    await publish(
      deps,
      hot.tenantId,
      Array.from({ length: 100 }, (_, i) => input(hot.resource, 200 + i)),
    );
    await publish(deps, calm.tenantId, [input(calm.resource, 1)]);
    const sent: DeliveryMessage[] = [];
    const rings: string[] = [];
    // Publishing takes 40 ms here, so a chunk of 100 events takes at least that.
    const slow = new Distributor({
      queues: store,
      switches: NO_SWITCHES,
      subscriptions: { onResource: async () => [webhook] },
      deliveries: {
        send: async (messages) => {
          await new Promise((resolve) => setTimeout(resolve, 40));
          sent.push(...messages);
        },
      },
      doorbell: { ring: async (k, token) => void rings.push(`${k.resource}:${token}`) },
      config: buildConfig({ sharedTurnMaxMs: 60 }),
      metrics: NO_METRICS,
      logger: NO_LOGS,
      now: Date.now,
      sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    });
    const handler = makeDistributorHandler(slow, NO_LOGS);
    const record = (k: ObjectKey) => ({
      messageId: k.resource,
      body: JSON.stringify({ tenant: k.tenantId, resource: k.resource }),
      attributes: { MessageGroupId: `${k.tenantId}#${k.resource}` },
    });
    await handler({ Records: [record(hot), record(calm)] } as unknown as SQSEvent, {} as Context);
    const hotEvents = () => sent.flatMap((m) => m.events).filter((e) => e.resource === hot.resource).length;
    expect(hotEvents()).toBeLessThan(300);
    expect(rings).toEqual([expect.stringContaining(`${hot.resource}:t`)]);
    expect(await store.readMeta(calm)).toMatchObject({ depth: 0, scheduled: false });
    // Alone in its batch, the object gets the whole turn budget and drains.
    await handler({ Records: [record(hot)] } as unknown as SQSEvent, {} as Context);
    expect(hotEvents()).toBe(300);
    expect(await store.readMeta(hot)).toMatchObject({ depth: 0, scheduled: false });
  });

  it("runs one object's turns in one invocation until one rings it again: its later doorbells in the batch wait behind that ring", async () => {
    // SQS hands a FIFO group's messages over together, as many as it can (the sandbox's
    // emulator one a receive): the object's doorbell, a turn's ring and the reconciler's
    // copies of a doorbell that waited in a backlog. Each ran a whole turn, one after the
    // other, so four at the largest turnMaxMs (7.5 s) took 30 s, past the distributor's
    // 20 s timeout, and Lambda gave the whole batch back.
    const hot = key();
    const deps = ingestDeps([]);
    for (let b = 0; b < 8; b++) {
      await publish(
        deps,
        hot.tenantId,
        Array.from({ length: 100 }, (_, i) => input(hot.resource, b * 100 + i)),
      );
    }
    const sent: DeliveryMessage<DeliveredEvent>[] = [];
    const rings: string[] = [];
    const turnMaxMs = 150;
    // Publishing takes 40 ms here, so a chunk of 100 events takes at least that.
    const slow = new Distributor({
      ...recordingDistributorDeps(),
      deliveries: {
        send: async (messages) => {
          await new Promise((resolve) => setTimeout(resolve, 40));
          sent.push(...(messages as DeliveryMessage<DeliveredEvent>[]));
        },
      },
      doorbell: { ring: async (k, token) => void rings.push(`${k.resource}:${token}`) },
      config: buildConfig({ turnMaxMs }),
    });
    const handler = makeDistributorHandler(slow, NO_LOGS);
    const doorbells = (n: number) => ({
      Records: Array.from({ length: n }, (_, i) => ({
        messageId: `m${i}`,
        body: JSON.stringify({ tenant: hot.tenantId, resource: hot.resource }),
        attributes: { MessageGroupId: `${hot.tenantId}#${hot.resource}`, ApproximateReceiveCount: '1' },
      })),
    });
    const response = await handler(doorbells(4) as unknown as SQSEvent, {} as Context);
    expect(response.batchItemFailures).toEqual([]);
    // One turn, which rang the object again, not four one after the other.
    expect(rings).toEqual([expect.stringContaining(`${hot.resource}:t`)]);
    // The ring it left drains the rest, in order, nothing lost.
    for (let i = 0; i < 20 && (await store.readMeta(hot))?.scheduled; i++) {
      await handler(doorbells(1) as unknown as SQSEvent, {} as Context);
    }
    expect(sent.flatMap((m) => m.events.map((e) => e.seq))).toEqual(Array.from({ length: 800 }, (_, i) => i + 1));
    expect(await store.readMeta(hot)).toMatchObject({ depth: 0, scheduled: false });
  });

  it("runs a turn for each doorbell of an object in one invocation while none rang it again: an idle object's doorbell is its only one", async () => {
    const k = key();
    const rings: string[] = [];
    const deps = ingestDeps(rings);
    await publish(deps, k.tenantId, [input(k.resource, 1)]);
    const { distributor, sent } = recordingDistributor();
    const handler = makeDistributorHandler(distributor, NO_LOGS);
    // The first doorbell's turn leaves the object idle; an event written then rings it
    // again, and that doorbell (here, the batch's second) must still run its turn.
    let written = false;
    const record = (i: number) => ({
      messageId: `m${i}`,
      body: JSON.stringify({ tenant: k.tenantId, resource: k.resource }),
      attributes: { MessageGroupId: `${k.tenantId}#${k.resource}`, ApproximateReceiveCount: '1' },
    });
    const records = [record(0), record(1)];
    const original = distributor.runTurn.bind(distributor);
    distributor.runTurn = async (...args) => {
      const result = await original(...args);
      if (!written) {
        written = true;
        await publish(deps, k.tenantId, [input(k.resource, 2)]);
      }
      return result;
    };
    await handler({ Records: records } as unknown as SQSEvent, {} as Context);
    expect(sent.flatMap((m) => m.events.map((e) => e.seq))).toEqual([1, 2]);
    expect(await store.readMeta(k)).toMatchObject({ depth: 0, scheduled: false });
  });

  it('skips a slot abandoned by a dead ingest after the grace period, without losing later events', async () => {
    const k = key();
    const old = Date.now() - 120_000;
    // Ingest A reserved slot 1 and died; ingest B reserved slot 2 and wrote it.
    await reserveSlots(k, 1, old);
    const b = await reserveSlots(k, 1, old);
    await store.writeEvents(
      k,
      [{ id: 'evt_b', slot: b.firstSlot, input: input(k.resource, 2), createdAt: new Date(old).toISOString() }],
      old,
    );
    const { distributor, sent } = recordingDistributor();
    expect(await distributor.runTurn(k, 'w')).toMatchObject({ outcome: 'idle', distributed: 1 });
    expect(sent.flatMap((m) => m.events.map((e) => [e.id, e.seq]))).toEqual([['evt_b', 1]]);
    expect(await store.readMeta(k)).toMatchObject({ depth: 0, cursor: 2 });
  });

  it('waits for an ingest that is between its two writes', async () => {
    const k = key();
    const now = Date.now();
    const reservation = await reserveSlots(k, 1, now);
    const { distributor, seqs } = recordingDistributor();
    const turn = distributor.runTurn(k, 'w');
    await new Promise((resolve) => setTimeout(resolve, 50));
    await store.writeEvents(k, [{ id: 'evt_late', slot: reservation.firstSlot, input: input(k.resource, 1), createdAt: '' }], now);
    expect(await turn).toMatchObject({ outcome: 'idle', distributed: 1 });
    expect(seqs()).toEqual([1]);
  });

  it('waits for an ingest that never writes its slot (it died) with pauses that grow, not a read every 20 ms for the whole turn', async () => {
    const k = key();
    await reserveSlots(k, 1, Date.now());
    const pauses: number[] = [];
    const { sent, rings, ...deps } = recordingDistributorDeps(store, { ingestGraceMs: 60_000 });
    const distributor = new Distributor({
      ...deps,
      sleep: (ms) => {
        pauses.push(ms);
        return new Promise((resolve) => setTimeout(resolve, ms));
      },
    });
    // The turn's 2 s run out with the slot still missing: the object is rung for a later turn.
    expect(await distributor.runTurn(k, 'w')).toMatchObject({ distributed: 0 });
    expect(sent).toEqual([]);
    expect(pauses[0]).toBe(20);
    expect(pauses.length).toBeLessThan(15);
    expect(rings).toHaveLength(1);
  });

  it('goes idle only when nothing is left, so a reservation racing the end of a turn is never stranded', async () => {
    const k = key();
    const rings: string[] = [];
    await publish(ingestDeps(rings), k.tenantId, [input(k.resource, 1)]);
    const meta = await store.acquireLease(k, 'w', Date.now(), 30_000);
    // An ingest reserves while the holder is finishing: scheduled is already true, so it does not ring.
    const late = await reserveSlots(k, 1, Date.now());
    expect(late.flipped).toBe(false);
    expect(await store.finishTurn(k, meta.fence, Date.now())).toBe('pending');
    expect((await store.readMeta(k))?.scheduled).toBe(true);
  });
});

describe('reading many objects at once', () => {
  it('leaves out what DynamoDB leaves unread (a sweep goes on), or fails when every object must be read (a lift rings them all)', async () => {
    const keys = [key(), key()];
    for (const k of keys) await publish(ingestDeps([]), k.tenantId, [input(k.resource, 1)]);
    // A table so throttled that every batch read leaves every key unprocessed.
    const throttled = documentClient(emulators.dynamo);
    throttled.middlewareStack.add(
      (next) => async (args) => {
        const request = (args.input as { RequestItems?: Record<string, { Keys: unknown[] }> }).RequestItems;
        if (!request?.[eventsTable] || !('Keys' in (request[eventsTable] ?? {}))) return next(args);
        return { response: {}, output: { Responses: { [eventsTable]: [] }, UnprocessedKeys: request, $metadata: {} } } as never;
      },
      { step: 'initialize', name: 'throttleBatchGets' },
    );
    const queues = new QueueStore({ client: throttled, tableName: eventsTable, retentionDays: 7 });
    expect(await store.readMetas(keys)).toHaveLength(2);
    expect(await queues.readMetas(keys)).toEqual([]);
    await expect(queues.readMetas(keys, { complete: true })).rejects.toThrow(/left 2 of 2 objects unread/);
    throttled.destroy();
  });
});

describe('events kept on the meta item', () => {
  /** Ingest and distributor on one counted client. */
  it("stores a quiet object's single event in the reserving write, and drains it without reading slots", async () => {
    const k = key();
    const { counts, queues } = counted();
    const deps = { ...ingestDeps([]), queues } as Parameters<typeof publish>[0];
    const outcome = await publish(deps, k.tenantId, [input(k.resource, 1)]);
    expect(outcome.results[0]?.status).toBe('accepted');
    // One write reserved the slot and stored the event; no event item.
    expect(counts.calls.dynamodb).toEqual({ UpdateItemCommand: 1 });
    expect(await store.readMeta(k)).toMatchObject({ depth: 1, inline: { slot: 1, data: { n: 1 } } });

    const { distributor, sent } = recordingDistributor({}, Date.now, queues);
    expect(await distributor.runTurn(k, 'w')).toMatchObject({ outcome: 'idle', distributed: 1 });
    // The lease and the write that commits and ends the turn: nothing to query.
    expect(counts.calls.dynamodb).toEqual({ UpdateItemCommand: 3 });
    expect(sent.flatMap((m) => m.events.map((e) => [e.id, e.seq, e.data]))).toEqual([
      [outcome.results[0] && 'id' in outcome.results[0] ? outcome.results[0].id : '', 1, { n: 1 }],
    ]);
    expect(await store.readMeta(k)).toMatchObject({ depth: 0, cursor: 1, seq: 1, scheduled: false, inline: undefined });
  });

  it('writes later events to slot items while one is kept, and delivers them after it, in order', async () => {
    const k = key();
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 1)]);
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 2)]);
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 3), input(k.resource, 4)]);
    expect(await store.readMeta(k)).toMatchObject({ depth: 4, inline: { slot: 1 } });
    const { distributor, sent } = recordingDistributor();
    expect(await distributor.runTurn(k, 'w')).toMatchObject({ outcome: 'idle', distributed: 4 });
    expect(sent.flatMap((m) => m.events.map((e) => [e.seq, e.data]))).toEqual([
      [1, { n: 1 }],
      [2, { n: 2 }],
      [3, { n: 3 }],
      [4, { n: 4 }],
    ]);
    // Idle and empty again: the next single event, once this container has not written
    // the object for a second, is kept on the meta item again.
    await publish({ ...ingestDeps([]), now: () => Date.now() + 2_000 }, k.tenantId, [input(k.resource, 5)]);
    expect((await store.readMeta(k))?.inline).toMatchObject({ slot: 5, data: { n: 5 } });
  });

  it('keeps a large event in a slot item, never on the meta item', async () => {
    const k = key();
    const big = { ...input(k.resource, 1), data: { text: 'x'.repeat(INLINE_MAX_BYTES) } };
    await publish(ingestDeps([]), k.tenantId, [big]);
    expect(await store.readMeta(k)).toMatchObject({ depth: 1, inline: undefined });
    const { distributor, sent } = recordingDistributor();
    expect(await distributor.runTurn(k, 'w')).toMatchObject({ outcome: 'idle', distributed: 1 });
    expect(sent[0]?.events[0]?.data).toEqual(big.data);
  });

  it('publishes a kept event again with its seq when the holder died after committing it in a chunk', async () => {
    const k = key();
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 1)]);
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 2)]);
    let calls = 0;
    const crashing = new Distributor({
      queues: store,
      switches: NO_SWITCHES,
      subscriptions: { onResource: async () => [webhook] },
      deliveries: {
        send: async () => {
          calls++;
          throw new Error('the holder died while publishing');
        },
      },
      doorbell: { ring: async () => undefined },
      config: buildConfig({ turnMaxEvents: 1, leaseMs: 500, turnMaxMs: 400 }),
      metrics: NO_METRICS,
      logger: NO_LOGS,
      now: Date.now,
      sleep: async () => undefined,
    });
    await expect(crashing.runTurn(k, 'dies')).rejects.toThrow('the holder died');
    expect(calls).toBe(1);
    // The chunk (the kept event) is committed and off the meta item, but recorded in the turn.
    expect(await store.readMeta(k)).toMatchObject({ cursor: 1, seq: 1, inline: undefined, turn: { fromSlot: 1, toSlot: 1 } });
    const next = recordingDistributor({}, () => Date.now() + 1_000);
    expect(await next.distributor.runTurn(k, 'next')).toMatchObject({ outcome: 'idle', distributed: 2 });
    expect(next.sent.flatMap((m) => m.events.map((e) => [e.seq, e.data]))).toEqual([
      [1, { n: 1 }],
      [2, { n: 2 }],
    ]);
  });
});

describe('quiet turns (no lease)', () => {
  /** A quiet object's single event, kept on its meta item; the ingest rang with `quiet`. */
  async function quietObject(k = key(), n = 1, laterMs = 0) {
    const rings: Array<{ token: string; quiet: boolean; snapshot?: QuietSnapshot }> = [];
    const deps = {
      ...ingestDeps([]),
      // An ingest remembers an object it wrote within the last second as busy: later writes are a later clock.
      now: () => Date.now() + laterMs,
      doorbell: {
        ring: async (_: ObjectKey, token: string, options: { quiet?: boolean; snapshot?: QuietSnapshot } = {}) =>
          void rings.push({ token, quiet: options.quiet === true, ...(options.snapshot && { snapshot: options.snapshot }) }),
      },
    } as Parameters<typeof publish>[0];
    await publish(deps, k.tenantId, [input(k.resource, n)]);
    expect(rings).toMatchObject([{ quiet: true }]);
    return Object.assign(k, { snapshot: rings[0]?.snapshot });
  }

  it("trusts the snapshot its ingest's doorbell carries: no read, one write", async () => {
    const k = await quietObject();
    expect(k.snapshot).toMatchObject({ cursor: 0, seq: 0 });
    const { counts, queues } = counted();
    const { distributor, sent } = recordingDistributor({}, Date.now, queues);
    const { snapshot, ...object } = k;
    expect(await distributor.runTurn(object, 'w', { quiet: true, ...(snapshot && { snapshot }) })).toEqual({
      outcome: 'idle',
      distributed: 1,
    });
    expect(counts.calls.dynamodb).toEqual({ UpdateItemCommand: 1 });
    expect(sent.flatMap((m) => m.events.map((e) => [e.seq, (e as DeliveredEvent).data]))).toEqual([[1, { n: 1 }]]);
    expect(await store.readMeta(object)).toMatchObject({ depth: 0, cursor: 1, seq: 1, scheduled: false, inline: undefined });
  });

  it("publishes a stale snapshot's event again with its own seq, and its commit is refused", async () => {
    const first = await quietObject();
    const { snapshot: stale, ...k } = first;
    const { distributor, sent } = recordingDistributor();
    await distributor.runTurn(k, 'w', { quiet: true });
    // The object moved on: a second quiet event, drained.
    const second = await quietObject({ ...k }, 2, 2_000);
    expect(second.snapshot).toMatchObject({ cursor: 1, seq: 1 });
    await distributor.runTurn(k, 'w', { quiet: true, ...(second.snapshot && { snapshot: second.snapshot }) });
    // The first doorbell, delivered again.
    expect((await distributor.runTurn(k, 'w', { quiet: true, ...(stale && { snapshot: stale }) })).outcome).toBe('fenced_out');
    expect(sent.flatMap((m) => m.events.map((e) => `${JSON.stringify((e as DeliveredEvent).data)}/${e.seq}`))).toEqual([
      '{"n":1}/1',
      '{"n":2}/2',
      '{"n":1}/1',
    ]);
    expect(await store.readMeta(k)).toMatchObject({ depth: 0, cursor: 2, seq: 2 });
  });

  it('reads the meta item for a doorbell received again, so an event its first turn committed is not published twice', async () => {
    const { snapshot, ...k } = await quietObject();
    const { distributor, sent } = recordingDistributor();
    const handler = makeDistributorHandler(distributor, NO_LOGS);
    const doorbell = (receiveCount: string) =>
      ({
        Records: [
          {
            messageId: `m${receiveCount}`,
            body: JSON.stringify({ tenant: k.tenantId, resource: k.resource, quiet: true, snapshot }),
            attributes: { MessageGroupId: `${k.tenantId}#${k.resource}`, ApproximateReceiveCount: receiveCount },
          },
        ],
      }) as unknown as SQSEvent;
    expect((await handler(doorbell('1'), {} as Context)).batchItemFailures).toEqual([]);
    // The invocation timed out after the commit: SQS delivers the doorbell again.
    expect((await handler(doorbell('2'), {} as Context)).batchItemFailures).toEqual([]);
    expect(sent.flatMap((m) => m.events.map((e) => e.seq))).toEqual([1]);
    expect(await store.readMeta(k)).toMatchObject({ depth: 0, cursor: 1, seq: 1, scheduled: false });
  });

  it('gives no snapshot when a lease is live, and the quiet turn then leaves the object to its holder', async () => {
    const { snapshot: _, ...k } = await quietObject();
    const { distributor, sent } = recordingDistributor();
    await distributor.runTurn(k, 'w', { quiet: true });
    sent.length = 0;
    await store.acquireLease(k, 'holder', Date.now(), 30_000);
    const quiet = await quietObject({ ...k }, 2, 2_000);
    expect(quiet.snapshot).toBeUndefined();
    expect((await distributor.runTurn(k, 'w', { quiet: true })).outcome).toBe('lease_held');
    expect(sent).toEqual([]);
  });

  it('reads the meta item, publishes, and commits and ends the turn in one write, without a lease', async () => {
    const k = await quietObject();
    const { counts, queues } = counted();
    const { distributor, seqs } = recordingDistributor({}, Date.now, queues);
    expect(await distributor.runTurn(k, 'w', { quiet: true })).toEqual({ outcome: 'idle', distributed: 1 });
    expect(seqs()).toEqual([1]);
    expect(counts.calls.dynamodb).toEqual({ GetItemCommand: 1, UpdateItemCommand: 1 });
    expect(await store.readMeta(k)).toMatchObject({ depth: 0, cursor: 1, seq: 1, fence: 0, scheduled: false, inline: undefined });
  });

  it('rings again when an event arrives between its read and its write, and the next turn delivers it', async () => {
    const k = await quietObject();
    let raced = false;
    class RacingStore extends QueueStore {
      override async commitQuiet(...args: Parameters<QueueStore['commitQuiet']>) {
        if (!raced) {
          raced = true;
          await publish(ingestDeps([]), k.tenantId, [input(k.resource, 2)]);
        }
        return super.commitQuiet(...args);
      }
    }
    const racing = new RacingStore({ client, tableName: eventsTable, retentionDays: 7 });
    const { distributor, rings, seqs } = recordingDistributor({}, Date.now, racing);
    expect(await distributor.runTurn(k, 'w', { quiet: true })).toEqual({ outcome: 'rerung', distributed: 1 });
    expect(rings).toEqual([`${k.resource}:q1`]);
    expect(await distributor.runTurn(k, 'w')).toEqual({ outcome: 'idle', distributed: 1 });
    expect(seqs()).toEqual([1, 2]);
  });

  it('never gives a seq already published to another event when a quiet turn dies before its write and its event expires meanwhile', async () => {
    const day = 86_400_000;
    const t0 = Date.now();
    // A quiet event kept on the meta item, which expires 20 s after t0 (its doorbell waited a week).
    const k = await quietObject(key(), 1, -7 * day + 20_000);
    // A turn publishes it as seq 1 and dies before its last write.
    class DyingStore extends QueueStore {
      override async commitQuiet(): Promise<'idle' | 'pending'> {
        throw new Error('the turn died');
      }
      override async commitLastChunk(): Promise<'idle' | 'pending'> {
        throw new Error('the turn died');
      }
      override async finishTurn(): Promise<'idle' | 'pending'> {
        throw new Error('the turn died');
      }
    }
    const dying = new DyingStore({ client, tableName: eventsTable, retentionDays: 7 });
    const first = recordingDistributor({}, () => t0 + 1_000, dying);
    await expect(first.distributor.runTurn(k, 'dies', { quiet: true })).rejects.toThrow('the turn died');
    // Another event comes; the next turn runs a minute later, once the first has expired.
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 2)]);
    const next = recordingDistributor({}, () => t0 + 60_000);
    await next.distributor.runTurn(k, 'next');
    const delivered = [...first.sent, ...next.sent].flatMap((m) => m.events).filter((e) => e.type !== 'sluice.gap');
    // Event 1 was published as seq 1: event 2 may not be seq 1 too (a consumer drops it as a duplicate).
    expect(delivered.map((e) => `${(e.data as { n: number }).n}#${e.seq}`)).toEqual(['1#1', '1#1', '2#2']);
    expect(await store.readMeta(k)).toMatchObject({ depth: 0, cursor: 2, seq: 2, scheduled: false });
  });

  it('leaves an object with a live lease to its holder', async () => {
    const k = await quietObject();
    await store.acquireLease(k, 'holder', Date.now(), 30_000);
    const { distributor, sent } = recordingDistributor();
    expect((await distributor.runTurn(k, 'w', { quiet: true })).outcome).toBe('lease_held');
    expect(sent).toEqual([]);
  });

  /** A distributor under a drop switch on `k`'s resource, on a clock of its own that its sleeps move on. */
  function droppingOnItsClock(k: ObjectKey, startAt: number) {
    const clock = { now: startAt, slept: 0 };
    const { distributor: dropping } = droppingDistributor(k, store, {
      now: () => clock.now,
      sleep: async (ms) => {
        clock.now += ms;
        clock.slept += ms;
      },
    });
    return { dropping, clock };
  }

  it('leaves a kept event to its own quiet doorbell while a turn from an older doorbell drops under a switch, so it is never both dropped and delivered', async () => {
    const { snapshot, ...k } = await quietObject();
    // An older doorbell of the object's group (a reconciler's ring, say) runs first, in a
    // container whose switch cache still has a drop switch the quiet doorbell's container no longer sees.
    const { dropping, clock } = droppingOnItsClock(k, Date.now());
    expect(await dropping.runTurn(k, 'older')).toMatchObject({ outcome: 'rerung', distributed: 0 });
    expect(clock.slept).toBeGreaterThan(0);
    expect(await store.readMeta(k)).toMatchObject({ cursor: 0, switchDropped: 0, inline: { data: { n: 1 } } });
    // The quiet doorbell, on its first receive: its snapshot is still right.
    const { distributor, sent } = recordingDistributor();
    expect(await distributor.runTurn(k, 'quiet', { quiet: true, ...(snapshot && { snapshot }) })).toEqual({
      outcome: 'idle',
      distributed: 1,
    });
    expect(sent.flatMap((m) => m.events.map((e) => `${e.type}/${e.seq}`))).toEqual(['a.b/1']);
    // Delivered, and not counted as dropped: no gap marker will stand for it.
    expect(await store.readMeta(k)).toMatchObject({ cursor: 1, seq: 1, switchDropped: 0 });
  });

  it('drops a kept event under a switch once no snapshot of it is trusted, and a quiet doorbell received later reads instead of publishing it', async () => {
    const { snapshot, ...k } = await quietObject();
    const later = Date.now() + 10_000;
    const { dropping, clock } = droppingOnItsClock(k, later);
    expect(await dropping.runTurn(k, 'older')).toMatchObject({ outcome: 'idle' });
    expect(clock.slept).toBe(0);
    expect(await store.readMeta(k)).toMatchObject({ cursor: 1, seq: 1, switchDropped: 1 });
    // The quiet doorbell, received after the drop (the switch lifted since): it finds the
    // event consumed, and sends only the gap marker that stands for it.
    const { distributor, sent } = recordingDistributor({}, () => later);
    await distributor.runTurn(k, 'quiet', { quiet: true, ...(snapshot && { snapshot }) });
    expect(sent.flatMap((m) => m.events.map((e) => `${e.type}:${JSON.stringify(e.data)}`))).toEqual([
      'sluice.gap:{"dropped":1,"reason":"switch_drop"}',
    ]);
  });

  it("drops a kept event at once in its own quiet doorbell's turn, which carried the only snapshot of it", async () => {
    const { snapshot, ...k } = await quietObject();
    const { dropping, clock } = droppingOnItsClock(k, Date.now());
    expect(await dropping.runTurn(k, 'quiet', { quiet: true, ...(snapshot && { snapshot }) })).toMatchObject({ outcome: 'idle' });
    expect(clock.slept).toBe(0);
    expect(await store.readMeta(k)).toMatchObject({ cursor: 1, switchDropped: 1 });
    // Lifted: the gap marker goes out, and nothing is owed any more.
    const { distributor, sent } = recordingDistributor();
    await distributor.runTurn(k, 'lifted', { freshSwitches: true });
    expect(sent.flatMap((m) => m.events.map((e) => e.type))).toEqual(['sluice.gap']);
    expect(await store.readMeta(k)).toMatchObject({ switchDropped: 0 });
  });

  it('commits once when two quiet turns race: both published the same event with the same seq', async () => {
    const k = await quietObject();
    const { distributor, sent } = recordingDistributor();
    const outcomes = await Promise.all([distributor.runTurn(k, 'a', { quiet: true }), distributor.runTurn(k, 'b', { quiet: true })]);
    expect(outcomes.map((o) => o.outcome).sort()).toEqual(expect.arrayContaining(['idle']));
    expect(outcomes.filter((o) => o.outcome === 'fenced_out' || o.distributed === 0).length).toBe(1);
    expect(new Set(sent.flatMap((m) => m.events.map((e) => `${e.id}/${e.seq}`))).size).toBe(1);
    expect(await store.readMeta(k)).toMatchObject({ depth: 0, cursor: 1, seq: 1 });
  });
});

describe('writes whose answer was lost (the SDK tried again after the first try had applied)', () => {
  /** A queue store whose first try of each write that `matches` applies but loses its answer: the SDK tries again. */
  function losingFirstAnswers(matches: (updateExpression: string) => boolean) {
    const lossy = documentClient(emulators.dynamo);
    const lost = loseFirstAnswers(lossy, (i) => typeof i.UpdateExpression === 'string' && matches(i.UpdateExpression));
    return { queues: new QueueStore({ client: lossy, tableName: eventsTable, retentionDays: 7 }), lost };
  }

  it('goes on with a lease whose take applied unanswered, instead of leaving the object to the reconciler', async () => {
    const k = key();
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 1), input(k.resource, 2)]);
    const { queues, lost } = losingFirstAnswers((update) => update.includes('#lease_owner = :owner'));
    const { distributor, seqs } = recordingDistributor({}, Date.now, queues);
    // Taken as held by another, the doorbell would be acknowledged with no holder to ring
    // again: the events would wait for the lease to expire and the reconciler's sweep.
    expect(await distributor.runTurn(k, 'w')).toEqual({ outcome: 'idle', distributed: 2 });
    expect(lost()).toBe(1);
    expect(seqs()).toEqual([1, 2]);
    expect(await store.readMeta(k)).toMatchObject({ depth: 0, cursor: 2, seq: 2, scheduled: false, fence: 1 });
  });

  it('leaves an object whose lease another holds to it, though its take was tried again', async () => {
    const k = key();
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 1)]);
    await store.acquireLease(k, 'holder', Date.now(), 30_000);
    // The first try never reaches DynamoDB (a reset connection): the second is refused.
    const flaky = documentClient(emulators.dynamo);
    let reset = 0;
    flaky.middlewareStack.add(
      (next) => async (args) => {
        if ((args.input as { UpdateExpression?: string }).UpdateExpression?.includes('#lease_owner = :owner') && reset++ === 0) {
          throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
        }
        return next(args);
      },
      { step: 'deserialize', name: 'resetFirstTry' },
    );
    const queues = new QueueStore({ client: flaky, tableName: eventsTable, retentionDays: 7 });
    await expect(queues.acquireLease(k, 'other', Date.now(), 30_000)).rejects.toBeInstanceOf(LeaseHeldError);
    expect(reset).toBe(2);
    expect(await store.readMeta(k)).toMatchObject({ fence: 1, depth: 1 });
  });

  it('publishes a chunk whose commit applied unanswered, instead of leaving it to the reconciler', async () => {
    const k = key();
    await publish(
      ingestDeps([]),
      k.tenantId,
      Array.from({ length: 100 }, (_, n) => input(k.resource, n)),
    );
    await publish(
      ingestDeps([]),
      k.tenantId,
      Array.from({ length: 50 }, (_, n) => input(k.resource, 100 + n)),
    );
    const { queues, lost } = losingFirstAnswers((update) => update.includes('#turn = :turn'));
    const { distributor, seqs } = recordingDistributor({}, Date.now, queues);
    expect(await distributor.runTurn(k, 'w')).toEqual({ outcome: 'idle', distributed: 150 });
    expect(lost()).toBe(1);
    expect(seqs()).toEqual(Array.from({ length: 150 }, (_, i) => i + 1));
    expect(await store.readMeta(k)).toMatchObject({ depth: 0, cursor: 150, seq: 150, scheduled: false });
  });

  it('rings again when the write that committed its last chunk and left events pending applied unanswered', async () => {
    const k = key();
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 1), input(k.resource, 2)]);
    const { queues: lossy, lost } = losingFirstAnswers((update) => update.includes('#turn_at = :now ADD #depth :consumed'));
    const racing = racedStore(() => reserveSlots(k, 1, Date.now()), lossy);
    // The turn's time is up once it has published (its clock jumps 5 s): it releases the lease in that write.
    let late = 0;
    const { sent, rings, ...deps } = recordingDistributorDeps(racing, {}, () => Date.now() + late);
    const distributor = new Distributor({
      ...deps,
      deliveries: {
        send: async (messages) => {
          late = 5_000;
          await deps.deliveries.send(messages);
        },
      },
    });
    expect(await distributor.runTurn(k, 'w')).toEqual({ outcome: 'rerung', distributed: 2 });
    expect(lost()).toBe(1);
    expect(sent.flatMap((m) => m.events.map((e) => e.seq))).toEqual([1, 2]);
    expect(rings).toHaveLength(1);
    expect(await store.readMeta(k)).toMatchObject({ depth: 1, cursor: 2, seq: 2, scheduled: true });
  });

  it('goes on with its lease when the write that committed its last chunk and kept the lease applied unanswered', async () => {
    const k = key();
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 1), input(k.resource, 2)]);
    const { queues: lossy, lost } = losingFirstAnswers((update) => update.includes('#seq = :seq ADD #depth :consumed REMOVE #turn'));
    const racing = racedStore(() => publish(ingestDeps([]), k.tenantId, [input(k.resource, 3)]), lossy);
    const { distributor, rings, seqs } = recordingDistributor({}, Date.now, racing);
    // Taken for a fenced-out holder's refusal, the turn would end with event 3 left and nobody to ring.
    expect(await distributor.runTurn(k, 'w')).toEqual({ outcome: 'idle', distributed: 3 });
    expect(lost()).toBe(1);
    expect(seqs()).toEqual([1, 2, 3]);
    expect(rings).toEqual([]);
    expect(await store.readMeta(k)).toMatchObject({ depth: 0, cursor: 3, seq: 3, scheduled: false });
  });

  it('takes back a drop count once, though its write applied unanswered, so the next marker counts every dropped event', async () => {
    const k = key();
    await publish(
      ingestDeps([]),
      k.tenantId,
      [1, 2, 3].map((n) => input(k.resource, n)),
    );
    const { distributor: dropping } = droppingDistributor(k);
    await dropping.runTurn(k, 'dropping', { freshSwitches: true });
    expect(await store.readMeta(k)).toMatchObject({ switchDropped: 3 });
    // Lifted: the marker for 3 goes out, and the write that takes the count back loses its answer.
    const { queues, lost } = losingFirstAnswers((update) => update.includes('ADD #switch_dropped :minus'));
    const lifted = recordingDistributor({}, Date.now, queues);
    await lifted.distributor.runTurn(k, 'lifted', { freshSwitches: true });
    expect(lost()).toBe(1);
    expect(await store.readMeta(k)).toMatchObject({ switchDropped: 0 });
    // Dropped again, and lifted again: the marker stands for the two events dropped since.
    await publish(
      ingestDeps([]),
      k.tenantId,
      [4, 5].map((n) => input(k.resource, n)),
    );
    await dropping.runTurn(k, 'dropping', { freshSwitches: true });
    const again = recordingDistributor();
    await again.distributor.runTurn(k, 'lifted', { freshSwitches: true });
    expect(again.sent.flatMap((m) => m.events.map((e) => `${e.type}:${JSON.stringify(e.data)}`))).toEqual([
      'sluice.gap:{"dropped":2,"reason":"switch_drop"}',
    ]);
  });
});

describe('per-object rate', () => {
  it('admits the burst, rejects the excess as rate_limited with Retry-After, and refills', async () => {
    const k = key();
    let now = 5_000_000;
    const deps = { ...ingestDeps([], { objectRatePerSecond: 10, objectBurst: 20 }), now: () => now };
    const first = await publish(
      deps,
      k.tenantId,
      Array.from({ length: 25 }, (_, n) => input(k.resource, n)),
    );
    expect(first.results.filter((r) => r.status === 'accepted')).toHaveLength(20);
    expect(first.results.slice(20).every((r) => r.status === 'rejected' && r.error.code === 'rate_limited')).toBe(true);
    expect(first.httpStatus).toBe(202);

    const refused = await publish(deps, k.tenantId, [input(k.resource, 99)]);
    expect(refused.httpStatus).toBe(429);
    expect(refused.retryAfterSeconds).toBe(1);

    now += 1_000; // ten tokens back
    const later = await publish(
      deps,
      k.tenantId,
      Array.from({ length: 12 }, (_, n) => input(k.resource, 100 + n)),
    );
    expect(later.results.filter((r) => r.status === 'accepted')).toHaveLength(10);
    expect((await store.readMeta(k))?.depth).toBe(30);
  });

  it('refuses a request its container already knows has no token, without a write', async () => {
    const k = key();
    const now = 7_000_000;
    const counted: Record<string, number> = {};
    const metrics = {
      count: (name: string, value = 1) => {
        counted[name] = (counted[name] ?? 0) + value;
      },
    };
    const deps = { ...ingestDeps([], { objectRatePerSecond: 5, objectBurst: 5 }), now: () => now, metrics };
    await publish(
      deps,
      k.tenantId,
      Array.from({ length: 5 }, (_, n) => input(k.resource, n)),
    );
    const before = await store.readMeta(k);
    const refused = await publish(deps, k.tenantId, [input(k.resource, 9)]);
    expect(refused.httpStatus).toBe(429);
    expect(counted.RejectedLocally).toBe(1);
    expect(await store.readMeta(k)).toEqual(before);
  });

  it('asks for no more than the tat it knows allows, so a busy object admits part of a request in one write, and names only admitted events', async () => {
    const k = key();
    const now = 8_000_000;
    const { counts, queues } = counted();
    let ids = 0;
    const deps = {
      ...ingestDeps([], { objectRatePerSecond: 10, objectBurst: 10 }),
      queues,
      now: () => now,
      newEventId: () => `evt_part${++ids}`,
    } as Parameters<typeof publish>[0];
    await publish(
      deps,
      k.tenantId,
      Array.from({ length: 6 }, (_, n) => input(k.resource, n)),
    );
    expect(ids).toBe(6);
    const calls = { ...counts.calls.dynamodb };
    const updates = queueUpdates(counts);
    const second = await publish(
      deps,
      k.tenantId,
      Array.from({ length: 10 }, (_, n) => input(k.resource, 10 + n)),
    );
    expect(second.results.filter((r) => r.status === 'accepted')).toHaveLength(4);
    expect(second.results.filter((r) => r.status === 'rejected' && r.error.code === 'rate_limited')).toHaveLength(6);
    // One reserve for the four that fit and one write of their items: no refused write, no read.
    expect(queueUpdates(counts)).toBe(updates + 1);
    expect(counts.calls.dynamodb?.GetItemCommand ?? 0).toBe(calls.GetItemCommand ?? 0);
    // Ids only for the events that entered.
    expect(ids).toBe(10);
    expect(await store.readMeta(k)).toMatchObject({ depth: 10 });
  });

  it("takes a busy object's events in steps of a quarter second of its rate, and refuses smaller gaps without DynamoDB", async () => {
    const k = key();
    let now = 8_500_000;
    const { counts, queues } = counted();
    const deps = {
      ...ingestDeps([], { objectRatePerSecond: 100, objectBurst: 100 }),
      queues,
      now: () => now,
    } as Parameters<typeof publish>[0];
    const fifty = (from: number) => Array.from({ length: 50 }, (_, n) => input(k.resource, from + n));
    await publish(deps, k.tenantId, fifty(0));
    const first = await publish(deps, k.tenantId, fifty(50));
    expect(first.results.filter((r) => r.status === 'accepted')).toHaveLength(50);
    const calls = queueUpdates(counts);
    // 200 ms later 20 tokens are back: fewer than a step (25 at 100/s), so none are taken.
    now += 200;
    const early = await publish(deps, k.tenantId, fifty(100));
    expect(early.httpStatus).toBe(429);
    expect(early.retryAfterSeconds).toBe(1);
    expect(queueUpdates(counts)).toBe(calls);
    // What it refused is counted on the object's reject counters, beside the meta item.
    expect(await queues.rejectedCounts(k, now)).toMatchObject({ rate_limited: 50, queue_full: 0 });
    // At 250 ms a step is there: 25 enter, in one reserving write.
    now += 50;
    const step = await publish(deps, k.tenantId, fifty(200));
    expect(step.results.filter((r) => r.status === 'accepted')).toHaveLength(25);
    expect(queueUpdates(counts)).toBe(calls + 1);
    // A request smaller than a step still gets its single token.
    now += 10;
    expect((await publish(deps, k.tenantId, [input(k.resource, 300)])).results[0]?.status).toBe('accepted');
    expect(await store.readMeta(k)).toMatchObject({ depth: 126 });
  });

  it("lets one of a container's racing requests for a busy object write; the others are answered from the tat it leaves", async () => {
    const k = key();
    let now = 8_700_000;
    const { counts, queues } = counted();
    const deps = {
      ...ingestDeps([], { objectRatePerSecond: 100, objectBurst: 100 }),
      queues,
      now: () => now,
    } as Parameters<typeof publish>[0];
    const fifty = (from: number) => Array.from({ length: 50 }, (_, n) => input(k.resource, from + n));
    await publish(deps, k.tenantId, fifty(0));
    await publish(deps, k.tenantId, fifty(50));
    const before = { ...counts.calls.dynamodb };
    const updates = queueUpdates(counts);
    now += 250;
    const outcomes = await Promise.all([1, 2, 3, 4].map((r) => publish(deps, k.tenantId, fifty(r * 100))));
    const accepted = outcomes.map((o) => o.results.filter((r) => r.status === 'accepted').length);
    expect(accepted.sort()).toEqual([0, 0, 0, 25]);
    // One reserve and one write of its events; no refused write, no read of the meta item.
    expect(queueUpdates(counts)).toBe(updates + 1);
    expect(counts.calls.dynamodb?.GetItemCommand ?? 0).toBe(before.GetItemCommand ?? 0);
  });

  it("counts a request's rejections as one data point per reason", async () => {
    const k = key();
    const points: Array<[string, number, Readonly<Record<string, string>> | undefined]> = [];
    const metrics = {
      count: (name: string, value = 1, dimensions?: Readonly<Record<string, string>>) => void points.push([name, value, dimensions]),
    };
    const deps = { ...ingestDeps([], { objectRatePerSecond: 10, objectBurst: 20 }), now: () => 8_900_000, metrics };
    await publish(
      deps,
      k.tenantId,
      Array.from({ length: 25 }, (_, n) => input(k.resource, n)),
    );
    expect(points.filter(([name]) => name === 'EventsRejected')).toEqual([['EventsRejected', 5, { reason: 'rate_limited' }]]);
    expect(points.filter(([name]) => name === 'EventsAccepted')).toEqual([['EventsAccepted', 20, undefined]]);
  });

  it('holds the rate under concurrent writers', async () => {
    const k = key();
    const now = 9_000_000;
    const deps = { ...ingestDeps([], { objectRatePerSecond: 10, objectBurst: 15 }), now: () => now };
    const outcomes = await Promise.all(Array.from({ length: 30 }, (_, n) => publish(deps, k.tenantId, [input(k.resource, n)])));
    expect(outcomes.filter((o) => o.results[0]?.status === 'accepted')).toHaveLength(15);
  });
});

describe('idempotency keys', () => {
  it('answers a repeated key with the original id as duplicate, and stores the event once', async () => {
    const k = key();
    const rings: string[] = [];
    const deps = ingestDeps(rings);
    const keyed = { ...input(k.resource, 1), idempotencyKey: `order-${k.resource}` };
    const first = await publish(deps, k.tenantId, [keyed]);
    const again = await publish(deps, k.tenantId, [keyed, input(k.resource, 2)]);
    const firstResult = first.results[0] as { id: string; status: string };
    expect(firstResult.status).toBe('accepted');
    expect(again.results[0]).toEqual({ id: firstResult.id, status: 'duplicate' });
    expect(again.results[1]?.status).toBe('accepted');
    expect((await store.readMeta(k))?.depth).toBe(2);
    // The same key from another tenant is a different key.
    const other = await publish(deps, 'ten_other', [keyed]);
    expect(other.results[0]?.status).toBe('accepted');
  });

  it('gives the key back when its event is rejected, so a retry is accepted', async () => {
    const k = key();
    const deps = ingestDeps([], { objectQueueCap: 1 });
    await publish(deps, k.tenantId, [input(k.resource, 0)]);
    const keyed = { ...input(k.resource, 1), idempotencyKey: `retry-${k.resource}` };
    expect((await publish(deps, k.tenantId, [keyed])).results[0]).toMatchObject({ status: 'rejected', error: { code: 'queue_full' } });
    const { distributor } = recordingDistributor();
    await distributor.runTurn(k, 'w');
    expect((await publish(deps, k.tenantId, [keyed])).results[0]?.status).toBe('accepted');
  });

  it('lets a key be claimed again when its record has expired (TTL deletes late; reads check expiry)', async () => {
    const idempotency = new IdempotencyStore({ client, tableName: eventsTable, retentionDays: 1, ingestGraceMs: 1_000 });
    const t0 = Date.now();
    expect(await idempotency.claim('ten_x', 'k-expiry', 'evt_a', t0)).toEqual({ claimed: true });
    await idempotency.confirm('ten_x', 'k-expiry', 'evt_a');
    expect(await idempotency.claim('ten_x', 'k-expiry', 'evt_b', t0 + 1_000)).toEqual({
      claimed: false,
      eventId: 'evt_a',
      state: 'accepted',
    });
    expect(await idempotency.claim('ten_x', 'k-expiry', 'evt_c', t0 + 86_400_001)).toEqual({ claimed: true });
  });

  it('refuses a key another request is accepting right now, and frees one whose ingest died', async () => {
    const idempotency = new IdempotencyStore({ client, tableName: eventsTable, retentionDays: 7, ingestGraceMs: 1_000 });
    const t0 = Date.now();
    await idempotency.claim('ten_x', 'k-pending', 'evt_a', t0);
    expect(await idempotency.claim('ten_x', 'k-pending', 'evt_b', t0 + 10)).toMatchObject({ claimed: false, state: 'pending' });
    expect(await idempotency.claim('ten_x', 'k-pending', 'evt_c', t0 + 5_000)).toEqual({ claimed: true });
  });
});

describe('idempotency keys whose ingest died half-way', () => {
  const GRACE_MS = 1_000;
  let ids = 0;
  /** An ingest's dependencies with a short ingest grace; `laterMs` puts its clock past that of an earlier one. */
  function keyedDeps(overrides: Record<string, unknown> = {}, laterMs = 0) {
    return {
      ...ingestDeps([]),
      // Unique across requests, as real event ids are.
      newEventId: () => `evt_k${++ids}`,
      idempotency: new IdempotencyStore({ client, tableName: eventsTable, retentionDays: 7, ingestGraceMs: GRACE_MS }),
      now: () => Date.now() + laterMs,
      ...overrides,
    } as Parameters<typeof publish>[0];
  }
  /** What a turn delivers for `k`, as data/seq. */
  async function deliveredOf(k: ObjectKey) {
    const { distributor, sent } = recordingDistributor();
    expect((await distributor.runTurn(k, 'w')).outcome).toBe('idle');
    return sent.flatMap((m) => m.events.map((e) => `${JSON.stringify((e as DeliveredEvent).data)}/${e.seq}/${e.id}`));
  }

  it('answers a retry after the grace as a duplicate when the first ingest stored the event but could not confirm its key, and delivers it once', async () => {
    // One small event (which an ingest would otherwise keep on the meta item) and one of two.
    for (const others of [0, 1]) {
      const k = key();
      const keyed = { ...input(k.resource, 1), idempotencyKey: `stored-${k.resource}` };
      const inputs = [keyed, ...Array.from({ length: others }, (_, n) => input(k.resource, n + 2))];
      // The confirm fails (DynamoDB erring; or the Lambda dies right there, which leaves the same record).
      class UnconfirmedKeys extends IdempotencyStore {
        override async confirm(): Promise<void> {
          throw new Error('InternalServerError');
        }
      }
      const idempotency = new UnconfirmedKeys({ client, tableName: eventsTable, retentionDays: 7, ingestGraceMs: GRACE_MS });
      const first = await publish(keyedDeps({ idempotency }), k.tenantId, inputs);
      expect(first.results[0]?.status).toBe('accepted');
      const original = (first.results[0] as { id: string }).id;
      // Within the grace the first request may still be storing it; after, the key is settled.
      expect((await publish(keyedDeps(), k.tenantId, [keyed])).results[0]).toMatchObject({
        status: 'rejected',
        error: { code: 'conflict' },
      });
      expect((await publish(keyedDeps({}, 2 * GRACE_MS), k.tenantId, [keyed])).results[0]).toEqual({ id: original, status: 'duplicate' });
      // Confirmed now: later retries are answered from the record alone.
      expect((await publish(keyedDeps({}, 3 * GRACE_MS), k.tenantId, [keyed])).results[0]).toEqual({ id: original, status: 'duplicate' });
      expect(await deliveredOf(k)).toEqual([`{"n":1}/1/${original}`, ...(others ? [expect.stringMatching(/^\{"n":2\}\/2\//)] : [])]);
    }
  });

  it('keeps the key of an event it could not store nor void pending, and a retry after the grace finds out whether the event is there', async () => {
    for (const landed of [true, false]) {
      const k = key();
      const keyed = { ...input(k.resource, 1), idempotencyKey: `unknown-${k.resource}` };
      // The write fails (having stored the items or not), and so do the read of its slots and the
      // voids: whether the event is stored is unknown.
      class UnsureWrites extends QueueStore {
        override async writeEventsOf(reservations: Parameters<QueueStore['writeEventsOf']>[0]): Promise<void> {
          if (landed) await super.writeEventsOf(reservations);
          throw new Error('InternalServerError');
        }
        override async writtenSlots(): Promise<Set<number>> {
          throw new Error('InternalServerError');
        }
        override async voidSlots(): Promise<Set<number>> {
          throw new Error('InternalServerError');
        }
      }
      const queues = new UnsureWrites({ client, tableName: eventsTable, retentionDays: 7 });
      // Its one event not stored: the request fails as a whole (500).
      await expect(publish(keyedDeps({ queues }), k.tenantId, [keyed])).rejects.toThrow('InternalServerError');
      // "Send it again": too soon, the key is still the first request's.
      expect((await publish(keyedDeps(), k.tenantId, [keyed])).results[0]).toMatchObject({ error: { code: 'conflict' } });
      const retry = await publish(keyedDeps({}, 2 * GRACE_MS), k.tenantId, [keyed]);
      const delivered = await deliveredOf(k);
      if (landed) {
        // Stored after all: the retry is its duplicate, and it is delivered once.
        expect(retry.results[0]).toMatchObject({ status: 'duplicate' });
        expect(delivered).toEqual([`{"n":1}/1/${(retry.results[0] as { id: string }).id}`]);
      } else {
        // Never stored: its slot is voided (skipped at once) and the retry takes the key over.
        expect(retry.results[0]).toMatchObject({ status: 'accepted' });
        expect(delivered).toEqual([`{"n":1}/1/${(retry.results[0] as { id: string }).id}`]);
      }
    }
  });

  it('lets one of two retries take over a key abandoned before its event was stored; the other is told to wait, and the event is delivered once', async () => {
    const k = key();
    const keyed = { ...input(k.resource, 1), idempotencyKey: `race-${k.resource}` };
    // The first ingest named its slot, then died before writing the event.
    class DiesBeforeWriting extends QueueStore {
      override async writeEventsOf(): Promise<void> {
        throw new Error('the Lambda died here');
      }
      override async voidSlots(): Promise<Set<number>> {
        throw new Error('the Lambda died here');
      }
    }
    const queues = new DiesBeforeWriting({ client, tableName: eventsTable, retentionDays: 7 });
    await expect(publish(keyedDeps({ queues }), k.tenantId, [keyed])).rejects.toThrow('the Lambda died here');
    const retries = await Promise.all([0, 1].map(() => publish(keyedDeps({}, 2 * GRACE_MS), k.tenantId, [keyed])));
    const answers = retries.map((r) => r.results[0] as EventResult);
    expect(answers.map((a) => (a.status === 'rejected' ? a.error.code : a.status)).sort()).toEqual(['accepted', 'conflict']);
    const accepted = answers.find((a) => a.status === 'accepted') as { id: string };
    expect(await deliveredOf(k)).toEqual([`{"n":1}/1/${accepted.id}`]);
  });

  it('claims a key again at once when its ingest died before it named a slot, and never over one that named a slot', async () => {
    const idempotency = new IdempotencyStore({ client, tableName: eventsTable, retentionDays: 7, ingestGraceMs: GRACE_MS });
    const t0 = Date.now();
    await idempotency.claim('ten_x', 'k-no-slot', 'evt_a', t0);
    expect(await idempotency.claim('ten_x', 'k-no-slot', 'evt_b', t0 + 5_000)).toEqual({ claimed: true });
    await idempotency.claim('ten_x', 'k-slot', 'evt_a', t0);
    expect(await idempotency.noteReservation('ten_x', 'k-slot', 'evt_a', { resource: 'r:1', slot: 7, reservedAt: t0 })).toBe(true);
    expect(await idempotency.claim('ten_x', 'k-slot', 'evt_b', t0 + 10)).toMatchObject({ claimed: false, state: 'pending' });
    expect(await idempotency.claim('ten_x', 'k-slot', 'evt_c', t0 + 5_000)).toEqual({
      claimed: false,
      eventId: 'evt_a',
      state: 'abandoned',
      reservation: { resource: 'r:1', slot: 7, reservedAt: t0 },
    });
    // Only the abandoned claim can be taken over, once; and its ingest can then name no slot.
    expect(await idempotency.takeOver('ten_x', 'k-slot', 'evt_a', 'evt_c', t0 + 5_000)).toBe(true);
    expect(await idempotency.takeOver('ten_x', 'k-slot', 'evt_a', 'evt_d', t0 + 5_000)).toBe(false);
    expect(await idempotency.noteReservation('ten_x', 'k-slot', 'evt_a', { resource: 'r:1', slot: 8, reservedAt: t0 })).toBe(false);
  });
});

describe('reconciler', () => {
  function reconcilerFor(rings: string[], now: () => number, overrides: Record<string, unknown> = {}, switches: Switch[] = []) {
    return {
      queues: store,
      doorbell: { ring: async (k: ObjectKey, token: string) => void rings.push(`${k.resource}:${token}`) },
      switches: { list: async () => switches },
      config: buildConfig({ stuckAfterMs: 1_000, ...overrides }),
      metrics: NO_METRICS,
      logger: NO_LOGS,
      now,
    };
  }

  it('re-rings an object whose ingest died between its write and its doorbell, but not one being drained', async () => {
    const lost = key();
    const fine = key();
    const t0 = Date.now();
    // The lost object: reserved and written, never rung.
    const r = await reserveSlots(lost, 2, t0);
    await store.writeEvents(
      lost,
      [0, 1].map((i) => ({
        id: `evt_lost${i}`,
        slot: r.firstSlot + i,
        input: input(lost.resource, i),
        createdAt: new Date(t0).toISOString(),
      })),
      t0,
    );
    // The fine object: rung and currently leased by a live distributor.
    await publish(ingestDeps([]), fine.tenantId, [input(fine.resource, 1)]);
    await store.acquireLease(fine, 'live', t0 + 5_000, 30_000);

    const rings: string[] = [];
    const report = await reconcile(reconcilerFor(rings, () => t0 + 5_000));
    // (Objects left scheduled by earlier tests in this table are re-rung too.)
    expect(rings.filter((ring) => ring.startsWith(`${lost.resource}:r`))).toHaveLength(1);
    expect(rings.some((ring) => ring.startsWith(`${fine.resource}:`))).toBe(false);
    expect(report.rerung).toBe(rings.length);

    // The re-rung doorbell drains the object; afterwards nothing is stuck.
    const { distributor, seqs } = recordingDistributor();
    expect(await distributor.runTurn(lost, 'w')).toMatchObject({ outcome: 'idle', distributed: 2 });
    expect(seqs()).toEqual([1, 2]);
    const after: string[] = [];
    await reconcile(reconcilerFor(after, () => t0 + 10_000));
    expect(after.filter((ring) => ring.startsWith(`${lost.resource}:`))).toEqual([]);
  });

  it('goes on with the other objects when one cannot be rung, reports its metrics, and fails at the end (the error alarm)', async () => {
    const [broken, other] = [key(), key()];
    const t0 = Date.now();
    // Both reserved and never rung: stuck.
    await reserveSlots(broken, 1, t0);
    await reserveSlots(other, 1, t0);
    const rings: string[] = [];
    const counted = new Map<string, number>();
    const deps = {
      ...reconcilerFor(rings, () => t0 + 5_000),
      doorbell: {
        ring: async (k: ObjectKey, token: string) => {
          if (k.resource === broken.resource) throw Object.assign(new Error('SQS refused the send'), { name: 'KmsThrottled' });
          rings.push(`${k.resource}:${token}`);
        },
      },
      metrics: { count: (name: string, value = 1) => void counted.set(name, value) },
    };
    await expect(reconcile(deps)).rejects.toThrow(/1 of \d+ listed objects could not be reconciled/);
    expect(rings.filter((ring) => ring.startsWith(`${other.resource}:r`))).toHaveLength(1);
    expect(counted.get('ScheduledObjects')).toBeGreaterThanOrEqual(2);
    expect(counted.get('StuckObjectsRerung')).toBe(rings.length);
  });

  it('re-rings a stuck object at growing spacings, not once a sweep, while its doorbell may only be waiting in a backlog', async () => {
    const k = key();
    const t0 = Date.now();
    // Reserved and never turned: its doorbell waits (or was lost). No distributor runs for an hour.
    await reserveSlots(k, 1, t0);
    const rings: string[] = [];
    for (let minute = 1; minute <= 60; minute++) {
      await reconcile(reconcilerFor(rings, () => t0 + minute * 60_000, { stuckAfterMs: 90_000 }));
    }
    const mine = rings.filter((ring) => ring.startsWith(`${k.resource}:`));
    // Due at 90 s, 3, 6, 12, 24 and 48 minutes: six doorbells (a ring two sweeps find is one message, by its token).
    expect(new Set(mine).size).toBe(6);
    expect(mine.length).toBeLessThanOrEqual(12);
    // 60 sweeps of an index the file's other tests fill: 2 s alone, 15 s beside five busy
    // loops on a 2-core machine, half the default timeout. The hour is injected time.
  }, 60_000);

  it('rings an idle object owing a gap marker for dropped events once no switch stops it, and it goes out', async () => {
    const k = key();
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 1), input(k.resource, 2)]);
    const { drop, distributor: dropping } = droppingDistributor(k);
    expect(await dropping.runTurn(k, 'w')).toMatchObject({ outcome: 'idle' });
    expect(await store.readMeta(k)).toMatchObject({ scheduled: false, switchDropped: 2 });
    const later = Date.now() + 5_000;
    // Still dropping: nothing to mark yet.
    const whileOn: string[] = [];
    await reconcile(reconcilerFor(whileOn, () => later, {}, [drop]));
    expect(whileOn.filter((r) => r.startsWith(`${k.resource}:`))).toEqual([]);
    // The switch is gone (its lift's ring lost): rung, and the turn sends the marker.
    const rings: string[] = [];
    const report = await reconcile(reconcilerFor(rings, () => later));
    expect(rings).toContain(`${k.resource}:g${Math.floor(later / 1_000)}`);
    expect(report.markersOwed).toBeGreaterThanOrEqual(1);
    const { distributor, sent } = recordingDistributor();
    expect(await distributor.runTurn(k, 'w')).toMatchObject({ outcome: 'idle' });
    expect(sent.flatMap((m) => m.events)).toMatchObject([{ type: 'sluice.gap', data: { dropped: 2, reason: 'switch_drop' } }]);
    expect(await store.readMeta(k)).toMatchObject({ switchDropped: 0 });
  });

  it('reads the listed objects eventually consistent (half the read units), where the switches read them strongly', async () => {
    const k = key();
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 1)]);
    const reads: boolean[] = [];
    const c = documentClient(emulators.dynamo);
    c.middlewareStack.add(
      (next) => async (args) => {
        const items = (args.input as { RequestItems?: Record<string, { ConsistentRead?: boolean }> }).RequestItems;
        for (const table of Object.values(items ?? {})) reads.push(table.ConsistentRead === true);
        return next(args);
      },
      { step: 'initialize', name: 'recordBatchReads' },
    );
    const queues = new QueueStore({ client: c, tableName: eventsTable, retentionDays: 7 });
    const report = await reconcile({ ...reconcilerFor([], () => Date.now()), queues });
    expect(report.scheduled).toBeGreaterThanOrEqual(1);
    expect((await deepestQueues({ queues, now: Date.now }, 10_000, () => 60_000)).data.map((q) => q.resource)).toContain(k.resource);
    expect(reads.length).toBeGreaterThanOrEqual(2);
    expect(reads.every((consistent) => !consistent)).toBe(true);
    // The switches' rings pick objects by what they read: strongly, as before.
    await queues.readMetas([k]);
    expect(reads.at(-1)).toBe(true);
  });

  it("re-rings and reports first, and unlists idle objects only while the run has time: what is left is the next run's", async () => {
    const [idle, stuck] = [key(), key()];
    const t0 = Date.now();
    // An idle object, drained long ago; a stuck one, reserved and never rung.
    await publish(ingestDeps([]), idle.tenantId, [input(idle.resource, 1)]);
    await recordingDistributor().distributor.runTurn(idle, 'w');
    const later = () => t0 + INDEX_LINGER_MS + 60_000;
    await reserveSlots(stuck, 1, later() - 5_000);
    const rings: string[] = [];
    const counted = new Map<string, number>();
    const outOfTime = {
      ...reconcilerFor(rings, later),
      metrics: { count: (name: string, value = 1) => void counted.set(name, value) },
      timeLeftMs: () => RECONCILE_MARGIN_MS - 1,
    };
    const report = await reconcile(outOfTime);
    expect(rings.filter((ring) => ring.startsWith(`${stuck.resource}:`))).toHaveLength(1);
    expect(counted.get('StuckObjectsRerung')).toBe(report.rerung);
    expect(report.unlisted).toBe(0);
    expect((await store.scheduledObjects()).map((o) => o.resource)).toContain(idle.resource);
    // A run with time takes it off the index.
    expect((await reconcile(reconcilerFor([], later))).unlisted).toBeGreaterThanOrEqual(1);
    expect((await store.scheduledObjects()).map((o) => o.resource)).not.toContain(idle.resource);
  });

  it('keeps an idle object owing a gap marker listed past the linger, so a later sweep still finds it', async () => {
    const k = key();
    // Accepted long enough ago that no quiet doorbell's snapshot of it is trusted: the drop
    // turn drops it at once and leaves the object idle, owing the marker.
    await publish({ ...ingestDeps([]), now: () => Date.now() - 10_000 }, k.tenantId, [input(k.resource, 1)]);
    const { drop, distributor: dropping } = droppingDistributor(k);
    expect(await dropping.runTurn(k, 'w')).toMatchObject({ outcome: 'idle' });
    const meta = await store.readMeta(k);
    expect(meta).toMatchObject({ scheduled: false, switchDropped: 1 });
    expect(await store.unlistIdle(k, meta?.reservedAt ?? 0)).toBe(false);
    const later = Date.now() + INDEX_LINGER_MS + 60_000;
    await reconcile(reconcilerFor([], () => later, {}, [drop]));
    expect((await store.scheduledObjects()).map((o) => o.resource)).toContain(k.resource);
    // Lifted (its lift's ring lost): a later sweep rings it for its marker, though one event is all it owes.
    const rings: string[] = [];
    await reconcile(reconcilerFor(rings, () => later));
    expect(rings).toContain(`${k.resource}:g${Math.floor(later / 1_000)}`);
  });

  it('counts an object over 80 % of its cap as near its cap (the object-queue-near-cap alarm)', async () => {
    const k = key();
    const cap = 1_000_000;
    // Depth only: a reservation of 850,000 slots, none written (no other object is that deep).
    expect(await store.reserve(k, 850_000, { cap, ratePerSecond: 1e9, burst: 1e9 }, Date.now(), false)).toBeDefined();
    try {
      const report = await reconcile(reconcilerFor([], () => Date.now(), { objectQueueCap: cap }));
      expect(report.nearCap).toBe(1);
    } finally {
      await client.send(new DeleteCommand({ TableName: eventsTable, Key: { pk: `${k.tenantId}#${k.resource}`, sk: 'meta' } }));
    }
  });

  it('clears only the stale lease it saw: a lease taken since is left to its holder', async () => {
    const k = key();
    const t0 = Date.now();
    await reserveSlots(k, 1, t0);
    await store.acquireLease(k, 'dead', t0 - 100_000, 1_000);
    const seen = (await store.readMeta(k))?.leaseUntil ?? 0;
    await store.acquireLease(k, 'live', t0, 60_000);
    expect(await store.clearStaleLease(k, seen)).toBe(false);
    expect(await store.readMeta(k)).toMatchObject({ leaseUntil: t0 + 60_000 });
  });

  it("counts an event past the retention period that a drop turn consumes for the drop's gap marker", async () => {
    const k = key();
    await publish({ ...ingestDeps([]), now: () => Date.now() - 8 * 86_400_000 }, k.tenantId, [input(k.resource, 1)]);
    const { distributor: dropping } = droppingDistributor(k);
    expect(await dropping.runTurn(k, 'w')).toMatchObject({ outcome: 'idle' });
    expect(await store.readMeta(k)).toMatchObject({ scheduled: false, switchDropped: 1 });
  });

  it('leaves a paused object alone: it is waiting, not stuck', async () => {
    const k = key();
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 1)]);
    const pause: Switch = {
      id: 'sw_p',
      scope: 'tenant',
      tenant: k.tenantId,
      target: undefined,
      action: 'pause',
      reason: 'test',
      created_at: '',
    };
    const later = Date.now() + 5_000;
    const paused: string[] = [];
    await reconcile(reconcilerFor(paused, () => later, {}, [pause]));
    expect(paused.filter((r) => r.startsWith(`${k.resource}:`))).toEqual([]);
    const lifted: string[] = [];
    await reconcile(reconcilerFor(lifted, () => later));
    expect(lifted.filter((r) => r.startsWith(`${k.resource}:r`))).toHaveLength(1);
  });

  it('rings an object paused for hours as soon as it is found stuck once no pause stops it, not at the next hourly spacing', async () => {
    const k = key();
    const t0 = Date.now();
    const hours = 3 * 3_600_000;
    // Written and paused three hours ago: its turn left it scheduled, for the lift to ring.
    await publish({ ...ingestDeps([]), now: () => t0 - hours }, k.tenantId, [input(k.resource, 1), input(k.resource, 2)]);
    const pause = resourcePause(k);
    const { sent, rings: _, ...deps } = recordingDistributorDeps(store, {}, () => t0 - hours);
    const paused = new Distributor({ ...deps, switches: { current: async () => [pause], refresh: async () => [pause] } });
    expect(await paused.runTurn(k, 'paused')).toMatchObject({ outcome: 'paused' });
    // Sweeps while it is paused leave it alone.
    for (const at of [t0 - hours / 2, t0 - 60_000]) {
      const whilePaused: string[] = [];
      await reconcile(reconcilerFor(whilePaused, () => at, { stuckAfterMs: 90_000 }, [pause]));
      expect(whilePaused.filter((r) => r.startsWith(`${k.resource}:`))).toEqual([]);
    }
    // Lifted at t0, and the lift's ring lost (its SQS send failed, or its list of the
    // tenant's objects came back short): the next sweep rings it.
    const rings: string[] = [];
    await reconcile(reconcilerFor(rings, () => t0 + 60_000, { stuckAfterMs: 90_000 }));
    const mine = rings.filter((r) => r.startsWith(`${k.resource}:`));
    expect(mine).toHaveLength(1);
    // Found stuck again, it is rung at the usual growing spacings from that ring, not once a sweep.
    const later: string[] = [];
    for (let minute = 2; minute <= 10; minute++) {
      await reconcile(reconcilerFor(later, () => t0 + minute * 60_000, { stuckAfterMs: 90_000 }));
    }
    expect(new Set(later.filter((r) => r.startsWith(`${k.resource}:`))).size).toBeLessThanOrEqual(3);
    const { distributor, seqs } = recordingDistributor();
    expect(await distributor.runTurn(k, 'w', { freshSwitches: true })).toMatchObject({ outcome: 'idle', distributed: 2 });
    expect(seqs()).toEqual([1, 2]);
    expect(sent).toEqual([]);
  });

  it('clears a lease that expired long ago', async () => {
    const k = key();
    const t0 = Date.now();
    await reserveSlots(k, 1, t0);
    await store.acquireLease(k, 'dead', t0, 1_000);
    const report = await reconcile(reconcilerFor([], () => t0 + 100_000, { leaseMs: 5_000, turnMaxMs: 1_000 }));
    expect(report.leasesCleared).toBeGreaterThanOrEqual(1);
    expect((await store.readMeta(k))?.leaseUntil).toBeUndefined();
  });

  it('lists the deepest queues first, with the age of their oldest event', async () => {
    const deep = { tenantId: 'ten_deep', resource: 'deep:1' };
    const t0 = Date.now();
    await publish(
      ingestDeps([]),
      deep.tenantId,
      Array.from({ length: 200 }, (_, n) => input(deep.resource, n)),
    );
    const { data: views, complete } = await deepestQueues({ queues: store, now: () => t0 + 3_000 }, 3, () => 60_000);
    expect(complete).toBe(true);
    expect(views[0]).toMatchObject({ tenant: 'ten_deep', resource: 'deep:1', depth: 200, scheduled: true });
    expect(views[0]?.oldest_age_s).toBeGreaterThanOrEqual(2);
    expect(views.length).toBeLessThanOrEqual(3);
    for (let i = 1; i < views.length; i++) expect(views[i - 1]?.depth ?? 0).toBeGreaterThanOrEqual(views[i]?.depth ?? 0);
  });

  it('keeps an idle object listed in the schedule index for a while, then takes it off, and lists it again on its next event', async () => {
    const k = key();
    const listed = async () => (await store.scheduledObjects()).some((o) => o.resource === k.resource);
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 1)]);
    expect(await listed()).toBe(true);
    await recordingDistributor().distributor.runTurn(k, 'w');
    expect(await store.readMeta(k)).toMatchObject({ scheduled: false });
    // Recently active: still listed, and the reconciler leaves it.
    expect(await listed()).toBe(true);
    expect((await reconcile(reconcilerFor([], Date.now))).unlisted).toBe(0);
    expect(await listed()).toBe(true);
    // Idle past the linger: taken off.
    expect((await reconcile(reconcilerFor([], () => Date.now() + INDEX_LINGER_MS + 1_000))).unlisted).toBeGreaterThanOrEqual(1);
    expect(await listed()).toBe(false);
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 2)]);
    expect(await listed()).toBe(true);
  });

  it('never unlists an object that a reservation scheduled after the reconciler read it', async () => {
    const k = key();
    const old = Date.now() - INDEX_LINGER_MS - 60_000;
    await reserveSlots(k, 1, old);
    const seen = await store.readMeta(k);
    await reserveSlots(k, 1, Date.now());
    expect(await store.unlistIdle(k, seen?.reservedAt ?? 0)).toBe(false);
    expect((await store.scheduledObjects()).some((o) => o.resource === k.resource)).toBe(true);
  });
});

describe('retention', () => {
  it('does not deliver a pending event past its expiry, even before TTL has deleted it, and counts it', async () => {
    const k = key();
    const t0 = Date.now();
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 1), input(k.resource, 2)]);
    const eightDays = 8 * 86_400_000;
    const { distributor, sent } = recordingDistributor({}, () => t0 + eightDays);
    expect(await distributor.runTurn(k, 'w')).toMatchObject({ outcome: 'idle', distributed: 0 });
    // Not delivered, but not lost silently either: one gap marker stands for both.
    expect(sent.map((m) => m.events)).toMatchObject([
      [{ type: 'sluice.gap', resource: k.resource, data: { dropped: 2, reason: 'retention' } }],
    ]);
    expect(await store.readMeta(k)).toMatchObject({ depth: 0, cursor: 2, seq: 0 });
  });

  it('sends a gap marker again under the same ids when its holder died before the write that follows it', async () => {
    const k = key();
    const t0 = Date.now();
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 1), input(k.resource, 2)]);
    class DyingStore extends QueueStore {
      override async commitChunk(): Promise<void> {
        throw new Error('the holder died');
      }
      override async commitLastChunk(): Promise<'idle' | 'pending'> {
        throw new Error('the holder died');
      }
    }
    const dying = new DyingStore({ client, tableName: eventsTable, retentionDays: 7 });
    const eightDays = 8 * 86_400_000;
    const first = recordingDistributor({}, () => t0 + eightDays, dying);
    await expect(first.distributor.runTurn(k, 'dies')).rejects.toThrow('the holder died');
    const next = recordingDistributor({}, () => t0 + eightDays + 60_000);
    expect(await next.distributor.runTurn(k, 'next')).toMatchObject({ outcome: 'idle' });
    // The same marker twice: a subscriber drops the copy by its ids, and counts two events lost, not four.
    const ids = (sent: DeliveryMessage[]) => sent.map((m) => `${m.deliveryId}/${m.events.map((e) => e.id).join()}`);
    expect(first.sent).toMatchObject([{ events: [{ type: 'sluice.gap', data: { dropped: 2 } }] }]);
    expect(ids(next.sent)).toEqual(ids(first.sent));
  });

  it('marks events TTL has already deleted as a retention gap, not as skipped slots, and delivers what came after in order', async () => {
    const k = key();
    const t0 = Date.now();
    await publish(ingestDeps([]), k.tenantId, [input(k.resource, 1), input(k.resource, 2), input(k.resource, 3)]);
    // DynamoDB's TTL deleted slots 1-2 (their reservation is past the retention period).
    for (const slot of [1, 2]) {
      await client.send(new DeleteCommand({ TableName: eventsTable, Key: slotItemKey(k, slot) }));
    }
    const eightDays = 8 * 86_400_000;
    await reserveSlots(k, 1, t0 + eightDays);
    const { distributor, sent } = recordingDistributor({}, () => t0 + eightDays + 61_000);
    expect(await distributor.runTurn(k, 'w')).toMatchObject({ outcome: 'idle' });
    // Slot 4, with no item, was reserved some time after slot 3 (8 days ago) and before
    // the last reservation: it may be an accepted event TTL deleted too, so it is counted
    // with them (a marker that overstates, rather than an event lost untold).
    expect(sent.flatMap((m) => m.events)).toMatchObject([{ type: 'sluice.gap', data: { dropped: 4, reason: 'retention' } }]);
    expect(await store.readMeta(k)).toMatchObject({ depth: 0, cursor: 4 });
  });
});

describe('ingest across containers and under failure', () => {
  /** The ingest module as another API container has it: its own tat memory and reserve queue. */
  async function otherContainer(): Promise<typeof publish> {
    vi.resetModules();
    return (await import('../../functions/app/ingest.ts')).publish;
  }
  const answersOf = (outcome: Awaited<ReturnType<typeof publish>>) =>
    outcome.results.map((r) => (r.status === 'rejected' ? r.error.code : r.status));

  it('holds the per-object rate exactly when two containers race many requests for one object', async () => {
    const k = key();
    let now = 9_500_000;
    const deps = { ...ingestDeps([], { objectRatePerSecond: 100, objectBurst: 200 }), now: () => now };
    const publishers = [publish, await otherContainer()];
    const twenty = (n: number) => Array.from({ length: 20 }, (_, i) => input(k.resource, n * 100 + i));
    const race = async (requests: number) => {
      const outcomes = await Promise.all(
        Array.from({ length: requests }, (_, n) => (publishers[n % 2] as typeof publish)(deps, k.tenantId, twenty(n))),
      );
      for (const o of outcomes) {
        // A request of 20 (under a step) enters whole or not at all; a refusal says when to come back.
        expect(new Set(answersOf(o)).size).toBe(1);
        if (o.httpStatus === 429) expect(o.retryAfterSeconds).toBeGreaterThan(0);
      }
      return outcomes.flatMap((o) => o.results).filter((r) => r.status === 'accepted').length;
    };
    expect(await race(16)).toBe(200);
    now += 1_000;
    expect(await race(16)).toBe(100);
    now += 500;
    expect(await race(16)).toBe(40);
    expect((await store.readMeta(k))?.depth).toBe(340);
  });

  it('holds the queue cap exactly when two containers race, admitting each request in order', async () => {
    const k = key();
    const deps = ingestDeps([], { objectQueueCap: 50 });
    const publishers = [publish, await otherContainer()];
    const outcomes = await Promise.all(
      Array.from({ length: 40 }, (_, n) =>
        (publishers[n % 2] as typeof publish)(
          deps,
          k.tenantId,
          [0, 1, 2].map((i) => input(k.resource, n * 10 + i)),
        ),
      ),
    );
    const answers = outcomes.map(answersOf);
    expect(answers.flat().filter((a) => a === 'accepted')).toHaveLength(50);
    for (const a of answers) {
      const firstRejected = a.indexOf('queue_full');
      if (firstRejected >= 0) expect(a.slice(firstRejected).every((x) => x === 'queue_full')).toBe(true);
    }
    expect((await store.readMeta(k))?.depth).toBe(50);
  });

  it('tells the producer when to send rejected events again, also when others of the request were accepted', async () => {
    const k = key();
    const deps = ingestDeps([], { objectQueueCap: 2 });
    const outcome = await publish(
      deps,
      k.tenantId,
      [0, 1, 2].map((n) => input(k.resource, n)),
    );
    expect(answersOf(outcome)).toEqual(['accepted', 'accepted', 'queue_full']);
    expect(outcome.httpStatus).toBe(202);
    expect(outcome.retryAfterSeconds).toBeGreaterThan(0);
  });

  it("answers a request's events for several objects in input order", async () => {
    const [a, b, full] = [key(), key(), key()];
    const deps = ingestDeps([], { objectQueueCap: 2 });
    await publish(deps, full.tenantId, [input(full.resource, 0), input(full.resource, 1)]);
    const outcome = await publish(deps, a.tenantId, [
      input(full.resource, 2),
      input(a.resource, 3),
      input(b.resource, 4),
      input(a.resource, 5),
      input(full.resource, 6),
      input(a.resource, 7),
      input(b.resource, 8),
    ]);
    expect(answersOf(outcome)).toEqual(['queue_full', 'accepted', 'accepted', 'accepted', 'queue_full', 'queue_full', 'accepted']);
  });

  it('refuses a key used again for a different event, and never delivers either twice', async () => {
    const k = key();
    const deps = ingestDeps([]);
    const keyed = { ...input(k.resource, 1), data: { n: 1, m: 2 }, idempotencyKey: `reuse-${k.resource}` };
    const first = await publish(deps, k.tenantId, [keyed]);
    expect(first.results[0]?.status).toBe('accepted');
    // The same event again (its data's keys in another order are the same data): a duplicate.
    const same = await publish(deps, k.tenantId, [{ ...keyed, data: { m: 2, n: 1 } }]);
    expect(same.results[0]).toEqual({ id: (first.results[0] as { id: string }).id, status: 'duplicate' });
    const different = await publish(deps, k.tenantId, [{ ...keyed, data: { n: 2, m: 2 } }]);
    expect(different.results[0]).toMatchObject({ status: 'rejected', error: { code: 'invalid_request' } });
    expect((different.results[0] as RejectedForTest).error.message).toMatch(/different event/);
    expect(different.httpStatus).toBe(202);
    const { distributor, sent } = recordingDistributor();
    await distributor.runTurn(k, 'w');
    expect(sent.flatMap((m) => m.events.map((e) => (e as DeliveredEvent).data))).toEqual([{ n: 1, m: 2 }]);
  });

  it('accepts one of two concurrent requests with the same key, from two containers, and delivers the event once', async () => {
    const k = key();
    const deps = ingestDeps([]);
    const keyed = { ...input(k.resource, 1), idempotencyKey: `concurrent-${k.resource}` };
    const publishers = [publish, await otherContainer()];
    const outcomes = await Promise.all(publishers.map((p) => p(deps, k.tenantId, [keyed])));
    expect(outcomes.map((o) => answersOf(o)[0]).sort()).toEqual(['accepted', 'conflict']);
    const { distributor, sent } = recordingDistributor();
    await distributor.runTurn(k, 'w');
    expect(sent.flatMap((m) => m.events)).toHaveLength(1);
  });

  /** A client whose BatchWriteItem stores only its first item and then fails, and whose void of `throttledSlot` is throttled. */
  function throttledHalf(throttledSlot: number) {
    const c = documentClient(emulators.dynamo);
    c.middlewareStack.add(
      (next) => async (args) => {
        const input = args.input as { RequestItems?: Record<string, Array<unknown>>; Item?: Record<string, unknown> };
        const throttled = () =>
          Object.assign(new Error('Rate of requests exceeds the allowed throughput.'), {
            name: 'ThrottlingException',
            $metadata: { attempts: 3 },
          });
        const items = input.RequestItems?.[eventsTable];
        if (items) {
          await next({ ...args, input: { RequestItems: { [eventsTable]: items.slice(0, 1) } } });
          throw throttled();
        }
        if (input.Item?.void === true && input.Item.slot === throttledSlot) throw throttled();
        return next(args);
      },
      { step: 'initialize', name: 'throttledHalf' },
    );
    return new QueueStore({ client: c, tableName: eventsTable, retentionDays: 7 });
  }

  it('answers an event its write stored as accepted though the void of another slot was throttled', async () => {
    const k = key();
    const deps = { ...ingestDeps([]), queues: throttledHalf(2) } as Parameters<typeof publish>[0];
    const outcome = await publish(deps, k.tenantId, [input(k.resource, 1), input(k.resource, 2), input(k.resource, 3)]);
    // Slot 1 is stored (delivered): accepted. Slot 2 could be neither stored nor voided: not accepted. Slot 3 voided.
    expect(answersOf(outcome)).toEqual(['accepted', 'internal', 'internal']);
    // Past the ingest grace, the distributor skips the missing slot 2.
    await new Promise((resolve) => setTimeout(resolve, 5));
    const { distributor, sent } = recordingDistributor({ ingestGraceMs: 1 });
    expect((await distributor.runTurn(k, 'w')).outcome).toBe('idle');
    expect(sent.flatMap((m) => m.events.map((e) => (e as DeliveredEvent).data))).toEqual([{ n: 1 }]);
  });

  it('answers events as accepted when their reserve applied but the SDK gave up on its retries, kept on the meta item or not', async () => {
    // The first try applies and its answer is lost; the SDK's later tries are throttled and it gives up.
    const c = documentClient(emulators.dynamo);
    c.middlewareStack.add(
      (next) => async (args) => {
        const result = await next(args);
        if (String((args.input as { UpdateExpression?: string }).UpdateExpression).includes('ADD #depth :count, #last_slot :count')) {
          throw Object.assign(new Error('Rate of requests exceeds the allowed throughput.'), {
            name: 'ThrottlingException',
            $metadata: { attempts: 3 },
          });
        }
        return result;
      },
      { step: 'initialize', name: 'appliedThenThrottled' },
    );
    const queues = new QueueStore({ client: c, tableName: eventsTable, retentionDays: 7 });
    for (const events of [1, 2]) {
      const k = key();
      const rings: string[] = [];
      const deps = { ...ingestDeps(rings), queues } as Parameters<typeof publish>[0];
      const outcome = await publish(
        deps,
        k.tenantId,
        Array.from({ length: events }, (_, n) => input(k.resource, n)),
      );
      // Within the ingest grace, a turn delivers what was stored: nothing is left missing.
      const { distributor, sent } = recordingDistributor({ ingestGraceMs: 60_000 });
      expect((await distributor.runTurn(k, 'w')).outcome).toBe('idle');
      // Delivered, so answered accepted (and rung), not rate_limited: a producer would send them again.
      expect(sent.flatMap((m) => m.events.map((e) => (e as DeliveredEvent).data))).toEqual(
        Array.from({ length: events }, (_, n) => ({ n })),
      );
      expect(answersOf(outcome)).toEqual(Array(events).fill('accepted'));
      expect(rings).toHaveLength(1);
    }
  });
});

describe('ingest writes whose answer was lost (the SDK tried again after the first try had applied)', () => {
  /** A document client whose first try of each write that `matches` applies but loses its answer: the SDK tries again. */
  function losingFirstAnswers(matches: (input: { ConditionExpression?: string; Item?: Record<string, unknown> }) => boolean) {
    const lossy = documentClient(emulators.dynamo);
    return { client: lossy, lost: loseFirstAnswers(lossy, matches) };
  }
  const answersOf = (outcome: Awaited<ReturnType<typeof publish>>) =>
    outcome.results.map((r) => (r.status === 'rejected' ? r.error.code : r.status));

  it('answers an event as not stored when the void of its slot applied unanswered, so its key is not confirmed for an event never delivered', async () => {
    const k = key();
    // The batched write fails; each void applies, but its answer is lost and the SDK's second try is refused.
    const { client: lossy, lost } = losingFirstAnswers((i) => i.Item?.void !== undefined);
    class FailingWrites extends QueueStore {
      override async writeEventsOf(): Promise<void> {
        throw new Error('InternalServerError');
      }
    }
    const queues = new FailingWrites({ client: lossy, tableName: eventsTable, retentionDays: 7 });
    const keyed = { ...input(k.resource, 1), idempotencyKey: `void-lost-${k.resource}` };
    // Taken for written, they were answered accepted (and the key confirmed): never delivered,
    // and a retry a duplicate. Neither stored, the request fails as a whole (500).
    await expect(
      publish({ ...ingestDeps([]), queues } as Parameters<typeof publish>[0], k.tenantId, [keyed, input(k.resource, 2)]),
    ).rejects.toThrow('InternalServerError');
    expect(lost()).toBe(2);
    const retry = await publish(ingestDeps([]), k.tenantId, [keyed]);
    expect(answersOf(retry)).toEqual(['accepted']);
    const { distributor, sent } = recordingDistributor();
    expect((await distributor.runTurn(k, 'w')).outcome).toBe('idle');
    expect(sent.flatMap((m) => m.events.map((e) => `${e.id}:${JSON.stringify((e as DeliveredEvent).data)}`))).toEqual([
      `${(retry.results[0] as { id: string }).id}:{"n":1}`,
    ]);
  });

  it('takes its own claim of an idempotency key that applied unanswered as claimed, not as another request accepting it', async () => {
    const k = key();
    const { client: lossy, lost } = losingFirstAnswers((i) =>
      String(i.ConditionExpression).startsWith('attribute_not_exists(#pk) OR #expires_at_ms'),
    );
    const idempotency = new IdempotencyStore({ client: lossy, tableName: eventsTable, retentionDays: 7, ingestGraceMs: 60_000 });
    const keyed = { ...input(k.resource, 1), idempotencyKey: `claim-lost-${k.resource}` };
    const outcome = await publish({ ...ingestDeps([]), idempotency } as Parameters<typeof publish>[0], k.tenantId, [keyed]);
    expect(lost()).toBe(1);
    // Answered conflict, the key then stayed pending for the ingest grace: every retry within it was a conflict too.
    expect(answersOf(outcome)).toEqual(['accepted']);
    const again = await publish(ingestDeps([]), k.tenantId, [keyed]);
    expect(again.results[0]).toEqual({ id: (outcome.results[0] as { id: string }).id, status: 'duplicate' });
    const { distributor, sent } = recordingDistributor();
    expect((await distributor.runTurn(k, 'w')).outcome).toBe('idle');
    expect(sent.flatMap((m) => m.events)).toHaveLength(1);
  });
});

type RejectedForTest = { status: 'rejected'; error: { code: string; message: string } };
