/**
 * What order a subscriber sees a resource's events and gap markers in around a kill
 * switch's lift (README "Kill switches"), and in a release of what a webhook held
 * (README "What a subscriber receives"), checked by a real receiver.
 */
import { describe, expect, it } from 'vitest';
import { deliveryDeps } from '../../functions/app/runtime.ts';
import { deliveryId } from '../../functions/core/deliveries.ts';
import type { DeliveredEvent } from '../../functions/core/model.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook, publish } from '../support/api.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;

withSandbox({ config: { retryScheduleSeconds: [0, 6], retryJitter: 0, switchCacheMs: 300 } }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

const settle = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('a webhook drop switch lifted while an earlier delivery waits for its retry', () => {
  it('sends the gap marker first, and the earlier event at its retry, after the marker', async () => {
    const tenant = await createTenant(sandbox, 'drop-retry');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'dr:1', url: `${receiver.url}/drop-retry` });
    let failed = 0;
    receiver.answer('/drop-retry', async ({ ping }) => (ping || failed++ > 0 ? 200 : 500));

    // seq 1 fails its first attempt: its retry waits 6 s, in the deliver queue.
    await publish(sandbox, tenant.key, [{ resource: 'dr:1', type: 'a.b', data: 1 }]);
    await receiver.waitFor(() => receiver.deliveries('/drop-retry').length === 1);
    const drop = await call(sandbox, 'PUT', '/v1/admin/switches', {
      key: sandbox.adminKey,
      body: { scope: 'webhook', tenant: tenant.id, target: hook.id, action: 'drop' },
    });
    await settle(700);
    // seq 2 is dropped under the switch, which is lifted before seq 1's retry is due.
    await publish(sandbox, tenant.key, [{ resource: 'dr:1', type: 'a.b', data: 2 }]);
    await settle(700);
    await call(sandbox, 'DELETE', `/v1/admin/switches/${drop.body.id}`, { key: sandbox.adminKey });
    await receiver.waitFor(() => receiver.acceptedEvents('/drop-retry').length === 2, 15_000);

    // README: the marker (for seq 2) goes out at the lift; seq 1, not held, comes at its retry, after it.
    const seen = receiver.acceptedEvents('/drop-retry');
    expect(seen.map((e) => (e.type === 'sluice.gap' ? e.data : e.seq))).toEqual([{ dropped: 1, reason: 'switch_drop' }, 1]);
    const [marker, older] = seen;
    expect(Date.parse(String(older?.created_at))).toBeLessThan(Date.parse(String(marker?.created_at)));
  }, 30_000);
});

describe('a release of held deliveries that carry the same events', () => {
  it('sends each event once in a merged POST, in seq order', async () => {
    const tenant = await createTenant(sandbox, 'held-copies');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'hc:1', url: `${receiver.url}/held-copies` });
    const pause = await call(sandbox, 'PUT', '/v1/admin/switches', {
      key: sandbox.adminKey,
      body: { scope: 'webhook', tenant: tenant.id, target: hook.id, action: 'pause' },
    });
    await settle(700);
    // What a distributor publishes when it dies between publishing an object's last events
    // (seqs 1-2) and its commit, and seq 3 comes before the next holder, which plans 1-3 as
    // one chunk (queue-protocol.test.ts): two deliveries, the second with the first's events.
    const events: DeliveredEvent[] = [1, 2, 3].map((seq) => ({
      id: `evt_heldcopies${seq}`,
      seq,
      resource: 'hc:1',
      parents: [],
      type: 'a.b',
      data: { seq },
      created_at: new Date().toISOString(),
    }));
    const published = [events.slice(0, 2), events].map((list) => ({
      deliveryId: deliveryId(hook.id, list),
      tenantId: tenant.id,
      webhookId: hook.id,
      events: list,
      attempt: 1,
    }));
    await deliveryDeps(sandbox.wiring, sandbox.notifier).queue.send(published);
    const held = async () => (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held;
    for (let i = 0; i < 100 && (await held()) < 2; i++) await settle(100);
    expect(await held()).toBe(2);

    // The lift releases both, merged (first attempts): one POST.
    await call(sandbox, 'DELETE', `/v1/admin/switches/${pause.body.id}`, { key: sandbox.adminKey });
    await receiver.waitFor(() => receiver.acceptedEvents('/held-copies').length >= 3, 15_000);
    await settle(1_500);

    // README: a delivery carries its events in seq order; each event's id is unique.
    const posts = receiver.deliveries('/held-copies').map((d) => d.json.events.map((e) => e.seq));
    expect(posts).toEqual([[1, 2, 3]]);
  }, 30_000);
});
