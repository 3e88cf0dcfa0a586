/**
 * `GET /v1/admin/queues` over a `by_schedule` index larger than it can read in its time
 * (README, The deepest object queues): it answers within its budget, says it is not
 * complete, and still names the deepest objects the reconciler's last run found, whose
 * summaries name each shard's deepest. Against the embedded DynamoDB and SQS, with a
 * shard's reads made slow on the real client.
 */

import { UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { beforeEach, describe, expect, it } from 'vitest';
import { documentClient, sqsClient } from '../../functions/adapters/aws.ts';
import { Doorbell } from '../../functions/adapters/doorbell.ts';
import { QueueStore, SHARD_DEEPEST } from '../../functions/adapters/queue-store.ts';
import { deepestQueues, QUEUES_VIEW_MARGIN_MS, queuesViewTimeLeft, reconcile } from '../../functions/app/reconciler.ts';
import { buildConfig } from '../../functions/core/config.ts';
import { scheduleShardKey, scheduleShardNumber } from '../../functions/core/keys.ts';
import type { ObjectKey } from '../../functions/core/model.ts';
import { NO_LOGS } from '../../functions/core/telemetry.ts';
import { SCHEDULE_INDEX, SCHEDULE_SHARDS } from '../../functions/definitions/tables.ts';
import { withEmulatorsPerTest } from '../support/events-table.ts';

const LIMITS = { cap: 1_000, ratePerSecond: 1e6, burst: 1e6 };

// Emulators of its own for each test: one's objects are not the next one's index.
const each = withEmulatorsPerTest();
let store: QueueStore;

beforeEach(() => {
  store = new QueueStore({ client: each.client, tableName: each.table, retentionDays: 7 });
});

/** A run of the reconciler at `now`, reading every shard. */
async function runReconciler(now: number): Promise<void> {
  await reconcile({
    queues: store,
    doorbell: new Doorbell({ client: sqsClient(each.emulators.sqs), queueUrl: each.distributeQueueUrl }),
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
      await documentClient(each.emulators.dynamo).send(
        new UpdateCommand({
          TableName: each.table,
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

describe('GET /v1/admin/queues (deepestQueues)', () => {
  it('answers within its budget over an index it cannot read in time, not complete, with the deep object a summary named', async () => {
    const t0 = Date.now();
    const slowShard = 5;
    const deep = keysInShard(slowShard, 1, 'deep')[0] as ObjectKey;
    const others = Array.from({ length: 64 }, (_, i) => ({ tenantId: 'ten_view', resource: `obj:${i}` })).filter(
      (key) => scheduleShardNumber(key, SCHEDULE_SHARDS) !== slowShard,
    );
    await withDepths([{ key: deep, depth: 50 }, ...others.map((key, n) => ({ key, depth: 1 + (n % 3) }))], t0);
    await runReconciler(t0 + 1_000);
    // It deepens after the run: the view must show its depth now, not the summary's.
    await withDepths([{ key: deep, depth: 30 }], t0 + 2_000);

    // The deep object's shard is one the view cannot read in its time: each page of it
    // takes 6 s (a shard of a large index, read page by page, takes longer still).
    const client = documentClient(each.emulators.dynamo);
    client.middlewareStack.add(
      (next) => async (args) => {
        const input = args.input as { IndexName?: string; ExpressionAttributeValues?: Record<string, unknown> };
        if (input.IndexName === SCHEDULE_INDEX && input.ExpressionAttributeValues?.[':shard'] === scheduleShardKey(slowShard)) {
          await new Promise((resolve) => setTimeout(resolve, 6_000));
        }
        return next(args);
      },
      { step: 'initialize', name: 'slowShard' },
    );
    const queues = new QueueStore({ client, tableName: each.table, retentionDays: 7 });
    // The invocation has two seconds to read in, beyond the margin it keeps (Lambda's
    // remaining time): enough for the other shards on a loaded machine.
    const started = Date.now();
    const deadline = started + QUEUES_VIEW_MARGIN_MS + 2_000;

    const answer = await deepestQueues(
      { queues, now: Date.now },
      3,
      queuesViewTimeLeft(Date.now, () => deadline - Date.now()),
    );
    const took = Date.now() - started;

    // It answered without waiting for the slow shard's page.
    expect(took).toBeLessThan(5_000);
    expect(answer.complete).toBe(false);
    expect(answer.objects_read).toBe(others.length);
    expect(answer.objects_scheduled).toBe(others.length + 1);
    expect(answer.data).toHaveLength(3);
    expect(answer.data[0]).toMatchObject({ tenant: deep.tenantId, resource: deep.resource, depth: 80, scheduled: true });
    expect(answer.data.slice(1).map((q) => q.depth)).toEqual([3, 3]);
    // Once, though both the summary and (had it come in time) its shard list it.
    expect(answer.data.filter((q) => q.resource === deep.resource)).toHaveLength(1);
    // The slow page still under way ends before the emulators stop.
    await new Promise((resolve) => setTimeout(resolve, 6_000 - (Date.now() - started)));
  });

  it('is complete on an index it reads in time, with the answer a read of every listed object gives', async () => {
    const t0 = Date.now();
    const objects = Array.from({ length: 80 }, (_, i) => ({
      key: { tenantId: 'ten_view', resource: `obj:${i}` },
      depth: 1 + ((i * 7) % 23),
    }));
    await withDepths(objects, t0);
    await runReconciler(t0 + 1_000);
    // Deeper than the run saw, and one the run never saw: both read afresh.
    await withDepths([{ key: objects[0]?.key as ObjectKey, depth: 40 }], t0 + 2_000);
    const late = { key: { tenantId: 'ten_view', resource: 'late:1' }, depth: 30 };
    await withDepths([late], t0 + 2_000);

    const answer = await deepestQueues({ queues: store, now: () => t0 + 3_000 }, 10, queuesViewTimeLeft(Date.now));

    const every = await store.readMetas(await store.scheduledObjects());
    const expected = every
      .sort((a, b) => b.meta.depth - a.meta.depth)
      .slice(0, 10)
      .map(({ meta }) => meta.depth);
    expect(answer).toMatchObject({ complete: true });
    expect(answer).not.toHaveProperty('objects_read');
    expect(answer.data.map((q) => q.depth)).toEqual(expected);
    expect(answer.data.slice(0, 2).map((q) => [q.resource, q.depth])).toEqual([
      ['obj:0', 41],
      ['late:1', 30],
    ]);
    expect(new Set(answer.data.map((q) => q.resource)).size).toBe(10);
  });
});
