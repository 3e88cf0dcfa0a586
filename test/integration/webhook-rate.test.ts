/**
 * A webhook's own rate (`rate_per_second`): a receiver that cannot take the
 * deployment's `endpointRatePerSecond` asks for fewer POSTs a second, and gets them,
 * both for its deliveries as they come and for the steps of a release.
 */
import { describe, expect, it } from 'vitest';
import { startRelease } from '../../functions/app/delivery/chains.ts';
import { handleDeliverMessage } from '../../functions/app/delivery.ts';
import { deliveryDeps } from '../../functions/app/runtime.ts';
import type { DeliveryMessage } from '../../functions/core/model.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, expectError, publish } from '../support/api.ts';
import { deliveredEventFixture } from '../support/fixtures.ts';
import { holdDelivery } from '../support/held.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;

withSandbox({ canary: false, config: { endpointRatePerSecond: 50 } }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

/** A webhook made through the API, with the body's extra fields (a rate). */
async function webhookWith(name: string, extra: Record<string, unknown>) {
  const tenant = await createTenant(sandbox, name);
  const created = await call(sandbox, 'POST', '/v1/webhooks', {
    key: tenant.key,
    body: { resource: `${name}:0`, url: `${receiver.url}/${name}`, ...extra },
  });
  expect(created.status).toBe(201);
  return { tenant, hook: created.body };
}

/** Delivery dependencies whose deliver queue is a list, so a test sees what waits and for when. */
function capturing() {
  const sent: unknown[] = [];
  const deps = {
    ...deliveryDeps(sandbox.wiring, sandbox.notifier),
    switches: { current: async () => [], refresh: async () => [] },
    queue: {
      send: async (messages: readonly unknown[]) => {
        sent.push(...messages);
      },
    },
  } as unknown as ReturnType<typeof deliveryDeps>;
  return { deps, sent };
}

function deliveryTo(tenantId: string, webhookId: string, name: string, i: number, attempt = 1): DeliveryMessage {
  return {
    deliveryId: `msg_${name}${i}`,
    tenantId,
    webhookId,
    events: [deliveredEventFixture({ id: `evt_${name}${i}`, seq: 1, resource: `${name}:${i + 1}`, parents: [`${name}:0`] })],
    attempt,
  };
}

describe("a webhook's rate", () => {
  it('is set at creation, shown, changed and given back to the deployment with null', async () => {
    const { tenant, hook } = await webhookWith('rateapi', { rate_per_second: 2 });
    expect(hook.rate_per_second).toBe(2);
    const path = `/v1/webhooks/${hook.id}`;
    expect((await call(sandbox, 'GET', path, { key: tenant.key })).body.rate_per_second).toBe(2);
    expect((await call(sandbox, 'GET', '/v1/webhooks', { key: tenant.key })).body.data[0].rate_per_second).toBe(2);

    const patched = await call(sandbox, 'PATCH', path, { key: tenant.key, body: { rate_per_second: 5 } });
    expect(patched.status).toBe(200);
    expect(patched.body.rate_per_second).toBe(5);
    const reset = await call(sandbox, 'PATCH', path, { key: tenant.key, body: { rate_per_second: null } });
    expect(reset.body.rate_per_second).toBeNull();
    expect((await deliveryDeps(sandbox.wiring, sandbox.notifier).webhooks.get(tenant.id, hook.id))?.ratePerSecond).toBeUndefined();

    // Left out, it is the deployment's.
    const plain = await webhookWith('rateplain', {});
    expect(plain.hook.rate_per_second).toBeNull();
  });

  it("refuses a rate over the deployment's, or not a whole number of POSTs, with a 400 and nothing stored or changed", async () => {
    const { tenant, hook } = await webhookWith('ratebad', { rate_per_second: 3 });
    const pings = receiver.received.length;
    for (const rate of [0, 51, 2.5, '5']) {
      const created = await call(sandbox, 'POST', '/v1/webhooks', {
        key: tenant.key,
        body: { resource: 'ratebad:1', url: `${receiver.url}/ratebad`, rate_per_second: rate },
      });
      expectError(created, 400, 'invalid_request');
      expect(created.body.error.message).toMatch(/rate_per_second must be a whole number of POSTs a second from 1 to 50/);
      const patched = await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { rate_per_second: rate } });
      expectError(patched, 400, 'invalid_request');
    }
    // No verification ping went out for a refused webhook, none was stored, and the rate stands.
    expect(receiver.received.length).toBe(pings);
    const listed = await call(sandbox, 'GET', '/v1/webhooks', { key: tenant.key });
    expect(listed.body.data.map((w: { id: string }) => w.id)).toEqual([hook.id]);
    expect(listed.body.data[0].rate_per_second).toBe(3);
  });

  it('spreads the deliveries of a webhook at 3 a second over seconds, end to end, where the deployment allows 50', async () => {
    const { tenant } = await webhookWith('rateflow', { rate_per_second: 3 });
    const started = Date.now();
    // One request each, apart: events that reach one distributor invocation together
    // would be merged into one delivery, and this is about many deliveries.
    for (let i = 0; i < 9; i++) {
      await publish(sandbox, tenant.key, [{ resource: `rateflow:${i + 1}`, parents: ['rateflow:0'], type: 'a.b', data: i }]);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await receiver.waitFor(() => receiver.acceptedEvents('/rateflow').length === 9, 20_000);
    const arrivals = receiver.received.filter((d) => d.path === '/rateflow' && d.answered === 200).map((d) => d.at - started);
    expect(arrivals.length).toBeGreaterThanOrEqual(7);
    // 3 a second and a second's burst: seven or more POSTs take two seconds or more.
    expect(Math.max(...arrivals)).toBeGreaterThanOrEqual(1_900);
  }, 30_000);

  it("gives each delivery a share of the endpoint's time at the webhook's rate, not the deployment's", async () => {
    const { tenant, hook } = await webhookWith('ratepace', { rate_per_second: 2 });
    const { deps, sent } = capturing();

    const outcomes = await Promise.all(
      Array.from({ length: 6 }, (_, i) => handleDeliverMessage(deps, deliveryTo(tenant.id, hook.id, 'ratepace', i))),
    );

    // 2 a second and a second's burst: 2 go now, the other 4 wait for times half a second apart.
    expect(outcomes.filter((o) => o === 'delivered')).toHaveLength(2);
    expect(outcomes.filter((o) => o === 'throttled')).toHaveLength(4);
    const times = (sent as DeliveryMessage[]).map((m) => m.sendAt ?? Number.NaN).sort((a, b) => a - b);
    expect(times.slice(1).map((t, i) => Math.round(t - (times[i] as number)))).toEqual([500, 500, 500]);
  });

  it('takes a rate changed by PATCH for the next deliveries', async () => {
    const { tenant, hook } = await webhookWith('ratepatch', {});
    const patched = await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { rate_per_second: 1 } });
    expect(patched.status).toBe(200);
    const { deps } = capturing();

    const outcomes = await Promise.all(
      Array.from({ length: 3 }, (_, i) => handleDeliverMessage(deps, deliveryTo(tenant.id, hook.id, 'ratepatch', i))),
    );

    expect(outcomes.filter((o) => o === 'delivered')).toHaveLength(1);
    expect(outcomes.filter((o) => o === 'throttled')).toHaveLength(2);
  });

  it("sends at most the webhook's rate of POSTs a release step, and takes their shares at it", async () => {
    const { tenant, hook } = await webhookWith('raterelease', { rate_per_second: 2 });
    const base = deliveryDeps(sandbox.wiring, sandbox.notifier);
    // Held retries go a POST each (only first attempts are packed together).
    for (let i = 0; i < 6; i++) {
      expect(await holdDelivery(base, deliveryTo(tenant.id, hook.id, 'raterelease', i, 2), 100)).toEqual([true, true]);
    }
    const webhook = await base.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    let posts = 0;
    const { deps, sent } = capturing();
    const counting = {
      ...deps,
      send: async () => {
        posts += 1;
        return { statusCode: 200, durationMs: 5, error: undefined, retryAfter: undefined, responseSnippet: '' };
      },
    } as typeof deps;
    await startRelease(counting, webhook);
    const before = Date.now();

    expect(await handleDeliverMessage(counting, sent.splice(0)[0] as DeliveryMessage)).toBe('released');

    expect(posts).toBe(2);
    expect((await base.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(4);
    // Two POSTs at 2 a second: a second of the endpoint's time.
    expect((await base.paces.freeAt(hook.id, Date.now())) ?? 0).toBeGreaterThanOrEqual(before + 1_000 - 5);
    expect(sent).toMatchObject([{ kind: 'release' }]);
  });

  it("gives the webhook's replays a budget at its rate: 2,000 deliveries per 80 s at 25 a second", async () => {
    const { tenant, hook } = await webhookWith('ratereplay', { rate_per_second: 25 });
    const { sendBudgets } = deliveryDeps(sandbox.wiring, sandbox.notifier);
    // The window's 2,000 spent already, as by earlier replays.
    expect((await sendBudgets.takeUpTo(`replay:${hook.id}`, 2_000, 2_000, 80_000, Date.now())).taken).toBe(2_000);

    const replay = await call(sandbox, 'POST', `/v1/webhooks/${hook.id}/replay`, {
      key: tenant.key,
      body: { since: new Date(Date.now() - 60_000).toISOString() },
    });

    expectError(replay, 429, 'rate_limited');
    expect(replay.body.error.message).toMatch(/at most 2000 deliveries in 80 s/);
    expect(Number(replay.headers.get('retry-after'))).toBeLessThanOrEqual(80);
  });
});
