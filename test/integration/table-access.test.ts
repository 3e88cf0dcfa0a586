/**
 * The functions' DynamoDB grants (functions/definitions/tables.ts TABLE_ACCESS), which
 * the stack narrows to what each function's code calls: the sandbox refuses anything
 * else a function sends, as IAM would, and the pipeline runs end to end within them.
 */
import {
  BatchGetCommand,
  BatchWriteCommand,
  DeleteCommand,
  GetCommand,
  PutCommand,
  QueryCommand,
  UpdateCommand,
} from '@aws-sdk/lib-dynamodb';
import { describe, expect, it } from 'vitest';
import { STREAM_SETTLE_MS } from '../../functions/core/stream-token.ts';
import type { ObservedCall } from '../../sandbox/observe.ts';
import { type Sandbox, startSandbox } from '../../sandbox/sandbox.ts';
import { runningAs } from '../../sandbox/table-access.ts';
import { call, createTenant, createWebhook, publish } from '../support/api.ts';
import { type Receiver, startReceiver } from '../support/receiver.ts';

const refused: ObservedCall[] = [];
let sandbox: Sandbox;
let receiver: Receiver;

async function withSandbox<T>(run: () => Promise<T>): Promise<T> {
  [sandbox, receiver] = await Promise.all([
    startSandbox({
      port: 0,
      config: { switchCacheMs: 500, canaryIntervalSeconds: 1 },
      onCall: (observed) => {
        if (observed.errorName === 'AccessDeniedException') refused.push(observed);
      },
    }),
    startReceiver(),
  ]);
  try {
    return await run();
  } finally {
    await sandbox.stop();
    await receiver.close();
  }
}

