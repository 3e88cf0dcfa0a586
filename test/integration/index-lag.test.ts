/**
 * DynamoDB updates a global secondary index after the write it follows (AWS: "typically
 * within a fraction of a second", longer under load); the embedded emulator updates it in
 * the same write. Here the sandbox's client sees the `by_resource` index as AWS can: for
 * `lag` ms after a webhook's write, the index still answers what it held before (nothing
 * for a new webhook, the old attributes for a changed one). The distributor uses that
 * client, and so does the webhook service these tests create and change webhooks with
 * (the sandbox's own API runs on a thread of its own, with a client of its own).
 */
import { type DynamoDBDocumentClient, GetCommand } from '@aws-sdk/lib-dynamodb';
import { describe, expect, it } from 'vitest';
import { documentClient } from '../../functions/adapters/aws.ts';
import { apiServices } from '../../functions/app/runtime.ts';
import { INDEX_WAIT_MS, type WebhookService } from '../../functions/app/webhooks.ts';
import type { LoggerPort } from '../../functions/core/telemetry.ts';
import { BY_RESOURCE_INDEX } from '../../functions/definitions/tables.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { createTenant, publish } from '../support/api.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

/** How long after its write a webhook's index entry is stale: well within what AWS allows. */
const INDEX_LAG_MS = 300;
let lag = INDEX_LAG_MS;

/**
 * Makes `client`'s `by_resource` answers lag `lagMs` behind the table: a row whose item was
 * written less than that ago is answered as this client last saw it (or not at all, new).
 * (The item's times are read with a client of its own: the distributor may not read them.)
 */
function lagIndex(client: DynamoDBDocumentClient, table: string, raw: DynamoDBDocumentClient, lagMs: () => number): void {
  const seen = new Map<string, Record<string, unknown>>();
  client.middlewareStack.add(
    (next) => async (args) => {
      const result = await next(args);
      if ((args.input as { IndexName?: string }).IndexName !== BY_RESOURCE_INDEX) return result;
      const output = result.output as { Items?: Array<Record<string, unknown>>; Count?: number };
      const rows: Array<Record<string, unknown>> = [];
      for (const row of output.Items ?? []) {
        const key = { pk: `tenant#${row.tenant_id}`, sk: `webhook#${row.id}` };
        const { Item } = await raw.send(new GetCommand({ TableName: table, Key: key, ConsistentRead: true }));
        const writtenAt = Date.parse(String(Item?.updated_at ?? Item?.created_at ?? 0));
        const before = seen.get(String(row.id));
        if (Date.now() - writtenAt >= lagMs()) {
          seen.set(String(row.id), row);
          rows.push(row);
        } else if (before) rows.push(before);
      }
      output.Items = rows;
      output.Count = rows.length;
      return result;
    },
    { step: 'initialize', name: 'lagIndex' },
  );
}

let sandbox: Sandbox;
let receiver: Receiver;
let tenant: { id: string; key: string };
let webhooks: WebhookService;
const warnings: string[] = [];

withSandbox({ canary: false }, async (s, r) => {
  [sandbox, receiver] = [s, r];
  tenant = await createTenant(sandbox);
  lagIndex(sandbox.wiring.dynamo, sandbox.wiring.controlTable, documentClient({ ...sandbox.emulators.dynamo }), () => lag);
  const logger: LoggerPort = { ...sandbox.wiring.logger, warn: (message) => void warnings.push(message) };
  webhooks = apiServices({ ...sandbox.wiring, logger }, {} as never, sandbox.notifier).webhooks;
});

