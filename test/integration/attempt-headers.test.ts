/**
 * The headers of a retry (SPEC §3 Deliveries): the same `webhook-id` as the first attempt,
 * and the `webhook-timestamp` of this attempt. A Standard Webhooks library refuses a
 * timestamp more than 5 minutes old, so a retry stamped with its first attempt's time
 * would fail verification from the third attempt on (5 minutes and more later).
 */
import { describe, expect, it } from 'vitest';
import { handleDeliverMessage } from '../../functions/app/delivery.ts';
import { deliveryDeps } from '../../functions/app/runtime.ts';
import type { DeliverQueueMessage, DeliveryMessage } from '../../functions/core/model.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { createTenant, createWebhook } from '../support/api.ts';
import { deliveredEventFixture } from '../support/fixtures.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;

withSandbox({ canary: false, config: { retryJitter: 0 } }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

describe('a retry', () => {
  it('carries its first attempt’s webhook-id and its own webhook-timestamp', async () => {
    // Prepare: an endpoint that fails its first delivery, and a delivery stage whose
    // retries are kept here, to be run at the time they are due.
    const tenant = await createTenant(sandbox, 'retry-headers');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'rh:1', url: `${receiver.url}/retry-headers` });
    let posts = 0;
    receiver.answer('/retry-headers', async ({ ping }) => (ping || ++posts > 1 ? 200 : 500));
    const retries: DeliverQueueMessage[] = [];
    const at = (now: number) => ({
      ...deliveryDeps(sandbox.wiring, sandbox.notifier),
      now: () => now,
      queue: { send: async (messages: readonly DeliverQueueMessage[]) => void retries.push(...messages) },
    });
    const message: DeliveryMessage = {
      deliveryId: 'msg_retryheaders00000',
      tenantId: tenant.id,
      webhookId: hook.id,
      events: [deliveredEventFixture({ id: 'evt_retryheaders', seq: 1, resource: 'rh:1' })],
      attempt: 1,
    };
    const first = Date.now();

    // Act: the first attempt fails; its retry runs 30 minutes later.
    expect(await handleDeliverMessage(at(first), message)).toBe('retrying');
    const [retry] = retries.splice(0);
    expect(retry).toMatchObject({ deliveryId: message.deliveryId, attempt: 2 });
    const later = first + 30 * 60_000;
    expect(await handleDeliverMessage(at(later), retry as DeliverQueueMessage)).toBe('delivered');

    // Assert
    const [failed, delivered] = receiver.deliveries('/retry-headers').filter((d) => d.json.events[0]?.type === 'a.b');
    expect(failed?.headers['webhook-id']).toBe(message.deliveryId);
    expect(delivered?.headers['webhook-id']).toBe(message.deliveryId);
    expect(failed?.headers['webhook-timestamp']).toBe(String(Math.floor(first / 1000)));
    expect(delivered?.headers['webhook-timestamp']).toBe(String(Math.floor(later / 1000)));
  });
});
