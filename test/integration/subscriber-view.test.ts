/**
 * What a subscriber sees of one resource's events when a delivery fails (README "What a
 * subscriber receives"): checked by a real receiver that verifies every signature.
 */
import { describe, expect, it } from 'vitest';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook, publish } from '../support/api.ts';
import { type Receiver, verifyDelivery } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;

withSandbox(
  {
    config: {
      retryScheduleSeconds: [0, 1],
      retryJitter: 0,
      quarantineAfterFailures: 3,
      probeIntervalMinSeconds: 1,
      probeIntervalMaxSeconds: 2,
      deliveryTimeoutMs: 400,
      failingAttemptIntervalMs: 300,
    },
  },
  (s, r) => {
    [sandbox, receiver] = [s, r];
  },
);

/** Answers the first `failures` deliveries (not pings) 500, then 200. */
function failFirst(failures: number) {
  let seen = 0;
  return async ({ ping }: { ping: boolean }) => (ping || ++seen > failures ? 200 : 500);
}

describe('a delivery that fails', () => {
  it('may arrive after a later delivery of its resource: a failing endpoint is not held, so its retry comes behind', async () => {
    const tenant = await createTenant(sandbox, 'retry-order');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'ro:1', url: `${receiver.url}/retry-order` });
    receiver.answer('/retry-order', failFirst(1));

    await publish(sandbox, tenant.key, [{ resource: 'ro:1', type: 'a.b', data: 1 }]);
    await receiver.waitFor(() => receiver.deliveries('/retry-order').length === 1);
    await publish(sandbox, tenant.key, [{ resource: 'ro:1', type: 'a.b', data: 2 }]);
    await receiver.waitFor(() => receiver.acceptedEvents('/retry-order').length === 2);

    // seq 2 came first, then the retry of seq 1 (the same webhook-id as its first attempt).
    expect(receiver.acceptedEvents('/retry-order').map((e) => e.seq)).toEqual([2, 1]);
    const [first, , retry] = receiver.deliveries('/retry-order');
    expect(retry?.headers['webhook-id']).toBe(first?.headers['webhook-id']);
    for (const delivery of receiver.deliveries('/retry-order')) expect(verifyDelivery(hook.secret, delivery)).toBeTruthy();
  });

  it('is dead-lettered without a gap marker: the hole it leaves in seq is told by the dead-letters list, not by sluice.gap', async () => {
    const tenant = await createTenant(sandbox, 'dead-hole');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'dh:1', url: `${receiver.url}/dead-hole` });
    // Both attempts of the first delivery fail: two failures, fewer than quarantine takes.
    receiver.answer('/dead-hole', failFirst(2));

    await publish(sandbox, tenant.key, [{ resource: 'dh:1', type: 'a.b', data: 1 }]);
    await receiver.waitFor(() => receiver.deliveries('/dead-hole').length === 2);
    await publish(sandbox, tenant.key, [{ resource: 'dh:1', type: 'a.b', data: 2 }]);
    await receiver.waitFor(() => receiver.acceptedEvents('/dead-hole').length === 1);
    await new Promise((resolve) => setTimeout(resolve, 2_000));

    // The webhook gets everything of its resource, and saw seq 2 only: no marker stands for seq 1.
    expect(receiver.acceptedEvents('/dead-hole').map((e) => [e.type, e.seq])).toEqual([['a.b', 2]]);
    const letters = (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}/dead-letters`, { key: tenant.key })).body.data;
    expect(letters.flatMap((l: { events: Array<{ seq: number }> }) => l.events.map((e) => e.seq))).toEqual([1]);
  });
});

/** A webhook quarantined with `count` deliveries of one resource held, each to go alone (each failed once). */
async function quarantinedWith(name: string, path: string, count: number) {
  const tenant = await createTenant(sandbox, name);
  const hook = await createWebhook(sandbox, tenant.key, { resource: `${name}:0`, url: `${receiver.url}${path}` });
  receiver.answer(path, 500);
  for (let n = 1; n <= count; n++) {
    await publish(sandbox, tenant.key, [{ resource: `${name}:1`, parents: [`${name}:0`], type: 'a.b', data: n }]);
    // One delivery each: a turn of its own, attempted alone.
    await receiver.waitFor(() => receiver.deliveries(path).length >= Math.min(n, 3));
  }
  let health = { state: '', held: 0 };
  for (let i = 0; i < 100 && (health.state !== 'quarantined' || health.held < count); i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    health = (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health;
  }
  expect(health).toMatchObject({ state: 'quarantined', held: count });
  return { tenant, hook };
}

describe('a release step', () => {
  it('signs each POST it sends after a rotation with the new secret too, as every delivery after a rotation is', async () => {
    const { tenant, hook } = await quarantinedWith('rotated-mid-step', '/rotated-mid-step', 4);
    // The endpoint recovers; as the release's first POST comes, its owner rotates the secret.
    let rotated: { secret: string; at: number } | undefined;
    receiver.answer('/rotated-mid-step', async ({ ping }) => {
      if (!ping && rotated === undefined) {
        const answer = await call(sandbox, 'POST', `/v1/webhooks/${hook.id}/rotate-secret`, { key: tenant.key });
        rotated = { secret: answer.body.secret, at: Date.now() };
      }
      return 200;
    });
    await receiver.waitFor(() => receiver.acceptedEvents('/rotated-mid-step').length === 4, 15_000);

    // Every POST after the rotation's answer verifies with the new secret, and with the old one.
    const after = receiver.deliveries('/rotated-mid-step').filter((d) => d.at > (rotated?.at ?? 0));
    expect(after.length).toBeGreaterThan(0);
    for (const delivery of after) {
      expect(verifyDelivery(rotated?.secret ?? '', delivery)).toBeTruthy();
      expect(verifyDelivery(hook.secret, delivery)).toBeTruthy();
    }
  });

  it('sends nothing more once its owner disabled the webhook: what is left stays held', async () => {
    const { tenant, hook } = await quarantinedWith('disabled-mid-step', '/disabled-mid-step', 4);
    let disabledAt: number | undefined;
    receiver.answer('/disabled-mid-step', async ({ ping }) => {
      if (!ping && disabledAt === undefined) {
        await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { status: 'disabled' } });
        disabledAt = Date.now();
      }
      return 200;
    });
    await receiver.waitFor(() => disabledAt !== undefined, 15_000);
    await new Promise((resolve) => setTimeout(resolve, 2_000));

    expect(receiver.received.filter((d) => d.path === '/disabled-mid-step' && d.at > (disabledAt ?? 0))).toEqual([]);
    const health = (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health;
    expect(health).toMatchObject({ state: 'disabled', held: 3 });
  });
});