describe('table access in the sandbox', () => {
  it('refuses a call the function’s role does not allow, and runs the pipeline within the grants', async () => {
    await withSandbox(async () => {
      const { dynamo, eventsTable, controlTable } = sandbox.wiring;
      // The reconciler never writes a whole item, the delivery function never batch-writes,
      // and nothing batch-reads the control table.
      await expect(
        runningAs('reconciler', () => dynamo.send(new PutCommand({ TableName: eventsTable, Item: { pk: 'x', sk: 'y' } }))),
      ).rejects.toThrow(/reconciler function may not call dynamodb:PutItem on the events table/);
      await expect(
        runningAs('delivery', () =>
          dynamo.send(new BatchWriteCommand({ RequestItems: { [controlTable]: [{ DeleteRequest: { Key: { pk: 'x', sk: 'y' } } }] } })),
        ),
      ).rejects.toThrow(/delivery function may not call dynamodb:BatchWriteItem on the control table/);
      await expect(
        runningAs('distributor', () =>
          dynamo.send(new BatchGetCommand({ RequestItems: { [eventsTable]: { Keys: [{ pk: 'x', sk: 'y' }] } } })),
        ),
      ).rejects.toThrow(/distributor function may not call dynamodb:BatchGetItem on the events table/);
      // The delivery function reaches only its own partitions of the control table: it
      // could otherwise write a tenant's API key item, or read the canary's secret.
      await expect(
        runningAs('delivery', () =>
          dynamo.send(new PutCommand({ TableName: controlTable, Item: { pk: 'apikey#0123', sk: 'key', tenant_id: 'ten_x' } })),
        ),
      ).rejects.toThrow(/delivery function may not reach the partition apikey#0123 of the control table/);
      await expect(
        runningAs('delivery', () => dynamo.send(new GetCommand({ TableName: controlTable, Key: { pk: 'canary', sk: 'canary' } }))),
      ).rejects.toThrow(/delivery function may not reach the partition canary of the control table/);
      await expect(
        runningAs('delivery', () =>
          dynamo.send(
            new QueryCommand({
              TableName: controlTable,
              KeyConditionExpression: '#pk = :pk',
              ExpressionAttributeNames: { '#pk': 'pk' },
              ExpressionAttributeValues: { ':pk': 'stream#ten_x#task:1' },
            }),
          ),
        ),
      ).rejects.toThrow(/delivery function may not reach the partition stream#ten_x#task:1 of the control table/);
      // Of a tenant's partition it reads webhooks and updates their state: it can neither
      // replace nor delete an item there (the tenant's, a webhook); the switches it only reads.
      await expect(
        runningAs('delivery', () => dynamo.send(new PutCommand({ TableName: controlTable, Item: { pk: 'tenant#ten_x', sk: 'tenant' } }))),
      ).rejects.toThrow(/delivery function may not reach the partition tenant#ten_x of the control table/);
      await expect(
        runningAs('delivery', () =>
          dynamo.send(new DeleteCommand({ TableName: controlTable, Key: { pk: 'tenant#ten_x', sk: 'webhook#wh_x' } })),
        ),
      ).rejects.toThrow(/delivery function may not reach the partition tenant#ten_x of the control table/);
      await expect(
        runningAs('delivery', () =>
          dynamo.send(
            new UpdateCommand({
              TableName: controlTable,
              Key: { pk: 'switches', sk: 'sw_x' },
              UpdateExpression: 'SET lifted_at = :now',
              ExpressionAttributeValues: { ':now': 1 },
            }),
          ),
        ),
      ).rejects.toThrow(/delivery function may not reach the partition switches of the control table/);
      // What it does call there is allowed (the item need not exist).
      await runningAs('delivery', () =>
        dynamo.send(new GetCommand({ TableName: controlTable, Key: { pk: 'tenant#ten_x', sk: 'webhook#wh_x' } })),
      );
      // The conditions the stack adds beyond actions: the distributor and the authorizer
      // may read only the attributes they name (never a webhook's signing secret), the
      // reconciler only the switches, the canary and its receiver only the canary's item.
      const webhookItem = { pk: 'tenant#ten_x', sk: 'webhook#wh_x' };
      await expect(
        runningAs('distributor', () => dynamo.send(new GetCommand({ TableName: controlTable, Key: webhookItem }))),
      ).rejects.toThrow(
        /distributor function may read or write only some attributes of the control table, and this dynamodb:GetItem reads every attribute/,
      );
      await expect(
        runningAs('distributor', () =>
          dynamo.send(
            new GetCommand({
              TableName: controlTable,
              Key: webhookItem,
              ProjectionExpression: '#id, #secret',
              ExpressionAttributeNames: { '#id': 'id', '#secret': 'secret' },
            }),
          ),
        ),
      ).rejects.toThrow(/dynamodb:GetItem names the attribute secret/);
      await expect(
        runningAs('distributor', () =>
          dynamo.send(
            new QueryCommand({
              TableName: controlTable,
              IndexName: 'by_resource',
              KeyConditionExpression: '#k = :k',
              ExpressionAttributeNames: { '#k': 'gsi1pk' },
              ExpressionAttributeValues: { ':k': 'ten_x#task:1' },
            }),
          ),
        ),
      ).rejects.toThrow(/dynamodb:Query reads every attribute/);
      await expect(
        runningAs('authorizer', () =>
          dynamo.send(new GetCommand({ TableName: controlTable, Key: webhookItem, ProjectionExpression: 'url' })),
        ),
      ).rejects.toThrow(
        /authorizer function may read or write only some attributes of the control table, and this dynamodb:GetItem names the attribute url/,
      );
      await expect(
        runningAs('authorizer', () =>
          dynamo.send(new GetCommand({ TableName: controlTable, Key: { pk: 'canary', sk: 'state' }, ProjectionExpression: 'id' })),
        ),
      ).rejects.toThrow(/authorizer function may not reach the partition canary of the control table/);
      await expect(
        runningAs('reconciler', () =>
          dynamo.send(
            new QueryCommand({
              TableName: controlTable,
              KeyConditionExpression: 'pk = :pk',
              ExpressionAttributeValues: { ':pk': 'tenant#ten_x' },
            }),
          ),
        ),
      ).rejects.toThrow(/reconciler function may not reach the partition tenant#ten_x of the control table/);
      for (const fn of ['canary', 'canaryReceiver'] as const) {
        await expect(runningAs(fn, () => dynamo.send(new GetCommand({ TableName: controlTable, Key: webhookItem })))).rejects.toThrow(
          new RegExp(`${fn} function may not reach the partition tenant#ten_x of the control table`),
        );
      }
      // The canary's key is an item in the sandbox (a secret of its own in AWS): its alone.
      await runningAs('canary', () => dynamo.send(new GetCommand({ TableName: controlTable, Key: { pk: 'canary-key', sk: 'key' } })));
      await expect(
        runningAs('canaryReceiver', () => dynamo.send(new GetCommand({ TableName: controlTable, Key: { pk: 'canary-key', sk: 'key' } }))),
      ).rejects.toThrow(/canaryReceiver function may not reach the partition canary-key/);
      // The public receiver writes only where it notes the ticks that arrived, not the item with the webhook's secret.
      const write = (pk: string) =>
        new UpdateCommand({
          TableName: controlTable,
          Key: { pk, sk: 'state' },
          UpdateExpression: 'SET #x = :x',
          ExpressionAttributeNames: { '#x': 'x' },
          ExpressionAttributeValues: { ':x': 1 },
        });
      await expect(runningAs('canaryReceiver', () => dynamo.send(write('canary')))).rejects.toThrow(
        /canaryReceiver function may not reach the partition canary of the control table/,
      );
      await runningAs('canaryReceiver', () => dynamo.send(write('canary-arrivals')));
      refused.length = 0;

      // Every function at work: ingest, turns with a stream and a drop switch's gap
      // marker, deliveries, a paused webhook's hold and release, a reconciler run, the canary.
      const admin = { key: sandbox.adminKey };
      const tenant = await createTenant(sandbox, 'granted');
      const webhook = await createWebhook(sandbox, tenant.key, { resource: 'project:1', url: `${receiver.url}/granted` });
      const stream = await call(sandbox, 'GET', '/v1/events?resource=project:1', { key: tenant.key });
      expect(stream.status).toBe(412);
      await publish(sandbox, tenant.key, [{ resource: 'task:1', parents: ['project:1'], type: 'task.changed', data: 1 }]);
      await receiver.waitFor(() => receiver.acceptedEvents('/granted').length === 1);

      const drop = await call(sandbox, 'PUT', '/v1/admin/switches', {
        ...admin,
        body: { scope: 'resource', tenant: tenant.id, target: 'task:1', action: 'drop' },
      });
      const pause = await call(sandbox, 'PUT', '/v1/admin/switches', {
        ...admin,
        body: { scope: 'webhook', tenant: tenant.id, target: webhook.id, action: 'pause' },
      });
      await new Promise((resolve) => setTimeout(resolve, 700));
      await publish(sandbox, tenant.key, [{ resource: 'task:1', parents: ['project:1'], type: 'task.changed', data: 2 }]);
      await publish(sandbox, tenant.key, [{ resource: 'task:2', parents: ['project:1'], type: 'task.changed', data: 3 }]);
      await new Promise((resolve) => setTimeout(resolve, 500));
      await sandbox.reconcile();
      expect((await call(sandbox, 'DELETE', `/v1/admin/switches/${drop.body.id}`, admin)).status).toBe(204);
      expect((await call(sandbox, 'DELETE', `/v1/admin/switches/${pause.body.id}`, admin)).status).toBe(204);
      await receiver.waitFor(() => receiver.acceptedEvents('/granted').length === 3, 10_000);
      // Resources are not ordered among themselves.
      const types = (events: Array<{ type: string }>) => events.map((e) => e.type).sort();
      expect(types(receiver.acceptedEvents('/granted'))).toEqual(['sluice.gap', 'task.changed', 'task.changed']);

      // Once the stream's newest entries have settled (a page stops that short of now).
      await new Promise((resolve) => setTimeout(resolve, STREAM_SETTLE_MS + 500));
      const page = await call(sandbox, 'GET', `/v1/events?resource=project:1&sync=${stream.body.sync}`, { key: tenant.key });
      expect(types(page.body.data)).toEqual(['sluice.gap', 'task.changed', 'task.changed']);
      await sandbox.runCanary();
      await sandbox.reconcile();

      expect(refused.map((r) => `${r.command} ${JSON.stringify(r.input).slice(0, 200)}`)).toEqual([]);
    });
    // A sandbox started and stopped within the test, and every function at work: 7 s alone,
    // 23 s beside five busy loops on a 2-core machine, near the default 30 s.
  }, 90_000);
});
