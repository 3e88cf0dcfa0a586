/**
 * DynamoDB answers a read that does not ask for ConsistentRead from a replica that may
 * not have the last second's writes yet; the embedded emulator always answers from the
 * table as it is. Here a client reads as AWS may: a query that is not strongly
 * consistent misses what was written within the last REPLICA_LAG_MS.
 */
import type { DynamoDBDocumentClient, QueryCommandInput } from '@aws-sdk/lib-dynamodb';
import { describe, expect, it } from 'vitest';
import { documentClient } from '../../functions/adapters/aws.ts';
import { DeliveryLog } from '../../functions/adapters/delivery-log.ts';
import { deliveryStores } from '../../functions/app/runtime.ts';
import { forgetWebhook } from '../../functions/app/webhooks.ts';
import { withEventsTable } from '../support/events-table.ts';
import { deliveryFixture } from '../support/fixtures.ts';

const RETENTION_DAYS = 7;
const REPLICA_LAG_MS = 1_000;

const tables = withEventsTable();

/**
 * Leaves out of every query that is not strongly consistent the items written within
 * `lagMs` (told by their expiry, which the records set to the retention period after the write).
 */
function staleReplica(client: DynamoDBDocumentClient, lagMs: number): void {
  client.middlewareStack.add(
    (next) => async (args) => {
      const result = await next(args);
      const input = args.input as QueryCommandInput;
      if (input.KeyConditionExpression === undefined || input.ConsistentRead === true) return result;
      const output = result.output as { Items?: Array<Record<string, unknown>>; Count?: number };
      if (!output.Items) return result;
      const writtenAt = (item: Record<string, unknown>) => Number(item.expires_at_ms ?? 0) - RETENTION_DAYS * 86_400_000;
      output.Items = output.Items.filter((item) => Date.now() - writtenAt(item) >= lagMs);
      output.Count = output.Items.length;
      return result;
    },
    { step: 'initialize', name: 'staleReplica' },
  );
}

describe('reads from a replica a second behind', () => {
  it('removes the deliveries a webhook held up to the moment it was deleted', async () => {
    const client = documentClient({ ...tables.emulators.dynamo });
    staleReplica(client, REPLICA_LAG_MS);
    const stores = deliveryStores({ client, tableName: tables.controlTable, retentionDays: RETENTION_DAYS });
    const webhookId = 'wh_replica';
    // Held while the webhook was disabled, the last of them just before its owner deleted it.
    for (let n = 1; n <= 3; n++) expect(await stores.held.hold(deliveryFixture('replica', webhookId, n), Date.now())).toBe(true);

    expect(await forgetWebhook(stores, webhookId)).toEqual({ events: 3, deliveries: 3, complete: true });

    expect(await stores.held.count(webhookId)).toBe(0);
  });

  it('replays, in a window up to now, the deliveries logged a moment ago', async () => {
    const client = documentClient({ ...tables.emulators.dynamo });
    staleReplica(client, REPLICA_LAG_MS);
    const log = new DeliveryLog({ client, tableName: tables.controlTable, retentionDays: RETENTION_DAYS });
    const webhookId = 'wh_replay_now';
    const now = Date.now();
    const delivered = deliveryFixture('replaynow', webhookId, 1);
    const attempt = {
      id: 'att_1',
      delivery_id: delivered.deliveryId,
      attempt: 1,
      status_code: 200,
      duration_ms: 5,
      error: null,
      at: new Date(now).toISOString(),
    };
    await log.add(delivered, now, attempt);

    const window = { since: now - 60_000, until: now + 1 };
    const { deliveries } = await log.logged(webhookId, window, now, { deliveries: 10, bytes: 1_000_000 });

    expect(deliveries.map((events) => events.map((e) => e.id))).toEqual([['evt_replaynow1']]);
  });
});
