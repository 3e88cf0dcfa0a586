/**
 * Publish → distribute → deliver, through the sandbox's HTTP API, its embedded
 * DynamoDB and SQS, and real HTTP receivers that verify signatures.
 */
import { describe, expect, it } from 'vitest';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook, expectError, publish } from '../support/api.ts';
import { type Receiver, verifyDelivery } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;
let tenant: { id: string; key: string };

withSandbox({}, async (s, r) => {
  [sandbox, receiver] = [s, r];
  tenant = await createTenant(sandbox);
});

describe('publish to delivery', () => {
  it('delivers a published event, signed so that standardwebhooks verifies it', async () => {
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'task:1', url: `${receiver.url}/basic` });
    const response = await publish(sandbox, tenant.key, [
      { resource: 'task:1', type: 'task.changed', data: { title: 'Ship it', n: 1.5, nested: [null, true] } },
    ]);
    expect(response.status).toBe(202);
    const [result] = response.body.events;
    expect(result).toMatchObject({ status: 'accepted', id: expect.stringMatching(/^evt_/) });

    await receiver.waitFor(() => receiver.deliveries('/basic').length === 1);
    const [delivery] = receiver.deliveries('/basic');
    if (!delivery) throw new Error('no delivery');
    expect(verifyDelivery(hook.secret, delivery)).toEqual(delivery.json);
    expect(delivery.headers['webhook-id']).toMatch(/^msg_/);
    expect(delivery.headers['user-agent']).toMatch(/^sluice\//);
    expect(delivery.headers['content-type']).toBe('application/json');
    expect(Math.abs(Number(delivery.headers['webhook-timestamp']) - Date.now() / 1000)).toBeLessThan(30);
    expect(delivery.json).toEqual({
      webhook: hook.id,
      events: [
        {
          id: result.id,
          seq: 1,
          resource: 'task:1',
          parents: [],
          type: 'task.changed',
          data: { title: 'Ship it', n: 1.5, nested: [null, true] },
          created_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
        },
      ],
    });
  });

  it('delivers event data SQS could not carry as it is (U+FFFE, U+FFFF, emoji), exactly as sent', async () => {
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'odd:1', url: `${receiver.url}/odd` });
    const data = { nonchars: '\uFFFE\uFFFF', emoji: 'ship it 🚀', accents: 'é中' };
    // Once kept on the meta item (a quiet object's doorbell carries it), once in a slot item.
    const published = await publish(sandbox, tenant.key, [{ resource: 'odd:1', type: 'a.b', data }]);
    expect(published.body.events[0].status).toBe('accepted');
    await publish(sandbox, tenant.key, [
      { resource: 'odd:1', type: 'a.b', data: { n: 2, ...data } },
      { resource: 'odd:1', type: 'a.b', data: { n: 3, ...data } },
    ]);
    await receiver.waitFor(() => receiver.events('/odd').filter((e) => e.type === 'a.b').length === 3, 10_000);
    const delivered = receiver.deliveries('/odd').filter((d) => d.json.events.some((e) => e.type === 'a.b'));
    for (const delivery of delivered) verifyDelivery(hook.secret, delivery);
    expect(
      receiver
        .events('/odd')
        .filter((e) => e.type === 'a.b')
        .map((e) => e.data),
    ).toEqual([data, { n: 2, ...data }, { n: 3, ...data }]);
  });

  it("delivers a full delivery's worth of data made of DEL characters (U+007F, one byte each), which SQS carries as it is", async () => {
    await createWebhook(sandbox, tenant.key, { resource: 'del:1', url: `${receiver.url}/del` });
    // Four events just under the data limit fit one delivery (256 KiB); escaped as \u007f,
    // six bytes each, their deliver-queue message would pass SQS's 1 MiB and the object jam.
    const data = '\u007f'.repeat(65_000);
    const events = [1, 2, 3, 4].map(() => ({ resource: 'del:1', type: 'a.b', data }));
    const published = await publish(sandbox, tenant.key, events);
    expect(published.body.events.map((e: { status: string }) => e.status)).toEqual(['accepted', 'accepted', 'accepted', 'accepted']);
    await receiver.waitFor(() => receiver.events('/del').length === 4, 10_000);
    expect(receiver.events('/del').map((e) => [e.seq, e.data])).toEqual([1, 2, 3, 4].map((seq) => [seq, data]));
  });

  it('verifies the endpoint with a signed webhook.ping before storing the webhook', async () => {
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'task:ping', url: `${receiver.url}/ping-check` });
    const [ping] = receiver.received.filter((d) => d.path === '/ping-check');
    if (!ping) throw new Error('no ping');
    expect(ping.json.events[0]).toMatchObject({ type: 'webhook.ping', resource: 'task:ping' });
    expect(verifyDelivery(hook.secret, ping)).toBeTruthy();
  });

  it('fans an event out to webhooks on its resource and on each parent, by type', async () => {
    await createWebhook(sandbox, tenant.key, { resource: 'story:1', url: `${receiver.url}/fan/story` });
    await createWebhook(sandbox, tenant.key, { resource: 'task:2', url: `${receiver.url}/fan/task`, types: ['story.*'] });
    await createWebhook(sandbox, tenant.key, { resource: 'project:3', url: `${receiver.url}/fan/project`, types: ['story.changed'] });
    await createWebhook(sandbox, tenant.key, { resource: 'project:3', url: `${receiver.url}/fan/other-type`, types: ['task.*'] });
    await createWebhook(sandbox, tenant.key, { resource: 'project:4', url: `${receiver.url}/fan/unrelated` });

    await publish(sandbox, tenant.key, [{ resource: 'story:1', parents: ['task:2', 'project:3'], type: 'story.changed', data: {} }]);
    await receiver.waitFor(() => ['/fan/story', '/fan/task', '/fan/project'].every((p) => receiver.events(p).length === 1));
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(receiver.events('/fan/other-type')).toHaveLength(0);
    expect(receiver.events('/fan/unrelated')).toHaveLength(0);
    const ids = ['/fan/story', '/fan/task', '/fan/project'].map((p) => receiver.events(p)[0]?.id);
    expect(new Set(ids).size).toBe(1);
  });

  it('numbers each resource’s events 1, 2, 3… and delivers them in that order', async () => {
    await createWebhook(sandbox, tenant.key, { resource: 'board:9', url: `${receiver.url}/order` });
    const resources = ['card:a', 'card:b', 'card:c'];
    const requests = Array.from({ length: 8 }, (_, r) =>
      publish(
        sandbox,
        tenant.key,
        resources.flatMap((resource) =>
          Array.from({ length: 5 }, (_, i) => ({ resource, parents: ['board:9'], type: 'card.moved', data: { r, i } })),
        ),
      ),
    );
    const responses = await Promise.all(requests);
    expect(responses.every((r) => r.status === 202)).toBe(true);
    await receiver.waitFor(() => receiver.events('/order').length === 120, 20_000);
    for (const resource of resources) {
      const seqs = receiver
        .events('/order')
        .filter((e) => e.resource === resource)
        .map((e) => e.seq);
      expect(seqs).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    }
    // Within one request, a resource's events keep the order they were sent in.
    const first = receiver.events('/order').filter((e) => e.resource === 'card:a');
    for (let i = 1; i < first.length; i++) {
      const [prev, cur] = [first[i - 1]?.data as { r: number; i: number }, first[i]?.data as { r: number; i: number }];
      if (prev.r === cur.r) expect(cur.i).toBe(prev.i + 1);
    }
  });

  it('batches a burst on one resource into deliveries of at most 100 events', async () => {
    await createWebhook(sandbox, tenant.key, { resource: 'burst:1', url: `${receiver.url}/burst` });
    // Two requests of 100: the object's default burst (200) admits both at once.
    for (let r = 0; r < 2; r++) {
      const events = Array.from({ length: 100 }, (_, i) => ({ resource: 'burst:1', type: 'x.y', data: { r, i } }));
      expect((await publish(sandbox, tenant.key, events)).status).toBe(202);
    }
    await receiver.waitFor(() => receiver.events('/burst').length === 200, 20_000);
    expect(receiver.deliveries('/burst').every((d) => d.json.events.length <= 100)).toBe(true);
    expect(receiver.events('/burst').map((e) => e.seq)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
  });

  it('holds what a disabled webhook would get and sends it, in order, when enabled again; delivers nothing after it is deleted', async () => {
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'toggle:1', url: `${receiver.url}/toggle` });
    await publish(sandbox, tenant.key, [{ resource: 'toggle:1', type: 'a.b', data: 1 }]);
    await receiver.waitFor(() => receiver.events('/toggle').length === 1);

    const disabledBySluice = sandbox.metrics.total('WebhooksDisabled');
    const disabledByOwner = sandbox.metrics.total('WebhooksDisabledByOwner');
    const patched = await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { status: 'disabled' } });
    expect(patched.status).toBe(200);
    expect(patched.body.status).toBe('disabled');
    // The owner's choice: counted apart from what the webhook-disabled alarm pages on.
    expect(sandbox.metrics.total('WebhooksDisabledByOwner')).toBe(disabledByOwner + 1);
    expect(sandbox.metrics.total('WebhooksDisabled')).toBe(disabledBySluice);
    await publish(sandbox, tenant.key, [{ resource: 'toggle:1', type: 'a.b', data: 2 }]);
    // Event 2 is held, not sent and not lost.
    const held = async () => (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held;
    for (let i = 0; i < 50 && (await held()) !== 1; i++) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await held()).toBe(1);
    expect(receiver.events('/toggle')).toHaveLength(1);

    const enabled = await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { status: 'active' } });
    expect(enabled.body.status).toBe('active');
    await publish(sandbox, tenant.key, [{ resource: 'toggle:1', type: 'a.b', data: 3 }]);
    await receiver.waitFor(() => receiver.events('/toggle').length === 3);
    expect(receiver.events('/toggle').map((e) => e.data)).toEqual([1, 2, 3]);

    expect((await call(sandbox, 'DELETE', `/v1/webhooks/${hook.id}`, { key: tenant.key })).status).toBe(204);
    expect((await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).status).toBe(404);
    await publish(sandbox, tenant.key, [{ resource: 'toggle:1', type: 'a.b', data: 4 }]);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(receiver.events('/toggle')).toHaveLength(3);
  });

  it('lists, reads and updates webhooks without ever showing the secret again', async () => {
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'list:1', url: `${receiver.url}/list` });
    const listed = await call(sandbox, 'GET', '/v1/webhooks', { key: tenant.key });
    expect(listed.status).toBe(200);
    expect(listed.body.data.map((w: { id: string }) => w.id)).toContain(hook.id);
    expect(JSON.stringify(listed.body)).not.toContain('whsec_');
    const one = await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key });
    expect(one.body).toMatchObject({ id: hook.id, resource: 'list:1', status: 'active', types: ['*'] });
    expect(one.body.secret).toBeUndefined();
    const moved = await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, {
      key: tenant.key,
      body: { url: `${receiver.url}/list-moved`, types: ['a.*'] },
    });
    expect(moved.status).toBe(200);
    expect(moved.body).toMatchObject({ url: `${receiver.url}/list-moved`, types: ['a.*'] });
    // The new URL was verified with a ping before it was saved.
    expect(receiver.received.some((d) => d.path === '/list-moved')).toBe(true);
  });

  it('lists webhooks a page at a time, oldest first, each once, and refuses a cursor that is not a webhook id', async () => {
    const own = await createTenant(sandbox, 'pages');
    const ids: string[] = [];
    for (let i = 0; i < 5; i++)
      ids.push((await createWebhook(sandbox, own.key, { resource: `page:${i}`, url: `${receiver.url}/pages` })).id);
    const seen: string[] = [];
    const pages: boolean[] = [];
    let after: string | undefined;

    do {
      const page = await call(sandbox, 'GET', `/v1/webhooks?limit=2${after ? `&after=${after}` : ''}`, { key: own.key });
      expect(page.status).toBe(200);
      expect(page.body.data.length).toBeLessThanOrEqual(2);
      seen.push(...page.body.data.map((w: { id: string }) => w.id));
      pages.push(page.body.has_more);
      after = page.body.has_more ? seen.at(-1) : undefined;
    } while (after);

    expect(pages).toEqual([true, true, false]);
    expect(seen).toEqual([...ids].sort());
    // Without a limit, one page of up to 100.
    expect((await call(sandbox, 'GET', '/v1/webhooks', { key: own.key })).body).toMatchObject({ has_more: false });
    expect((await call(sandbox, 'GET', '/v1/webhooks', { key: own.key })).body.data).toHaveLength(5);
    expectError(await call(sandbox, 'GET', '/v1/webhooks?after=evt_1', { key: own.key }), 400, 'invalid_request');
    expectError(await call(sandbox, 'GET', '/v1/webhooks?limit=0', { key: own.key }), 400, 'invalid_request');
    expectError(await call(sandbox, 'GET', '/v1/webhooks?limit=501', { key: own.key }), 400, 'invalid_request');
  });

  it('answers the health check without a key', async () => {
    const health = await call(sandbox, 'GET', '/v1/health');
    expect(health).toMatchObject({ status: 200, body: { status: 'ok' } });
  });
});
