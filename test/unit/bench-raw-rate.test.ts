import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawRate } from '../../bench/raw-rate.ts';
import { createTables, type Emulators, startEmulators } from '../../sandbox/emulators.ts';

describe("the ceiling's raw emulator rate", () => {
  let emulators: Emulators;
  let table: string;

  beforeAll(async () => {
    emulators = await startEmulators();
    table = (await createTables(new DynamoDBClient({ ...emulators.dynamo }))).Control as string;
  });
  afterAll(async () => {
    await emulators.stop();
  });

  it('counts the calls answered inside its window, not those still in flight when the window ends', async () => {
    // Calls keep 32 in flight: those sent before the window's end are answered after it.
    const start = Date.now() + 300;

    const n = await rawRate({ service: 'dynamodb', client: emulators.dynamo, table }, start, start, 0);

    // A window of no length holds no answer (counting them gave about 32).
    expect(n).toBe(0);
  });

  it('counts the calls of a window', async () => {
    const start = Date.now() + 200;

    const n = await rawRate({ service: 'dynamodb', client: emulators.dynamo, table }, start, start + 300, 0);

    expect(n).toBeGreaterThan(0);
  });
});
