/**
 * A stream that expired (its consumer stopped polling) costs the distributor nothing
 * more than a resource that never had one, though its item stays until DynamoDB's TTL
 * deletes it (days later; never in the sandbox).
 */
import { UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { account, newCounts } from '../../bench/accounting.ts';
import { type Sandbox, startSandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook, publish } from '../support/api.ts';
import { type Receiver, startReceiver } from '../support/receiver.ts';

let sandbox: Sandbox;
let receiver: Receiver;
let tenant: { id: string; key: string };
const counts = newCounts();

beforeAll(async () => {
  receiver = await startReceiver();
  sandbox = await startSandbox({ port: 0, canary: false, onCall: (c) => account(counts, c) });
  tenant = await createTenant(sandbox, 'expired-stream');
});

afterAll(async () => {
  await sandbox?.stop();
  await receiver?.close();
});

const streamReads = () => counts.dynamoTargets['GetItem stream/stream'] ?? 0;

/** Stream lookups made by 20 turns of a child of `parent`, each delivered before the next. */
async function lookupsOfTwentyTurns(parent: string, path: string): Promise<number> {
  await createWebhook(sandbox, tenant.key, { resource: parent, url: `${receiver.url}${path}` });
  const child = `${parent}-kid:1`;
  await publish(sandbox, tenant.key, [{ resource: child, parents: [parent], type: 'k.x', data: 0 }]);
  await receiver.waitFor(() => receiver.acceptedEvents(path).length === 1);
  const before = streamReads();
  for (let i = 0; i < 20; i++) {
    await publish(sandbox, tenant.key, [{ resource: child, parents: [parent], type: 'k.x', data: i + 1 }]);
    await receiver.waitFor(() => receiver.acceptedEvents(path).length === i + 2);
  }
  return streamReads() - before;
}

describe('an expired stream', () => {
  it('is not looked up again on every turn of its resource and its children', async () => {
    const never = await lookupsOfTwentyTurns('never', '/never');
    expect((await call(sandbox, 'GET', '/v1/events?resource=left', { key: tenant.key })).status).toBe(412);
    // Its consumer stopped polling: the stream's expiry passes.
    await sandbox.wiring.dynamo.send(
      new UpdateCommand({
        TableName: sandbox.wiring.controlTable,
        Key: { pk: `stream#${tenant.id}#left`, sk: 'stream' },
        UpdateExpression: 'SET expires_at_ms = :past',
        ExpressionAttributeValues: { ':past': Date.now() - 1_000 },
      }),
    );
    const expired = await lookupsOfTwentyTurns('left', '/left');
    expect(expired).toBeLessThanOrEqual(never + 1);
  }, 60_000);
});
