/**
 * The embedded emulators with sluice's tables, started for a test file's tests, for
 * tests that drive the queue store, ingest and distributor directly.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll } from 'vitest';
import { documentClient } from '../../functions/adapters/aws.ts';
import { createTables, type Emulators, startEmulators } from '../../sandbox/emulators.ts';

export interface EventsTable {
  emulators: Emulators;
  /** A document client of the emulated DynamoDB. */
  client: DynamoDBDocumentClient;
  /** The Events table's name. */
  table: string;
  /** The Control table's name. */
  controlTable: string;
}

/** Starts the emulators before the file's tests and stops them after; the fields are set once started. */
export function withEventsTable(): EventsTable {
  const events = {} as EventsTable;
  beforeAll(async () => {
    events.emulators = await startEmulators();
    const tables = await createTables(new DynamoDBClient({ ...events.emulators.dynamo }));
    events.table = tables.Events as string;
    events.controlTable = tables.Control as string;
    events.client = documentClient(events.emulators.dynamo);
  });
  afterAll(async () => {
    await events.emulators?.stop();
  });
  return events;
}
