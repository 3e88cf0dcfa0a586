/**
 * The doorbells' bulk lane (functions/core/lanes.ts): a tenant writing thousands of
 * distinct objects, each within its per-object limits and its requests within its
 * throttle, rings a doorbell per object; past `bulkLaneAfterRingsPerSecond` in one
 * second those go to a FIFO queue of their own, so that another tenant's doorbell is
 * not queued behind all of them. Against the sandbox, and against the emulators with the
 * real doorbell for the rings that keep or choose a lane (a turn's, the reconciler's).
 */

import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GetQueueAttributesCommand, ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import type { Context, SQSEvent } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { documentClient, sqsClient } from '../../functions/adapters/aws.ts';
import { IdempotencyStore } from '../../functions/adapters/idempotency-store.ts';
import { QueueStore } from '../../functions/adapters/queue-store.ts';
import { type IngestDeps, publish } from '../../functions/app/ingest.ts';
import { reconcile } from '../../functions/app/reconciler.ts';
import { distributor, reconcilerDeps, type Wiring } from '../../functions/app/runtime.ts';
import { buildConfig } from '../../functions/core/config.ts';
import { NO_LOGS, NO_METRICS } from '../../functions/core/telemetry.ts';
import { DELIVER_QUEUE, DISTRIBUTE_BULK_QUEUE, DISTRIBUTE_QUEUE } from '../../functions/definitions/queues.ts';
import { makeDistributorHandler } from '../../functions/distributor/process.ts';
import { createQueues, createTables, type Emulators, startEmulators } from '../../sandbox/emulators.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { createTenant, createWebhook, publish as publishThroughApi } from '../support/api.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';
import { sqsRecord } from '../support/sqs-events.ts';

describe('a tenant writing hundreds of distinct objects in a second', () => {
  let sandbox: Sandbox;
  let receiver: Receiver;
  /** The doorbells the distributor received, by lane, each as its tenant, in the order received. */
  const received: Record<string, string[]> = { Distribute: [], DistributeBulk: [] };
  // A fifth of the default threshold, and a fifth of the objects. Each object's event is
  // a POST to the test's receiver, which answers on the thread the sandbox's functions
  // run on: 2,000 of them on a loaded 2-core machine made that thread answer in seconds,
  // and sluice rightly paced the endpoint as slow (core/endpoint-pace.ts).
  withSandbox(
    {
      canary: false,
      config: { bulkLaneAfterRingsPerSecond: 20 },
      onReceive: (queue, messages) => {
        for (const m of messages) received[queue]?.push(JSON.parse(m.body).tenant);
      },
    },
    (s, r) => {
      [sandbox, receiver] = [s, r];
    },
  );

  it("puts its doorbells in the bulk lane, where another tenant's event does not wait behind them, and delivers every one", async () => {
    const [noisy, calm] = await Promise.all([createTenant(sandbox, 'noisy'), createTenant(sandbox, 'calm')]);
    await createWebhook(sandbox, noisy.key, { resource: 'project:noisy', url: `${receiver.url}/noisy` });
    await createWebhook(sandbox, calm.key, { resource: 'calm:1', url: `${receiver.url}/calm` });

    // 400 objects, one event each: 4 requests of 100 events within a second or two
    // (well inside the default throttle of 500 requests a second).
    const answers = await Promise.all(
      Array.from({ length: 4 }, (_, r) =>
        publishThroughApi(
          sandbox,
          noisy.key,
          Array.from({ length: 100 }, (_, i) => ({ resource: `obj:${r}-${i}`, parents: ['project:noisy'], type: 'x.y', data: {} })),
        ),
      ),
    );
    for (const answer of answers) expect(answer.status).toBe(202);
    expect((await publishThroughApi(sandbox, calm.key, [{ resource: 'calm:1', type: 'x.y', data: 'calm' }])).status).toBe(202);
    await receiver.waitFor(() => receiver.events('/calm').length === 1, 60_000);
    await receiver.waitFor(() => receiver.events('/noisy').length >= 400, 120_000);

    // In one FIFO queue the calm tenant's doorbell came after all 400 of the noisy
    // tenant's. In the main lane it comes after at most the few the main lane took before
    // the noisy tenant's rings (20 in a second) moved to the bulk lane, where the rest went.
    const main = received.Distribute as string[];
    const bulk = received.DistributeBulk as string[];
    expect(main.filter((t) => t === calm.id)).toHaveLength(1);
    expect(main.indexOf(calm.id)).toBeLessThan(100);
    expect(bulk.filter((t) => t === noisy.id).length).toBeGreaterThanOrEqual(300);
    expect(bulk).not.toContain(calm.id);
    expect(sandbox.metrics.total('BulkLaneDoorbells')).toBeGreaterThanOrEqual(300);
    const noisyEvents = receiver.events('/noisy');
    expect(noisyEvents).toHaveLength(400);
    expect(new Set(noisyEvents.map((e) => e.resource)).size).toBe(400);
    expect(noisyEvents.every((e) => e.seq === 1)).toBe(true);
  }, 240_000);
});

