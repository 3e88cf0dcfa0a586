/**
 * A rotated secret's overlap (SPEC §3: "for 24 h every delivery carries both
 * signatures"): a delivery made a minute before the 24 h are up still carries the
 * replaced secret's signature, one made a minute after carries the new secret's alone.
 */
import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { handleDeliverMessage } from '../../functions/app/delivery.ts';
import { deliveryDeps } from '../../functions/app/runtime.ts';
import type { DeliveryMessage } from '../../functions/core/model.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook } from '../support/api.ts';
import { deliveredEventFixture } from '../support/fixtures.ts';
import type { ReceivedDelivery, Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;

withSandbox({ canary: false }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

const HOUR_MS = 3_600_000;

/**
 * The Standard Webhooks signature a secret gives a delivery: its timestamp is a day
 * ahead, past what a library's verify() takes, so the signatures are compared as sent.
 */
function signature(secret: string, delivery: ReceivedDelivery): string {
  const signed = `${delivery.headers['webhook-id']}.${delivery.headers['webhook-timestamp']}.${delivery.body}`;
  return `v1,${createHmac('sha256', Buffer.from(secret.slice('whsec_'.length), 'base64'))
    .update(signed)
    .digest('base64')}`;
}

describe('a rotated secret', () => {
  it('signs every delivery beside the new one for 24 h, and none after', async () => {
    // Prepare: a webhook whose secret is rotated now.
    const tenant = await createTenant(sandbox, 'rotation-overlap');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'ro:1', url: `${receiver.url}/rotation-overlap` });
    const rotatedAt = Date.now();
    const rotated = await call(sandbox, 'POST', `/v1/webhooks/${hook.id}/rotate-secret`, { key: tenant.key });
    expect(rotated.status).toBe(200);
    const deliverAt = async (at: number, n: number) => {
      const message: DeliveryMessage = {
        deliveryId: `msg_overlap${n}`,
        tenantId: tenant.id,
        webhookId: hook.id,
        events: [deliveredEventFixture({ id: `evt_overlap${n}`, seq: n, resource: 'ro:1' })],
        attempt: 1,
      };
      const deps = { ...deliveryDeps(sandbox.wiring, sandbox.notifier), now: () => at };
      expect(await handleDeliverMessage(deps, message)).toBe('delivered');
      const delivery = receiver.accepted('/rotation-overlap').find((d) => d.headers['webhook-id'] === message.deliveryId);
      if (!delivery) throw new Error(`no delivery ${message.deliveryId}`);
      return delivery;
    };

    // Act: a delivery a minute before the 24 h are up, and one a minute after.
    const within = await deliverAt(rotatedAt + 24 * HOUR_MS - 60_000, 1);
    const after = await deliverAt(Date.now() + 24 * HOUR_MS + 60_000, 2);

    // Assert: the first is signed with both secrets, the second with the new one only.
    expect(within.headers['webhook-signature']?.split(' ').sort()).toEqual(
      [signature(rotated.body.secret, within), signature(hook.secret, within)].sort(),
    );
    expect(after.headers['webhook-signature']?.split(' ')).toEqual([signature(rotated.body.secret, after)]);
  });
});
