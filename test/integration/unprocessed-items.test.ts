/**
 * DynamoDB's BatchWriteItem may leave some of its requests unprocessed (UnprocessedItems)
 * when a partition is past its throughput, and answers 200 all the same; the embedded
 * emulator never does. Here a client does what AWS may: its first batched write applies
 * only part of what it was sent and hands the rest back.
 */
import type { BatchWriteCommandInput, DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { describe, expect, it } from 'vitest';
import { documentClient } from '../../functions/adapters/aws.ts';
import { deliveryStores } from '../../functions/app/runtime.ts';
import { forgetWebhook } from '../../functions/app/webhooks.ts';
import { withEventsTable } from '../support/events-table.ts';
import { deliveryFixture } from '../support/fixtures.ts';

const tables = withEventsTable();

/**
 * Makes the first `times` batched writes apply only their first `applied` requests and
 * answer the rest as UnprocessedItems, as DynamoDB does when it throttles some of them.
 */
function processSomeOnly(client: DynamoDBDocumentClient, applied: number, times = 1): void {
  let left = times;
  client.middlewareStack.add(
    (next) => async (args) => {
      const input = args.input as BatchWriteCommandInput;
      if (left === 0 || !input.RequestItems) return next(args);
      left--;
      const [table, requests] = Object.entries(input.RequestItems)[0] as [
        string,
        NonNullable<BatchWriteCommandInput['RequestItems']>[string],
      ];
      const result = await next({ ...args, input: { ...input, RequestItems: { [table]: requests.slice(0, applied) } } });
      const rest = requests.slice(applied);
      (result.output as { UnprocessedItems?: unknown }).UnprocessedItems = rest.length > 0 ? { [table]: rest } : {};
      return result;
    },
    { step: 'initialize', name: 'processSomeOnly' },
  );
}

describe('a batched write DynamoDB only partly processes', () => {
  it('removes every held delivery and overflow count of a deleted webhook, retrying what DynamoDB left unprocessed', async () => {
    const client = documentClient({ ...tables.emulators.dynamo });
    const stores = deliveryStores({ client, tableName: tables.controlTable, retentionDays: 7 });
    const webhookId = 'wh_unprocessed';
    for (let n = 1; n <= 30; n++) expect(await stores.held.hold(deliveryFixture('unprocessed', webhookId, n), Date.now())).toBe(true);
    await stores.gaps.count(webhookId, 'task:1', 5, Date.now());
    expect(await stores.held.count(webhookId)).toBe(30);

    processSomeOnly(client, 10, 2);
    expect(await forgetWebhook(stores, webhookId)).toEqual({ events: 30, deliveries: 30, complete: true });

    expect(await stores.held.count(webhookId)).toBe(0);
    expect(await stores.gaps.owed(webhookId, Date.now())).toEqual([]);
  });
});
