/**
 * A sync token stays valid for the whole retention period (SPEC §3 Event streams):
 * a consumer that polls once and comes back just under 7 days later still gets
 * everything that happened since, and one day later the token and the stream are
 * gone (412 with a fresh token).
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
import { pollStream, type StreamDeps } from '../../functions/app/streams.ts';
import { buildConfig } from '../../functions/core/config.ts';
import { NO_LOGS } from '../../functions/core/telemetry.ts';
import { createTables, type Emulators, startEmulators } from '../../sandbox/emulators.ts';

const DAY = 86_400_000;
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

describe('a sync token', () => {
  it('is valid for the whole retention period after it was issued, and refused after the stream expired', async () => {
    let clock = Date.now();
    const now = () => clock;
    const k = { tenantId: 'ten_week', resource: 'doc:week' };
    const reader: StreamDeps = { streams, retentionDays: 7, now };
    const start = await pollStream(reader, k.tenantId, k.resource, undefined);
    expect(start.status).toBe(412);

    // An event a little later, distributed at once.
    clock += 10_000;
    await publish(
      {
        queues,
        idempotency,
        doorbell: { ring: async () => undefined },
        config: buildConfig({}),
        metrics: { count: () => undefined },
        logger: NO_LOGS,
        now,
        newEventId: () => 'evt_week1',
      } as unknown as Parameters<typeof publish>[0],
      k.tenantId,
      [{ resource: k.resource, parents: [], type: 'a.b', data: 1, idempotencyKey: undefined }],
    );
    const distributor = new Distributor({
      queues,
      switches: NO_SWITCHES,
      subscriptions: { onResource: async () => [] },
      deliveries: { send: async () => undefined },
      doorbell: { ring: async () => undefined },
      streams,
      config: buildConfig({}),
      metrics: { count: () => undefined },
      logger: NO_LOGS,
      now,
      sleep: async () => undefined,
    });
    expect(await distributor.runTurn(k, 'w')).toMatchObject({ distributed: 1 });

    // Polled 1.5 s later, the event is still settling: not served yet.
    clock += 1_500;
    const early = await pollStream(reader, k.tenantId, k.resource, start.sync);
    expect(early).toMatchObject({ status: 200, data: [] });

    // Seven days after that token was issued, less a second: still valid, and the event is there.
    clock += 7 * DAY - 1_000;
    const late = await pollStream(reader, k.tenantId, k.resource, early.sync);
    expect(late).toMatchObject({ status: 200, data: [{ id: 'evt_week1', seq: 1 }], has_more: false });

    // Nobody polls for another seven days: the stream expired, and its last token with it.
    clock += 7 * DAY + 1;
    expect((await pollStream(reader, k.tenantId, k.resource, late.sync)).status).toBe(412);
  });
});
