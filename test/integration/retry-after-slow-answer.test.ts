/**
 * `Retry-After` in seconds counts from the answer that carries it (RFC 9110 §10.2.3):
 * an endpoint that took a while to answer "429, Retry-After: 5" is left alone for 5 s
 * after that answer, not for 5 s after the POST began.
 */
import { describe, expect, it } from 'vitest';
import { handleDeliverMessage } from '../../functions/app/delivery.ts';
import { deliveryDeps } from '../../functions/app/runtime.ts';
import type { DeliveryMessage } from '../../functions/core/model.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { createTenant, createWebhook } from '../support/api.ts';
import { deliveredEventFixture } from '../support/fixtures.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;

withSandbox({ config: { retryJitter: 0 } }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

describe('an endpoint that answers 429 with Retry-After after a slow answer', () => {
  it('gets no delivery until the wait it asked for is over, counted from its answer', async () => {
    const tenant = await createTenant(sandbox, 'slow-429');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 's4:0', url: `${receiver.url}/slow-429` });
    let clock = Date.now();
    const posts: number[] = [];
    const deps = {
      ...deliveryDeps(sandbox.wiring, sandbox.notifier),
      now: () => clock,
      switches: { current: async () => [], refresh: async () => [] },
      queue: { send: async () => undefined },
      // The endpoint takes 8 s to answer, then asks to be left alone for 5 s.
      send: async () => {
        posts.push(clock);
        clock += 8_000;
        return { statusCode: 429, durationMs: 8_000, error: undefined, retryAfter: '5', responseSnippet: '' };
      },
    } as unknown as ReturnType<typeof deliveryDeps>;
    const message = (n: number): DeliveryMessage => ({
      deliveryId: `msg_s4${n}`,
      tenantId: tenant.id,
      webhookId: hook.id,
      events: [deliveredEventFixture({ id: `evt_s4${n}`, seq: n, resource: 's4:0', data: n })],
      attempt: 1,
    });
    expect(await handleDeliverMessage(deps, message(1))).toBe('throttled');
    const answeredAt = clock;
    expect((await deps.webhooks.get(tenant.id, hook.id))?.notBefore).toBeGreaterThanOrEqual(answeredAt + 5_000);

    // A second after that answer, the next delivery waits rather than POSTs.
    clock = answeredAt + 1_000;
    expect(await handleDeliverMessage(deps, message(2))).toBe('throttled');
    expect(posts).toHaveLength(1);
  });
});
