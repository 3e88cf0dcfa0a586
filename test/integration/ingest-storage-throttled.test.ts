/**
 * The events table past its throughput for every tenant (its quota, on-demand's
 * doubling, the account's): ingest answers each refused reserve with 429 rate_limited
 * (`StorageThrottled`), as it answers a producer past its object's rate. That is one
 * tenant's doing, a ticket; the table refusing everyone's events is sluice's, a page.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { documentClient } from '../../functions/adapters/aws.ts';
import { IdempotencyStore } from '../../functions/adapters/idempotency-store.ts';
import { QueueStore } from '../../functions/adapters/queue-store.ts';
import { publish } from '../../functions/app/ingest.ts';
import { buildConfig } from '../../functions/core/config.ts';
import { NO_LOGS } from '../../functions/core/telemetry.ts';
import { AlarmEvaluator } from '../../sandbox/alarms.ts';
import { createTables, type Emulators, startEmulators } from '../../sandbox/emulators.ts';
import { InMemoryMetrics } from '../../sandbox/metrics.ts';

let emulators: Emulators;
let eventsTable: string;

beforeAll(async () => {
  emulators = await startEmulators();
  const tables = await createTables(new DynamoDBClient({ ...emulators.dynamo }));
  eventsTable = tables.Events as string;
});

afterAll(async () => {
  await emulators?.stop();
});

it("pages when DynamoDB throttles every tenant's reserving writes, which are answered 429 as a producer past its limits is", async () => {
  // Prepare: the events table throttles every write to a meta item (the reserve), as
  // DynamoDB does once the table is past its throughput (the SDK's retries spent).
  const client = documentClient(emulators.dynamo);
  client.middlewareStack.add(
    (next) => async (args) => {
      const input = args.input as { UpdateExpression?: string; Key?: { sk?: string } };
      if (input.UpdateExpression !== undefined && input.Key?.sk === 'meta') {
        throw Object.assign(new Error('Rate of requests exceeds the allowed throughput.'), {
          name: 'ThrottlingException',
          $metadata: { attempts: 3 },
        });
      }
      return next(args);
    },
    { step: 'initialize', name: 'tableThrottled' },
  );
  let now = Date.now();
  const metrics = new InMemoryMetrics(() => now);
  const config = buildConfig({});
  const evaluator = new AlarmEvaluator(metrics, config, { now: () => now });
  let id = 0;
  const deps = {
    queues: new QueueStore({ client, tableName: eventsTable, retentionDays: 7 }),
    idempotency: new IdempotencyStore({ client, tableName: eventsTable, retentionDays: 7, ingestGraceMs: 60_000 }),
    doorbell: { ring: async () => undefined },
    config,
    metrics,
    logger: NO_LOGS,
    now: () => now,
    newEventId: () => `evt_${++id}`,
  } as unknown as Parameters<typeof publish>[0];

  // Act: 20 tenants, each far within its limits: 10 requests of one event, each to an object of its own.
  const answers = new Set<string>();
  for (let tenant = 0; tenant < 20; tenant++) {
    for (let n = 0; n < 10; n++) {
      const input = { resource: `doc:${n}`, parents: [], type: 'a.b', data: {}, idempotencyKey: undefined };
      const outcome = await publish(deps, `ten_${tenant}`, [input]);
      for (const result of outcome.results) answers.add(result.status === 'rejected' ? result.error.code : result.status);
    }
  }
  now += 1_000;

  // Assert: every event refused as rate_limited, and on-call paged for it.
  expect([...answers]).toEqual(['rate_limited']);
  const paging = evaluator
    .evaluate()
    .filter((a) => a.state === 'ALARM' && a.severity === 'page' && a.name !== 'canary-stale' && a.name !== 'reconciler-stale');
  expect(paging.map((a) => a.name)).toEqual(['ingest-5xx']);
}, 60_000);
