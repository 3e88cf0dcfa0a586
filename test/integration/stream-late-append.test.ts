/**
 * A stream entry's position is the time the distributor stamped it, and a reader
 * serves positions up to 2 s before its own clock (SPEC §3 Event streams). An append
 * that lands later than that (throttled batches retried, a stalled container) could
 * sit behind a token a reader already holds: the distributor writes it again at a
 * fresh position, so the stream still serves every event.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { documentClient } from '../../functions/adapters/aws.ts';
import { IdempotencyStore } from '../../functions/adapters/idempotency-store.ts';
import { QueueStore } from '../../functions/adapters/queue-store.ts';
import { StreamStore } from '../../functions/adapters/stream-store.ts';
import { NO_SWITCHES } from '../../functions/adapters/switch-store.ts';
import { Distributor } from '../../functions/app/distributor.ts';
import { publish } from '../../functions/app/ingest.ts';
import { pollStream, STREAM_SETTLE_MS, type StreamDeps } from '../../functions/app/streams.ts';
import { buildConfig } from '../../functions/core/config.ts';
import type { DeliveredEvent } from '../../functions/core/model.ts';
import { NO_LOGS } from '../../functions/core/telemetry.ts';
import { createTables, type Emulators, startEmulators } from '../../sandbox/emulators.ts';

let emulators: Emulators;
let queues: QueueStore;
let streams: StreamStore;
let idempotency: IdempotencyStore;

beforeAll(async () => {
  emulators = await startEmulators();
  const tables = await createTables(new DynamoDBClient({ ...emulators.dynamo }));
  const client = documentClient(emulators.dynamo);
  queues = new QueueStore({ client, tableName: tables.Events as string, retentionDays: 7 });
  streams = new StreamStore({ client, controlTable: tables.Control as string, eventsTable: tables.Events as string, retentionDays: 7 });
  idempotency = new IdempotencyStore({ client, tableName: tables.Events as string, retentionDays: 7, ingestGraceMs: 60_000 });
});

afterAll(async () => {
  await emulators?.stop();
});

describe('a stream append that lands late', () => {
  it('is written again at a fresh position, so a reader that moved past the first one still gets every event', async () => {
    let clock = Date.now();
    const now = () => clock;
    const k = { tenantId: 'ten_late', resource: 'doc:1' };
    const reader: StreamDeps = { streams, retentionDays: 7, now };
    const poll = async (token: string | undefined) => {
      const page = await pollStream(reader, k.tenantId, k.resource, token);
      return page;
    };
    // A consumer starts the stream, then two events are accepted on its resource.
    const start = await poll(undefined);
    let token = start.sync;
    let id = 0;
    await publish(
      {
        queues,
        idempotency,
        doorbell: { ring: async () => undefined },
        config: buildConfig({}),
        metrics: { count: () => undefined },
        logger: NO_LOGS,
        now,
        newEventId: () => `evt_late${++id}`,
      } as unknown as Parameters<typeof publish>[0],
      k.tenantId,
      [1, 2].map((n) => ({ resource: k.resource, parents: [], type: 'a.b', data: { n }, idempotencyKey: undefined })),
    );

    // The first append is slow: before it lands, the consumer polls past its position.
    const counted: string[] = [];
    let appends = 0;
    const distributor = new Distributor({
      queues,
      switches: NO_SWITCHES,
      subscriptions: { onResource: async () => [] },
      deliveries: { send: async () => undefined },
      doorbell: { ring: async () => undefined },
      streams: {
        active: (tenantId, resource, at) => streams.active(tenantId, resource, at),
        append: async (tenantId, resource, entries, at) => {
          if (++appends === 1) {
            clock += STREAM_SETTLE_MS + 500;
            const passed = await poll(token);
            expect(passed).toMatchObject({ status: 200, data: [] });
            token = passed.sync;
          }
          await streams.append(tenantId, resource, entries, at);
        },
      },
      config: buildConfig({}),
      metrics: { count: (name) => void counted.push(name) },
      logger: NO_LOGS,
      now,
      sleep: async () => undefined,
    });
    expect(await distributor.runTurn(k, 'w')).toMatchObject({ outcome: 'idle', distributed: 2 });
    expect(appends).toBe(2);
    expect(counted).toContain('StreamAppendsLate');

    // Once the fresh copy has settled, the consumer's next page has both events.
    clock += STREAM_SETTLE_MS + 1;
    const page = await poll(token);
    expect(page.status).toBe(200);
    const events = (page as { data: DeliveredEvent[] }).data;
    expect(events.map((e) => [e.seq, e.data])).toEqual([
      [1, { n: 1 }],
      [2, { n: 2 }],
    ]);
  });
});
