/**
 * The canary's setup survives a run that fails halfway: the next run goes on with
 * the tenant the first one made, instead of making another (and its usage plan).
 */
import { describe, expect, it } from 'vitest';
import { CanaryStore, hasWebhook } from '../../functions/adapters/canary-store.ts';
import { type CanaryDeps, runCanary } from '../../functions/app/canary.ts';
import { NO_LOGS } from '../../functions/core/telemetry.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
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
});