describe('a by_resource index that lags behind the webhook write, as in AWS', () => {
  it('delivers an event published as soon as its webhook was created', async () => {
    const hook = await webhooks.create(tenant.id, { resource: 'lag:1', url: `${receiver.url}/lag-new`, types: ['*'], description: '' });
    const published = await publish(sandbox, tenant.key, [{ resource: 'lag:1', type: 'task.changed', data: { n: 1 } }]);
    expect(published.body.events[0].status).toBe('accepted');
    // Long after the index has caught up.
    await receiver.waitFor(() => receiver.deliveries('/lag-new').length > 0, 5_000).catch(() => undefined);
    expect(receiver.events('/lag-new').map((e) => [e.type, e.id])).toEqual([['task.changed', published.body.events[0].id]]);
    expect(receiver.deliveries('/lag-new')[0]?.json.webhook).toBe(hook.id);
  });

  it('delivers an event published as soon as its webhook was created on a busy resource, whose turns looked it up during the lag', async () => {
    // Events on the resource all along: its turns look it up again after the create's
    // write, while the index does not show the webhook yet.
    let busy = true;
    const traffic = (async () => {
      while (busy) {
        await publish(sandbox, tenant.key, [{ resource: 'lag:busy', type: 'task.ticked', data: {} }]);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    try {
      await new Promise((resolve) => setTimeout(resolve, 200));
      await webhooks.create(tenant.id, { resource: 'lag:busy', url: `${receiver.url}/lag-busy`, types: ['task.created'], description: '' });
      const published = await publish(sandbox, tenant.key, [{ resource: 'lag:busy', type: 'task.created', data: {} }]);
      expect(published.body.events[0].status).toBe('accepted');
      await receiver.waitFor(() => receiver.events('/lag-busy').length > 0, 8_000).catch(() => undefined);
      expect(receiver.events('/lag-busy').map((e) => e.id)).toEqual([published.body.events[0].id]);
    } finally {
      busy = false;
      await traffic;
    }
  });

  it('delivers an event of a type a PATCH has just added to the webhook', async () => {
    const hook = await webhooks.create(tenant.id, {
      resource: 'lag:2',
      url: `${receiver.url}/lag-patch`,
      types: ['task.created'],
      description: '',
    });
    await publish(sandbox, tenant.key, [{ resource: 'lag:2', type: 'task.created', data: {} }]);
    await receiver.waitFor(() => receiver.deliveries('/lag-patch').length === 1);

    await webhooks.update(tenant.id, hook.id, { types: ['task.*'] });
    const published = await publish(sandbox, tenant.key, [{ resource: 'lag:2', type: 'task.changed', data: {} }]);
    expect(published.body.events[0].status).toBe('accepted');
    await receiver.waitFor(() => receiver.events('/lag-patch').length === 2, 5_000).catch(() => undefined);
    expect(receiver.events('/lag-patch').map((e) => e.type)).toEqual(['task.created', 'task.changed']);
  });

  it("answers two PATCHes of a webhook's types at once as soon as the index shows the last of them, and a deleted webhook's at once", async () => {
    const hook = await webhooks.create(tenant.id, { resource: 'lag:4', url: `${receiver.url}/lag-race`, types: ['a.*'], description: '' });
    const warned = warnings.length;
    const started = performance.now();
    const timed = async (types: string[]) => {
      await webhooks.update(tenant.id, hook.id, { types });
      return performance.now() - started;
    };
    const took = await Promise.all([timed(['b.*']), timed(['c.*'])]);
    // Each waits out the index's lag, not INDEX_WAIT_MS for types another PATCH replaced.
    expect(Math.max(...took)).toBeLessThan(INDEX_WAIT_MS - 1_000);
    expect(warnings.slice(warned)).toEqual([]);

    const gone = await webhooks.create(tenant.id, { resource: 'lag:5', url: `${receiver.url}/lag-gone`, types: ['a.*'], description: '' });
    const patching = performance.now();
    const patched = webhooks.update(tenant.id, gone.id, { types: ['b.*'] });
    await webhooks.delete(tenant.id, gone.id);
    await patched.catch(() => undefined);
    expect(performance.now() - patching).toBeLessThan(INDEX_WAIT_MS - 1_000);
  });

  it('answers after INDEX_WAIT_MS at most, and says so, when the index is slower still', async () => {
    lag = INDEX_WAIT_MS + 2_000;
    try {
      const started = performance.now();
      const hook = await webhooks.create(tenant.id, { resource: 'lag:3', url: `${receiver.url}/lag-slow`, types: ['*'], description: '' });
      const took = performance.now() - started;
      expect(hook.id).toMatch(/^wh_/);
      expect(took).toBeGreaterThanOrEqual(INDEX_WAIT_MS);
      expect(took).toBeLessThan(INDEX_WAIT_MS + 1_500);
      expect(warnings).toContain('The webhook index did not show a webhook in time: events published now may miss it');
    } finally {
      lag = INDEX_LAG_MS;
    }
  });
});
