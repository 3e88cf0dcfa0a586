/**
 * What the stream tests drive by hand, on emulators of their own: the stores, and an
 * ingest and a distributor on a test's clock with nothing else wired (no deliveries,
 * doorbells or switches), so that a test decides when each turn runs.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll } from 'vitest';
import { documentClient } from '../../functions/adapters/aws.ts';
import { IdempotencyStore } from '../../functions/adapters/idempotency-store.ts';
import { QueueStore } from '../../functions/adapters/queue-store.ts';
import { StreamStore } from '../../functions/adapters/stream-store.ts';
import { NO_SWITCHES } from '../../functions/adapters/switch-store.ts';
import { Distributor, type DistributorDeps } from '../../functions/app/distributor.ts';
import type { IngestDeps } from '../../functions/app/ingest.ts';
import { buildConfig } from '../../functions/core/config.ts';
import { NO_LOGS, NO_METRICS } from '../../functions/core/telemetry.ts';
import { createTables, type Emulators, startEmulators } from '../../sandbox/emulators.ts';

export interface StreamRig {
  emulators: Emulators;
  client: ReturnType<typeof documentClient>;
  control: string;
  events: string;
  queues: QueueStore;
  streams: StreamStore;
  idempotency: IdempotencyStore;
}

/** The rig of a test file: started before its tests, stopped after them. */
export function streamRig(): StreamRig {
  const rig = {} as StreamRig;
  beforeAll(async () => {
    rig.emulators = await startEmulators();
    const tables = await createTables(new DynamoDBClient({ ...rig.emulators.dynamo }));
    rig.client = documentClient(rig.emulators.dynamo);
    rig.control = tables.Control as string;
    rig.events = tables.Events as string;
    rig.queues = new QueueStore({ client: rig.client, tableName: rig.events, retentionDays: 7 });
    rig.streams = new StreamStore({ client: rig.client, controlTable: rig.control, eventsTable: rig.events, retentionDays: 7 });
    rig.idempotency = new IdempotencyStore({ client: rig.client, tableName: rig.events, retentionDays: 7, ingestGraceMs: 60_000 });
  });
  afterAll(async () => {
    await rig.emulators?.stop();
  });
  return rig;
}

/** The API's ingest on the test's clock, naming each event it accepts with `newEventId`. */
export function ingestAt(rig: StreamRig, now: () => number, newEventId: () => string): IngestDeps {
  return {
    queues: rig.queues,
    idempotency: rig.idempotency,
    doorbell: { ring: async () => undefined },
    config: buildConfig({}),
    metrics: NO_METRICS,
    logger: NO_LOGS,
    now,
    newEventId,
  };
}

/** A distributor on the test's clock that appends to the rig's streams, with `deps` in place of any of its parts. */
export function distributorAt(rig: StreamRig, now: () => number, deps: Partial<DistributorDeps> = {}): Distributor {
  return new Distributor({
    queues: rig.queues,
    switches: NO_SWITCHES,
    subscriptions: { onResource: async () => [] },
    deliveries: { send: async () => undefined },
    doorbell: { ring: async () => undefined },
    streams: rig.streams,
    config: buildConfig({}),
    metrics: NO_METRICS,
    logger: NO_LOGS,
    now,
    sleep: async () => undefined,
    ...deps,
  });
}
