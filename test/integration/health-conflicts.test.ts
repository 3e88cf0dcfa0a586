/**
 * An answer whose health change keeps losing the race to other answers of its
 * endpoint still ends its delivery: the POST was made, and a failed record would make
 * it again (a duplicate) after the queue's visibility timeout.
 */
import { describe, expect, it } from 'vitest';
import type { DeliveryDeps } from '../../functions/app/delivery/deps.ts';
import { handleDeliverMessage } from '../../functions/app/delivery.ts';
import { deliveryDeps } from '../../functions/app/runtime.ts';
import type { DeliveryMessage } from '../../functions/core/model.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook } from '../support/api.ts';
import { deliveredEventFixture } from '../support/fixtures.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;

withSandbox({ canary: false }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

/** A webhook store where, before each health write, another answer's write lands first (a real write, a version on). */
function alwaysBeaten(webhooks: DeliveryDeps['webhooks']): DeliveryDeps['webhooks'] {
  return new Proxy(webhooks, {
    get(target, property) {
      if (property !== 'saveHealth') {
        const value = Reflect.get(target, property);
        return typeof value === 'function' ? value.bind(target) : value;
      }
      const save: DeliveryDeps['webhooks']['saveHealth'] = async (webhook, health, extra) => {
        const fresh = await target.get(webhook.tenantId, webhook.id);
        if (fresh) await target.saveHealth(fresh, fresh.health);
        return target.saveHealth(webhook, health, extra);
      };
      return save;
    },
  });
}

describe('health writes under contention', () => {
  it.each([
    ['a failure', 500, 'retrying'],
    ['a success', 200, 'delivered'],
  ])('%s whose health change never wins its write still ends its delivery', async (_name, status, outcome) => {
    const tenant = await createTenant(sandbox, `beaten-${status}`);
    const path = `/beaten-${status}`;
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'r:1', url: `${receiver.url}${path}` });
    // A success changes health only after a failure (or a minute after the last success was written).
    receiver.answer(path, 500);
    const real = deliveryDeps(sandbox.wiring, sandbox.notifier);
    const message = (n: number): DeliveryMessage => ({
      deliveryId: `msg_beaten${status}${n}`,
      tenantId: tenant.id,
      webhookId: hook.id,
      events: [deliveredEventFixture({ id: `evt_beaten${status}${n}`, seq: n, resource: 'r:1' })],
      attempt: 1,
    });
    if (status === 200) {
      expect(await handleDeliverMessage(real, message(1))).toBe('retrying');
      receiver.answer(path, 200);
    }
    const beaten = { ...real, webhooks: alwaysBeaten(real.webhooks) };
    expect(await handleDeliverMessage(beaten, message(2))).toBe(outcome);
    // The answer's change was left out (later answers decide): nothing else was written for it.
    const health = (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health;
    expect(health.state).toBe(status === 200 ? 'failing' : 'healthy');
  });
});
