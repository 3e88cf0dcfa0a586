/**
 * The reconciler's summaries of the `by_schedule` shards name each shard's deepest
 * objects. Against the embedded DynamoDB and SQS.
 */

import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { documentClient, sqsClient } from '../../functions/adapters/aws.ts';
import { Doorbell } from '../../functions/adapters/doorbell.ts';
import { QueueStore, SHARD_DEEPEST } from '../../functions/adapters/queue-store.ts';
import { reconcile } from '../../functions/app/reconciler.ts';
import { buildConfig } from '../../functions/core/config.ts';
import { scheduleShardNumber } from '../../functions/core/keys.ts';
import type { ObjectKey } from '../../functions/core/model.ts';
import { NO_LOGS } from '../../functions/core/telemetry.ts';
import { DISTRIBUTE_QUEUE } from '../../functions/definitions/queues.ts';
import { SCHEDULE_SHARDS } from '../../functions/definitions/tables.ts';
import { createQueues, createTables, type Emulators, startEmulators } from '../../sandbox/emulators.ts';

const LIMITS = { cap: 1_000, ratePerSecond: 1e6, burst: 1e6 };

let emulators: Emulators;
let eventsTable: string;
let queueUrl: string;
let store: QueueStore;

// Emulators of its own for each test: one's objects are not the next one's index.
beforeEach(async () => {
  emulators = await startEmulators();
  const tables = await createTables(new DynamoDBClient({ ...emulators.dynamo }));
  eventsTable = tables.Events as string;
  store = new QueueStore({ client: documentClient(emulators.dynamo), tableName: eventsTable, retentionDays: 7 });
  queueUrl = (await createQueues(sqsClient(emulators.sqs)))[DISTRIBUTE_QUEUE.logicalName]?.url as string;
}, 60_000);

afterEach(async () => {
  await emulators?.stop();
});

/** A run of the reconciler at `now`, reading every shard. */
async function runReconciler(now: number): Promise<void> {
  await reconcile({
    queues: store,
    doorbell: new Doorbell({ client: sqsClient(emulators.sqs), queueUrl }),
    switches: { list: async () => [] },
    config: buildConfig(),
    metrics: { count: () => undefined },
    logger: NO_LOGS,
    now: () => now,
  });
}

/** Reserves `depth` events on each object at `at`: scheduled, with that many waiting. */
async function withDepths(objects: ReadonlyArray<{ key: ObjectKey; depth: number }>, at: number): Promise<void> {
  for (let i = 0; i < objects.length; i += 25) {
    await Promise.all(
      objects.slice(i, i + 25).map(async ({ key, depth }) => {
        if (!(await store.reserve(key, depth, LIMITS, at, false))) throw new Error('reservation refused');
      }),
    );
  }
}

/** `count` objects of a tenant that the index lists in `shard`. */
function keysInShard(shard: number, count: number, prefix: string): ObjectKey[] {
  const keys: ObjectKey[] = [];
  for (let i = 0; keys.length < count; i++) {
    const key = { tenantId: 'ten_view', resource: `${prefix}:${i}` };
    if (scheduleShardNumber(key, SCHEDULE_SHARDS) === shard) keys.push(key);
  }
  return keys;
}

describe("the shards' summaries", () => {
  it('name each shard’s deepest objects after a reconciler run, and none once the shard has none waiting', async () => {
    const t0 = Date.now();
    const many = keysInShard(3, SHARD_DEEPEST + 2, 'many').map((key, n) => ({ key, depth: n + 1 }));
    const one = { key: keysInShard(9, 1, 'one')[0] as ObjectKey, depth: 4 };
    await withDepths([...many, one], t0);

    await runReconciler(t0 + 1_000);

    const summaries = await store.shardSummaries();
    expect(summaries.size).toBe(SCHEDULE_SHARDS);
    const deepestIn3 = [...many].reverse().slice(0, SHARD_DEEPEST);
    expect(summaries.get(3)?.deepest).toEqual(deepestIn3);
    expect(summaries.get(9)?.deepest).toEqual([one]);
    expect(summaries.get(0)?.deepest).toEqual([]);

    // Shard 3's objects go idle (their turns took their events): still listed, nothing waiting.
    for (const { key } of many) {
      await documentClient(emulators.dynamo).send(
        new UpdateCommand({
          TableName: eventsTable,
          Key: { pk: `${key.tenantId}#${key.resource}`, sk: 'meta' },
          UpdateExpression: 'SET #s = :f, #d = :z, #t = :at',
          ExpressionAttributeNames: { '#s': 'scheduled', '#d': 'depth', '#t': 'turn_at' },
          ExpressionAttributeValues: { ':f': false, ':z': 0, ':at': t0 + 2_000 },
        }),
      );
    }
    await runReconciler(t0 + 61_000);

    const after = await store.shardSummaries();
    expect(after.get(3)?.deepest).toEqual([]);
    expect(after.get(9)?.deepest).toEqual([one]);
  });
});
