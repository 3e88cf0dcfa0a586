/**
 * The reconciler after a mass loss of doorbells, against the embedded DynamoDB and
 * SQS with the real doorbell: it rings many stuck objects together, so that their
 * rings share SendMessageBatch requests, and within its time budget.
 */

import { GetQueueAttributesCommand } from '@aws-sdk/client-sqs';
import { UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { beforeEach, describe, expect, it } from 'vitest';
import { instrument, newCounts } from '../../bench/accounting.ts';
import { documentClient, sqsClient } from '../../functions/adapters/aws.ts';
import { Doorbell } from '../../functions/adapters/doorbell.ts';
import { QueueStore } from '../../functions/adapters/queue-store.ts';
import { type ReconcilerDeps, RING_MARGIN_MS, reconcile } from '../../functions/app/reconciler.ts';
import { buildConfig } from '../../functions/core/config.ts';
import type { ObjectKey } from '../../functions/core/model.ts';
import { NO_LOGS } from '../../functions/core/telemetry.ts';
import type { Emulators } from '../../sandbox/emulators.ts';
import { withEmulatorsPerTest } from '../support/events-table.ts';

const STUCK = 400;

// Emulators of its own for each test: the objects one leaves stuck are not the next one's.
const each = withEmulatorsPerTest();
let store: QueueStore;

beforeEach(() => {
  store = new QueueStore({ client: each.client, tableName: each.table, retentionDays: 7 });
});

/** Doorbells waiting in the distribute queue. */
async function doorbellsQueued(): Promise<number> {
  const { Attributes } = await sqsClient(each.emulators.sqs).send(
    new GetQueueAttributesCommand({ QueueUrl: each.distributeQueueUrl, AttributeNames: ['ApproximateNumberOfMessages'] }),
  );
  return Number(Attributes?.ApproximateNumberOfMessages);
}

/** `count` objects, each with one slot reserved at `at` and never rung: their ingest died before its ring. */
async function stuckObjects(count: number, at: number): Promise<ObjectKey[]> {
  const keys = Array.from({ length: count }, (_, i) => ({ tenantId: 'ten_stuck', resource: `obj:${i}` }));
  const limits = { cap: 100, ratePerSecond: 1e6, burst: 1e6 };
  for (let i = 0; i < keys.length; i += 25) {
    await Promise.all(
      keys.slice(i, i + 25).map(async (k) => {
        if (!(await store.reserve(k, 1, limits, at, false))) throw new Error('reservation refused');
      }),
    );
  }
  return keys;
}

/** A queue store on the emulator that tells `onShards` which shard of the index each page read of it reads. */
function shardReads(on: Emulators, tableName: string, onShards: (shards: readonly number[]) => void): QueueStore {
  return new (class extends QueueStore {
    override async *listedPages(shard: number, pageSize?: number, tenantId?: string) {
      for await (const page of super.listedPages(shard, pageSize, tenantId)) {
        onShards([shard]);
        yield page;
      }
    }
  })({ client: documentClient(on.dynamo), tableName, retentionDays: 7 });
}

/** The doorbell, telling `onRing` of each object it rings. */
function ringing(doorbell: Doorbell, onRing: (key: ObjectKey) => void): Pick<Doorbell, 'ring'> {
  return {
    ring: async (key: ObjectKey, ...rest: unknown[]) => {
      onRing(key);
      await doorbell.ring(key, ...(rest as [string]));
    },
  };
}

/** A reconciler with the real doorbell on the distribute queue, its SQS calls counted. */
function reconcilerAt(now: number, overrides: Partial<ReconcilerDeps> = {}) {
  const counts = newCounts();
  const sqs = sqsClient(each.emulators.sqs);
  instrument(counts, sqs, 'sqs');
  const metrics = new Map<string, number>();
  const deps: ReconcilerDeps = {
    queues: store,
    doorbell: new Doorbell({ client: sqs, queueUrl: each.distributeQueueUrl }),
    switches: { list: async () => [] },
    config: buildConfig(),
    metrics: { count: (name, value = 1) => void metrics.set(name, value) },
    logger: NO_LOGS,
    now: () => now,
    ...overrides,
  };
  const batches = () => counts.calls.sqs?.SendMessageBatchCommand ?? 0;
  return { deps, metrics, batches };
}

describe('reconciler after a mass loss of doorbells', () => {
  it(`rings ${STUCK} stuck objects together, so that their rings share SendMessageBatch requests`, async () => {
    const t0 = Date.now();
    // Reserved 100 s ago and never rung: stuck (stuckAfterMs is 90 s).
    await stuckObjects(STUCK, t0 - 100_000);
    const { deps, metrics, batches } = reconcilerAt(t0);

    const report = await reconcile(deps);

    expect(report.rerung).toBe(STUCK);
    expect(metrics.get('StuckObjectsRerung')).toBe(STUCK);
    expect(await doorbellsQueued()).toBe(STUCK);
    // Up to 10 rings a request: one at a time, each ring was a request of its own (400).
    expect(batches()).toBeLessThanOrEqual(STUCK / 4);
  });

  it('stops ringing when the run has only the time to report left, reports, and the next run rings the rest', async () => {
    const t0 = Date.now();
    await stuckObjects(STUCK, t0 - 100_000);
    // The run's time runs out after its first 100 rings.
    let rings = 0;
    const doorbell = new Doorbell({ client: sqsClient(each.emulators.sqs), queueUrl: each.distributeQueueUrl });
    const { deps, metrics } = reconcilerAt(t0, {
      doorbell: {
        ring: (...args: Parameters<Doorbell['ring']>) => {
          rings++;
          return doorbell.ring(...args);
        },
      },
      timeLeftMs: () => (rings < 100 ? 60_000 : RING_MARGIN_MS - 1),
    });

    const first = await reconcile(deps);

    expect(first.rerung).toBeGreaterThanOrEqual(100);
    expect(first.rerung).toBeLessThan(STUCK);
    expect(metrics.get('ScheduledObjects')).toBe(STUCK);
    expect(metrics.get('StuckObjectsRerung')).toBe(first.rerung);
    expect(await doorbellsQueued()).toBe(first.rerung);
    // A minute later, the next run (with time) rings the others; a ring of one already
    // rung carries the same token, and SQS keeps one message of the two.
    await reconcile(reconcilerAt(t0 + 60_000).deps);
    expect(await doorbellsQueued()).toBe(STUCK);
  });

  it('rings in each run what the runs before had no time for, however many runs that takes', async () => {
    const t0 = Date.now();
    await stuckObjects(STUCK, t0);
    // The distributor is healthy (only the doorbells were lost): a rung object has its turn and drains.
    const rung = new Set<string>();
    const queues = new Proxy(store, {
      get: (target, name) =>
        name === 'readMetas'
          ? async (...args: Parameters<QueueStore['readMetas']>) =>
              (await target.readMetas(...args)).filter(({ key }) => !rung.has(key.resource))
          : Reflect.get(target, name, target).bind(target),
    });
    const doorbell = new Doorbell({ client: sqsClient(each.emulators.sqs), queueUrl: each.distributeQueueUrl });
    const ringsPerRun: number[] = [];
    // Runs a minute apart from 100 s after the loss (stuckAfterMs is 90 s), each with time for 80 rings.
    for (let run = 0; run < 6; run++) {
      let rings = 0;
      const { deps } = reconcilerAt(t0 + 100_000 + run * 60_000, {
        queues,
        doorbell: ringing(doorbell, (key) => {
          rings++;
          rung.add(key.resource);
        }),
        timeLeftMs: () => (rings < 80 ? 60_000 : RING_MARGIN_MS - 1),
      });
      await reconcile(deps);
      ringsPerRun.push(rings);
    }

    // Five runs ring all 400: the fourth and fifth found their rings no longer within
    // a lookback of the run before, and rang nothing until the 6-minute spacing.
    expect(ringsPerRun).toEqual([80, 80, 80, 80, 80, 0]);
    expect(await doorbellsQueued()).toBe(STUCK);
  });

  it('reads no more of a large index than leaves it time to ring, and the next runs read on: a run whose reads outlasted it rang nothing, ever', async () => {
    const t0 = Date.now();
    await stuckObjects(STUCK, t0 - 100_000);
    // Each read of the index or of meta items takes 3 s of a run's 60: as with some
    // 460,000 objects listed in AWS, where README measures 13 s a run for 100,000, the
    // reads of the whole index (16 queries and 4 batches, 60 s) would leave none to ring.
    let spent = 0;
    const slow = documentClient(each.emulators.dynamo);
    slow.middlewareStack.add(
      (next) => async (args) => {
        const input = args.input as { IndexName?: string; RequestItems?: unknown };
        if (input.IndexName !== undefined || input.RequestItems !== undefined) spent += 3_000;
        return next(args);
      },
      { step: 'initialize' },
    );
    const queues = new QueueStore({ client: slow, tableName: each.table, retentionDays: 7 });
    const doorbell = new Doorbell({ client: sqsClient(each.emulators.sqs), queueUrl: each.distributeQueueUrl });
    const rung = new Set<string>();
    const ringsPerRun: number[] = [];
    // Runs a minute apart, each with its 60 s.
    for (let run = 0; run < 16; run++) {
      spent = 0;
      let rings = 0;
      const { deps } = reconcilerAt(t0 + run * 60_000, {
        queues,
        doorbell: ringing(doorbell, (key) => {
          rings++;
          rung.add(key.resource);
        }),
        timeLeftMs: () => 60_000 - spent,
      });
      await reconcile(deps).catch(() => undefined);
      ringsPerRun.push(rings);
    }

    // The first run rings what it read; those after it read on from a shard further on
    // (and ring again what falls due at its next spacing), until every one is rung.
    expect(ringsPerRun[0]).toBeGreaterThan(0);
    expect(ringsPerRun[0]).toBeLessThan(STUCK);
    expect(rung.size).toBe(STUCK);
  });

  it('stops reading a shard that lists more than its time allows, a page at a time, and rings what it read', async () => {
    // A flood of new objects lists millions, a shard more than one run reads in its time:
    // here 400 stuck objects (some 25 a shard) read 5 keys a page, the run's reading time
    // up after its first page. Reading whole shards, the run read all of the first
    // shard's before it looked at its time, as one of millions it would past its timeout.
    const t0 = Date.now();
    await stuckObjects(STUCK, t0 - 100_000);
    let pages = 0;
    const queues = shardReads(each.emulators, each.table, () => {
      pages++;
    });
    const { deps } = reconcilerAt(t0, { queues, listedPageSize: 5, timeLeftMs: () => (pages === 0 ? 60_000 : RING_MARGIN_MS * 2) });

    const report = await reconcile(deps);

    expect(pages).toBe(1);
    expect(report.rerung).toBe(5);
  });

  it('starts its runs at every shard in turn when its interval is under a minute, which AWS runs once a minute (README)', async () => {
    // A run with the time to read one shard only, as with a large index. At a 30 s
    // interval, runs a minute apart (EventBridge's least rate) started two shards on from
    // the one before, and a shard that never came first was never read.
    const t0 = 1_000 * 60_000;
    const config = buildConfig({ reconcileIntervalSeconds: 30 });
    const read = new Set<number>();
    for (let run = 0; run < 16; run++) {
      let spent = 0;
      const queues = shardReads(each.emulators, each.table, (shards) => {
        for (const shard of shards) read.add(shard);
        spent = 60_000;
      });
      const { deps } = reconcilerAt(t0 + run * 60_000, { config, queues, timeLeftMs: () => 60_000 - spent });
      await reconcile(deps);
    }

    expect([...read].sort((a, b) => a - b)).toEqual(Array.from({ length: 16 }, (_, shard) => shard));
  });

  it('rings at the first run after an outage of its schedule an object whose spacing fell due meanwhile, not at its next one', async () => {
    const t0 = Date.now();
    await stuckObjects(1, t0);
    // Rung at 100 s and 4 minutes (its 90 s and 3-minute spacings); then no run for 25 minutes.
    expect((await reconcile(reconcilerAt(t0 + 100_000).deps)).rerung).toBe(1);
    expect((await reconcile(reconcilerAt(t0 + 240_000).deps)).rerung).toBe(1);

    // Back at 29 minutes: its 6, 12 and 24-minute spacings fell due in the outage, its next is at 48.
    const back = await reconcile(reconcilerAt(t0 + 29 * 60_000).deps);

    expect(back.rerung).toBe(1);
    // The run after rings it no more until that next spacing.
    expect((await reconcile(reconcilerAt(t0 + 30 * 60_000).deps)).rerung).toBe(0);
  });

  it('fails a run that DynamoDB left objects unread, without reporting that no object is near its cap (the unread one may be)', async () => {
    const t0 = Date.now();
    // A hot object at 9 of its cap of 10, and three others.
    const hot = { tenantId: 'ten_hot', resource: 'obj:hot' };
    await store.reserve(hot, 9, { cap: 10, ratePerSecond: 1e6, burst: 1e6 }, t0, false);
    await stuckObjects(3, t0);
    // DynamoDB throttles the reads of the hot object's partition: its key comes back unprocessed every time.
    const hotPk = `${hot.tenantId}#${hot.resource}`;
    const throttled = documentClient(each.emulators.dynamo);
    throttled.middlewareStack.add(
      (next) => async (args) => {
        const request = (args.input as { RequestItems?: Record<string, { Keys: Array<{ pk: unknown }> }> }).RequestItems?.[each.table];
        if (!request) return next(args);
        const isHot = (k: { pk: unknown }) => k.pk === hotPk || (k.pk as { S?: string } | undefined)?.S === hotPk;
        const left = request.Keys.filter(isHot);
        const rest = request.Keys.filter((k) => !isHot(k));
        if (rest.length === 0) {
          return {
            response: {},
            output: { Responses: { [each.table]: [] }, UnprocessedKeys: { [each.table]: request }, $metadata: {} },
          } as never;
        }
        const result = (await next({ ...args, input: { ...args.input, RequestItems: { [each.table]: { ...request, Keys: rest } } } })) as {
          output: { UnprocessedKeys?: Record<string, unknown> };
        };
        if (left.length > 0) result.output.UnprocessedKeys = { [each.table]: { ...request, Keys: left } };
        return result as never;
      },
      { step: 'initialize', name: 'throttleHotReads' },
    );
    const errors: string[] = [];
    const config = buildConfig({ objectQueueCap: 10 });
    const { deps, metrics } = reconcilerAt(t0, {
      queues: new QueueStore({ client: throttled, tableName: each.table, retentionDays: 7 }),
      config,
      logger: { ...NO_LOGS, error: (message) => void errors.push(message) },
    });

    await expect(reconcile(deps)).rejects.toThrow(/1 of 4 listed objects could not be reconciled/);

    expect(errors).toEqual([expect.stringMatching(/left unread/)]);
    // The heartbeat, of what it read; not "no object near its cap", which would clear the alarm.
    expect(metrics.get('ScheduledObjects')).toBe(3);
    expect(metrics.has('ObjectsNearCap')).toBe(false);
    expect(metrics.has('MaxObjectDepth')).toBe(false);
    // A run that reads every object reports the hot one.
    const unthrottled = reconcilerAt(t0, { config });
    await reconcile(unthrottled.deps);
    expect(unthrottled.metrics.get('ObjectsNearCap')).toBe(1);
    expect(unthrottled.metrics.get('MaxObjectDepth')).toBe(9);
    throttled.destroy();
  });

  it('reports the whole index from runs that each read one shard, and clears object-queue-near-cap once a near-cap object drained', async () => {
    const t0 = 1_000 * 60_000;
    const hot = { tenantId: 'ten_hot', resource: 'obj:hot' };
    await store.reserve(hot, 9, { cap: 10, ratePerSecond: 1e6, burst: 1e6 }, t0, false);
    const config = buildConfig({ objectQueueCap: 10 });
    const reports: Array<{ nearCap: number | undefined; maxDepth: number | undefined }> = [];
    for (let run = 0; run < 34; run++) {
      if (run === 17) {
        // Drained: its meta item now says depth 0.
        await documentClient(each.emulators.dynamo).send(
          new UpdateCommand({
            TableName: each.table,
            Key: { pk: 'ten_hot#obj:hot', sk: 'meta' },
            UpdateExpression: 'SET #d = :z',
            ExpressionAttributeNames: { '#d': 'depth' },
            ExpressionAttributeValues: { ':z': 0 },
          }),
        );
      }
      // Time for one shard a run: the index is too large for more.
      let spent = 0;
      const queues = shardReads(each.emulators, each.table, () => {
        spent = 60_000;
      });
      const { deps, metrics } = reconcilerAt(t0 + run * 60_000, { config, queues, timeLeftMs: () => 60_000 - spent });
      await reconcile(deps);
      reports.push({ nearCap: metrics.get('ObjectsNearCap'), maxDepth: metrics.get('MaxObjectDepth') });
    }
    // Until every shard has been read once, only the run that read the hot object's shard reports it.
    expect(reports.slice(0, 15).every((r) => r.maxDepth === undefined)).toBe(true);
    expect(reports.slice(0, 15).filter((r) => r.nearCap === 1)).toHaveLength(1);
    // Then every run reports the whole index: the hot object, until a run reads its shard drained.
    expect(reports[15]).toEqual({ nearCap: 1, maxDepth: 9 });
    expect(reports[16]).toEqual({ nearCap: 1, maxDepth: 9 });
    expect(reports.slice(-2)).toEqual([
      { nearCap: 0, maxDepth: 0 },
      { nearCap: 0, maxDepth: 0 },
    ]);
  });
});