describe('rings that keep or choose their lane', () => {
  let emulators: Emulators;
  let wiring: Wiring;
  let store: QueueStore;

  beforeAll(async () => {
    emulators = await startEmulators();
    const tables = await createTables(new DynamoDBClient({ ...emulators.dynamo }));
    const queues = await createQueues(sqsClient(emulators.sqs));
    wiring = {
      config: buildConfig({ turnMaxEvents: 5, objectRatePerSecond: 1_000, objectBurst: 1_000 }),
      dynamo: documentClient(emulators.dynamo),
      sqs: sqsClient(emulators.sqs),
      eventsTable: tables.Events as string,
      controlTable: tables.Control as string,
      distributeQueueUrl: queues[DISTRIBUTE_QUEUE.logicalName]?.url as string,
      distributeBulkQueueUrl: queues[DISTRIBUTE_BULK_QUEUE.logicalName]?.url as string,
      deliverQueueUrl: queues[DELIVER_QUEUE.logicalName]?.url as string,
      metrics: NO_METRICS,
      logger: NO_LOGS,
    };
    store = new QueueStore({ client: wiring.dynamo, tableName: wiring.eventsTable, retentionDays: 7 });
  });

  afterAll(async () => {
    await emulators?.stop();
  });

  async function waiting(queueUrl: string): Promise<number> {
    const { Attributes } = await wiring.sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ['ApproximateNumberOfMessages'] }),
    );
    return Number(Attributes?.ApproximateNumberOfMessages);
  }

  async function drain(queueUrl: string): Promise<string[]> {
    const bodies: string[] = [];
    for (;;) {
      const { Messages = [] } = await wiring.sqs.send(
        new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 10, VisibilityTimeout: 300 }),
      );
      if (Messages.length === 0) return bodies;
      bodies.push(...Messages.map((m) => m.Body as string));
    }
  }

  /** Stores `count` events on the object, its ring left out (the test rings, as a doorbell would). */
  async function published(tenantId: string, resource: string, count: number): Promise<void> {
    let id = 0;
    const deps: IngestDeps = {
      queues: store,
      idempotency: new IdempotencyStore({ client: wiring.dynamo, tableName: wiring.eventsTable, retentionDays: 7, ingestGraceMs: 60_000 }),
      doorbell: { ring: async () => {} },
      config: wiring.config,
      metrics: NO_METRICS,
      logger: NO_LOGS,
      now: Date.now,
      newEventId: () => `evt_${resource}_${++id}`,
    };
    const inputs = Array.from({ length: count }, (_, n) => ({
      resource,
      parents: [],
      type: 'a.b',
      data: { n },
      idempotencyKey: undefined,
    }));
    const outcome = await publish(deps, tenantId, inputs);
    expect(outcome.results.every((r) => r.status === 'accepted')).toBe(true);
  }

  /** Reserves `count` slots on the object at `at`, as an ingest whose ring was lost. */
  async function reserved(tenantId: string, resource: string, count: number, at: number): Promise<void> {
    const limits = { cap: 1_000, ratePerSecond: 1e6, burst: 1e6 };
    if (!(await store.reserve({ tenantId, resource }, count, limits, at, false))) throw new Error('reservation refused');
  }

  it("rings again in its doorbell's lane when a turn ends with events left", async () => {
    // Events for two turns of 5 on each of two objects.
    await published('ten_lanes', 'doc:bulk', 8);
    await published('ten_lanes', 'doc:main', 8);
    const handler = makeDistributorHandler(distributor(wiring), NO_LOGS);
    const record = (resource: string, bulk: boolean, id: string) =>
      sqsRecord(JSON.stringify({ tenant: 'ten_lanes', resource, ...(bulk && { bulk: true }) }), { MessageGroupId: `g-${resource}` }, id);
    const event = { Records: [record('doc:bulk', true, 'm1'), record('doc:main', false, 'm2')] } as unknown as SQSEvent;

    expect(await handler(event, {} as Context)).toEqual({ batchItemFailures: [] });

    const inBulk = (await drain(wiring.distributeBulkQueueUrl)).map((b) => JSON.parse(b));
    const inMain = (await drain(wiring.distributeQueueUrl)).map((b) => JSON.parse(b));
    expect(inBulk).toEqual([{ tenant: 'ten_lanes', resource: 'doc:bulk', bulk: true }]);
    expect(inMain).toEqual([{ tenant: 'ten_lanes', resource: 'doc:main' }]);
  });

  it('re-rings a tenant with more stuck objects than the main lane takes in a second in the bulk lane, from the first', async () => {
    const config = buildConfig({ bulkLaneAfterRingsPerSecond: 20 });
    const longAgo = Date.now() - 10 * 60_000;
    for (let i = 0; i < 30; i++) await reserved('ten_many', `obj:${i}`, 1, longAgo);
    for (let i = 0; i < 2; i++) await reserved('ten_few', `obj:${i}`, 1, longAgo);
    const [mainBefore, bulkBefore] = [await waiting(wiring.distributeQueueUrl), await waiting(wiring.distributeBulkQueueUrl)];

    const report = await reconcile(reconcilerDeps({ ...wiring, config }));

    expect(report.rerung).toBe(32);
    const inBulk = (await drain(wiring.distributeBulkQueueUrl)).map((b) => JSON.parse(b));
    const inMain = (await drain(wiring.distributeQueueUrl)).map((b) => JSON.parse(b));
    expect([mainBefore, bulkBefore]).toEqual([0, 0]);
    expect(inBulk.map((d) => d.tenant)).toEqual(Array(30).fill('ten_many'));
    expect(inMain.map((d) => d.tenant)).toEqual(['ten_few', 'ten_few']);
  });
});
