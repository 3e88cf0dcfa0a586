/**
 * The embedded emulators with sluice's tables, started for a test file's tests (or for
 * each test), for tests that drive the queue store, ingest, distributor and reconciler
 * directly.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';
import { documentClient, sqsClient } from '../../functions/adapters/aws.ts';
import { DISTRIBUTE_QUEUE } from '../../functions/definitions/queues.ts';
import { createQueues, createTables, type Emulators, startEmulators } from '../../sandbox/emulators.ts';

export interface EventsTable {
  emulators: Emulators;
  /** A document client of the emulated DynamoDB. */
  client: DynamoDBDocumentClient;
  /** The Events table's name. */
  table: string;
  /** The Control table's name. */
  controlTable: string;
}

/** Starts the emulators with the tables, setting `events`'s fields. */
async function startInto(events: EventsTable): Promise<void> {
  events.emulators = await startEmulators();
  const tables = await createTables(new DynamoDBClient({ ...events.emulators.dynamo }));
  events.table = tables.Events as string;
  events.controlTable = tables.Control as string;
  events.client = documentClient(events.emulators.dynamo);
}

/** Starts the emulators before the file's tests and stops them after; the fields are set once started. */
export function withEventsTable(): EventsTable {
  const events = {} as EventsTable;
  beforeAll(() => startInto(events));
  afterAll(async () => {
    await events.emulators?.stop();
  });
  return events;
}

/** The emulators with the tables and the distribute queue (`distributeQueueUrl`). */
export interface EventsAndDoorbells extends EventsTable {
  distributeQueueUrl: string;
}

/**
 * Emulators of their own for each test of the file, with the tables and the distribute
 * queue, stopped after it: for tests of what reads the whole `by_schedule` index (the
 * reconciler, the view of the deepest queues), where one test's objects must not be
 * the next one's. The fields are set before each test.
 */
export function withEmulatorsPerTest(): EventsAndDoorbells {
  const events = {} as EventsAndDoorbells;
  beforeEach(async () => {
    await startInto(events);
    const queues = await createQueues(sqsClient(events.emulators.sqs));
    events.distributeQueueUrl = queues[DISTRIBUTE_QUEUE.logicalName]?.url as string;
  }, 60_000);
  afterEach(async () => {
    await events.emulators?.stop();
  });
  return events;
}
