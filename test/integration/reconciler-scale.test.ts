/**
 * What a reconciler run reads with many objects listed in `by_schedule`, none of them
 * stuck: idle ones lingering after their last event, and paused ones. Each costs half
 * a read unit every run (README, What it costs when nothing happens): the run grows
 * with the listed objects, not with the stuck ones.
 */

import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { instrument, newCounts } from '../../bench/accounting.ts';
import { documentClient, sqsClient } from '../../functions/adapters/aws.ts';
import { Doorbell } from '../../functions/adapters/doorbell.ts';
import { QueueStore } from '../../functions/adapters/queue-store.ts';
import { reconcile } from '../../functions/app/reconciler.ts';
import { buildConfig } from '../../functions/core/config.ts';
import { NO_LOGS } from '../../functions/core/telemetry.ts';
import { DISTRIBUTE_QUEUE } from '../../functions/definitions/queues.ts';
import { createQueues, createTables, type Emulators, startEmulators } from '../../sandbox/emulators.ts';

const IDLE = 4_000;
const PAUSED = 1_000;

let emulators: Emulators;
let tableName: string;
let queueUrl: string;

beforeAll(async () => {
  emulators = await startEmulators();
  const tables = await createTables(new DynamoDBClient({ ...emulators.dynamo }));
  tableName = tables.Events as string;
  queueUrl = (await createQueues(sqsClient(emulators.sqs)))[DISTRIBUTE_QUEUE.logicalName]?.url as string;
}, 60_000);

afterAll(async () => {
  await emulators?.stop();
});

describe('reconciler with many listed objects', () => {
  it(`reads each of ${IDLE + PAUSED} listed objects once, for half a read unit each, and rings none of the paused`, async () => {
    const t0 = Date.now();
    const setup = new QueueStore({ client: documentClient(emulators.dynamo), tableName, retentionDays: 7 });
    const limits = { cap: 100, ratePerSecond: 1e6, burst: 1e6 };
    const keys = [
      ...Array.from({ length: IDLE }, (_, i) => ({ tenantId: 'ten_idle', resource: `obj:${i}` })),
      ...Array.from({ length: PAUSED }, (_, i) => ({ tenantId: 'ten_paused', resource: `obj:${i}` })),
    ];
    for (let i = 0; i < keys.length; i += 50) {
      await Promise.all(
        keys.slice(i, i + 50).map(async (k) => {
          // Idle: one quiet event 5 minutes ago (inline, no ring); paused: reserved 5 minutes ago, never turned.
          const at = t0 - 5 * 60_000;
          if (!(await setup.reserve(k, 1, limits, at, false))) throw new Error('refused');
          // An idle object: its turn took its event; it stays listed until INDEX_LINGER_MS passes.
          if (k.tenantId === 'ten_idle') {
            await documentClient(emulators.dynamo).send(
              new UpdateCommand({
                TableName: tableName,
                Key: { pk: `${k.tenantId}#${k.resource}`, sk: 'meta' },
                UpdateExpression: 'SET #s = :f, #d = :z, #t = :at',
                ExpressionAttributeNames: { '#s': 'scheduled', '#d': 'depth', '#t': 'turn_at' },
                ExpressionAttributeValues: { ':f': false, ':z': 0, ':at': at },
              }),
            );
          }
        }),
      );
    }
    const counts = newCounts();
    const dynamo = documentClient(emulators.dynamo);
    instrument(counts, dynamo, 'dynamodb');
    const metrics = new Map<string, number>();
    const report = await reconcile({
      queues: new QueueStore({ client: dynamo, tableName, retentionDays: 7 }),
      doorbell: new Doorbell({ client: sqsClient(emulators.sqs), queueUrl }),
      switches: { list: async () => [{ tenant: 'ten_paused', scope: 'tenant', action: 'pause' }] as never },
      config: buildConfig(),
      metrics: { count: (name, value = 1) => void metrics.set(name, value) },
      logger: NO_LOGS,
      now: () => t0,
    });
    const listed = IDLE + PAUSED;
    expect(report.rerung).toBe(0);
    expect(metrics.get('ScheduledObjects')).toBe(PAUSED);
    // One batch read per 100 listed objects, and the shards' key-only pages.
    expect(counts.calls.dynamodb?.BatchGetItemCommand).toBe(listed / 100);
    expect(counts.rru).toBeGreaterThanOrEqual(0.5 * listed);
    expect(counts.rru).toBeLessThan(0.52 * listed);
    // Nothing of the objects is written: the one write is the run's note of the shards' summaries.
    expect(counts.calls.dynamodb?.UpdateItemCommand).toBe(1);
    expect(counts.dynamoTargets['UpdateItem reconciler/shards']).toBe(1);
    // Most of it the five deepest objects it names of each shard (80 here, each `[pk, depth]`:
    // see SHARD_DEEPEST), for GET /v1/admin/queues; a note of shards with nothing waiting is one.
    expect(counts.wru).toBeLessThanOrEqual(4);
  }, 600_000);
});
