/**
 * Lifting a tenant-wide switch starts a release on each of the tenant's webhooks (up to
 * max_webhooks, 10,000): the DELETE must end within the API's timeout for a tenant with
 * many of them, or it answers 504 and, sent again, starts over and never reaches the last.
 */
import { describe, expect, it } from 'vitest';
import { WebhookStore } from '../../functions/adapters/webhook-store.ts';
import { handleDeliverMessage } from '../../functions/app/delivery.ts';
import { apiServices, deliveryDeps } from '../../functions/app/runtime.ts';
import { liftSwitch, setSwitch } from '../../functions/app/switches.ts';
import { newId } from '../../functions/core/ids.ts';
import { API_TIMEOUT_SECONDS } from '../../functions/definitions/environment.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant } from '../support/api.ts';
import { deliveredEventFixture, webhookFixture } from '../support/fixtures.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;
withSandbox({ canary: false, config: { switchCacheMs: 500 } }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

const settle = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The store with each health write taking `ms` longer, as a round trip to DynamoDB in AWS does (the emulator's is quicker). */
function slowHealthWrites(webhooks: WebhookStore, ms: number): WebhookStore {
  return new Proxy(webhooks, {
    get(target, name) {
      const value = Reflect.get(target, name, target);
      if (typeof value !== 'function') return value;
      if (name !== 'saveHealth') return value.bind(target);
      return async (...args: unknown[]) => {
        await settle(ms);
        return value.apply(target, args);
      };
    },
  });
}

describe('a tenant switch lifted', () => {
  it('wakes every one of 150 webhooks within the API timeout, though each health write takes 200 ms', async () => {
    const tenant = await createTenant(sandbox, 'many-webhooks', { max_webhooks: 10_000 });
    const delivery = deliveryDeps(sandbox.wiring, sandbox.notifier);
    const webhooks = new WebhookStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable });
    const ids: string[] = [];
    // 150 webhooks whose health writes take 200 ms: one after the other, 30 s, past the
    // API's timeout, as 600 of 50 ms were. A quarter of those 600: each release is real
    // work for the emulator on a loaded 2-core CI machine too, and 600 took 18 of the 29 s.
    for (let i = 0; i < 150; i += 50) {
      await Promise.all(
        Array.from({ length: 50 }, async () => {
          const id = newId('wh');
          ids.push(id);
          await webhooks.put(webhookFixture({ id, tenantId: tenant.id, resource: `mw:${id}`, url: `${receiver.url}/many/${id}` }));
        }),
      );
    }
    // The webhook a lift reaches last (they are listed in id order) holds a delivery under the pause.
    const last = [...ids].sort().at(-1) as string;
    const api = apiServices(sandbox.wiring, {} as never, sandbox.notifier).switches;
    const services = { ...api, delivery: { ...api.delivery, webhooks: slowHealthWrites(api.delivery.webhooks as WebhookStore, 200) } };
    const pause = await setSwitch(services, { scope: 'tenant', tenant: tenant.id, target: undefined, action: 'pause', reason: '' });
    await settle(700);
    const event = deliveredEventFixture({ id: 'evt_mw1', seq: 1, resource: `mw:${last}`, data: 'held' });
    const message = { deliveryId: 'msg_mw1', tenantId: tenant.id, webhookId: last, events: [event], attempt: 1 };
    expect(await handleDeliverMessage(delivery, message)).toBe('held');

    const lifting = liftSwitch(services, pause.id).then(() => 'lifted');
    try {
      expect(await Promise.race([lifting, settle(API_TIMEOUT_SECONDS * 1_000).then(() => 'timed out')])).toBe('lifted');
    } finally {
      await lifting;
    }
    const listed = (await call(sandbox, 'GET', '/v1/admin/switches', { key: sandbox.adminKey })).body.data;
    expect(listed.map((s: { id: string }) => s.id)).not.toContain(pause.id);
    await receiver.waitFor(() => receiver.acceptedEvents(`/many/${last}`).length === 1, 10_000);
  }, 120_000);
});
