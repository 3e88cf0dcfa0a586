/**
 * The canary's setup survives a run that fails halfway: the next run goes on with
 * the tenant the first one made, instead of making another (and its usage plan).
 */
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import { describe, expect, it } from 'vitest';
import { CanaryStore, hasWebhook } from '../../functions/adapters/canary-store.ts';
import { type CanaryDeps, runCanary } from '../../functions/app/canary.ts';
import { NO_LOGS } from '../../functions/core/telemetry.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createWebhook } from '../support/api.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;

withSandbox({ canary: false }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

describe('the canary', () => {
  it('keeps the tenant it made when its webhook cannot be made yet, and makes the webhook on the next run', async () => {
    const store = new CanaryStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable });
    const deps = (receiverUrl: string): CanaryDeps => ({
      store,
      apiUrl: sandbox.url,
      adminKey: async () => sandbox.adminKey,
      receiverUrl,
      metrics: sandbox.metrics,
      logger: NO_LOGS,
      now: Date.now,
    });
    // The receiver refuses the webhook's verification ping at first.
    receiver.answer('/canary-not-yet', 500);

    await expect(runCanary(deps(`${receiver.url}/canary-not-yet`))).rejects.toThrow('the next run tries again');

    const first = await store.get();
    expect(first).toMatchObject({ tenantId: expect.stringMatching(/^ten_/), apiKey: expect.stringMatching(/^sk_/) });
    expect(first && hasWebhook(first)).toBe(false);

    const published = sandbox.metrics.total('CanaryPublished');
    await runCanary(deps(`${receiver.url}/canary-ready`));

    const second = await store.get();
    expect(second).toMatchObject({ tenantId: first?.tenantId, apiKey: first?.apiKey, webhookId: expect.stringMatching(/^wh_/) });
    expect(sandbox.metrics.total('CanaryPublished')).toBe(published + 1);
    await receiver.waitFor(() => receiver.events('/canary-ready').some((e) => e.type === 'sluice_canary.tick'), 10_000);
    // A third run uses what is saved: no new tenant, no new webhook.
    await runCanary(deps(`${receiver.url}/canary-ready`));
    expect(await store.get()).toEqual(second);
  });

  it('deletes a webhook an earlier run made but could not save, before it makes the one it keeps', async () => {
    const store = new CanaryStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable });
    const state = await store.get();
    if (!state) throw new Error('no canary state');
    // As if the webhook's 201 had been lost: it exists, and the saved state does not know it.
    await sandbox.wiring.dynamo.send(
      new PutCommand({
        TableName: sandbox.wiring.controlTable,
        Item: { pk: 'canary', sk: 'state', state: { tenantId: state.tenantId, apiKey: state.apiKey } },
      }),
    );
    const orphan = await createWebhook(sandbox, state.apiKey, { resource: 'sluice-canary', url: `${receiver.url}/canary-orphan` });

    await runCanary({
      store,
      apiUrl: sandbox.url,
      adminKey: async () => sandbox.adminKey,
      receiverUrl: `${receiver.url}/canary-ready`,
      metrics: sandbox.metrics,
      logger: NO_LOGS,
      now: Date.now,
    });

    const webhooks = (await call(sandbox, 'GET', '/v1/webhooks', { key: state.apiKey })).body.data.map((w: { id: string }) => w.id);
    const saved = await store.get();
    expect(webhooks).toEqual([saved && 'webhookId' in saved ? saved.webhookId : 'none']);
    expect(webhooks).not.toContain(orphan.id);
  });
});
