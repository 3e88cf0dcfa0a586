/**
 * Past the last attempt of the retry schedule a delivery becomes a dead letter:
 * kept in DynamoDB, counted, and delivered again by a replay once the endpoint works.
 */
import { describe, expect, it } from 'vitest';
import { DeadLetters } from '../../functions/adapters/dead-letters.ts';
import { HeldDeliveries } from '../../functions/adapters/held-deliveries.ts';
import { NO_SWITCHES } from '../../functions/adapters/switch-store.ts';
import { deliveryDeps, deliveryStores } from '../../functions/app/runtime.ts';
import type { DeliverQueueMessage, DeliveryMessage } from '../../functions/core/model.ts';
import { DELIVER_QUEUE } from '../../functions/definitions/queues.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook, expectError, publish } from '../support/api.ts';
import { deliveredEventFixture } from '../support/fixtures.ts';
import { holdDelivery } from '../support/held.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';
import { webhookService } from '../support/services.ts';

let sandbox: Sandbox;
let receiver: Receiver;

withSandbox(
  {
    canary: false,
    // Two attempts a second apart, and no quarantine in the way.
    config: { retryScheduleSeconds: [0, 1], retryJitter: 0, quarantineAfterFailures: 100, failingAttemptIntervalMs: 100 },
  },
  (s, r) => {
    [sandbox, receiver] = [s, r];
  },
);

describe('dead letters', () => {
  it('keeps a delivery that used up its retries, counts it, and replay delivers it once the endpoint works', async () => {
    const tenant = await createTenant(sandbox, 'dead');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'd:1', url: `${receiver.url}/dead` });
    receiver.answer('/dead', 500);
    const since = new Date(Date.now() - 1_000).toISOString();
    const published = await publish(sandbox, tenant.key, [{ resource: 'd:1', type: 'a.b', data: 'last words' }]);
    const eventId = published.body.events[0].id as string;

    await receiver.waitFor(() => sandbox.metrics.total('DeadLetters') >= 1, 15_000);
    expect(receiver.deliveries('/dead')).toHaveLength(2);
    const deadLetters = new DeadLetters({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable, retentionDays: 7 });
    const [dead] = (await deadLetters.page(hook.id, Date.now(), 100)).letters;
    expect(dead).toMatchObject({ reason: 'HTTP 500', message: { webhookId: hook.id, attempt: 2 } });
    expect(dead?.message.events.map((e) => e.id)).toEqual([eventId]);
    const attempts = (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}/attempts`, { key: tenant.key })).body.data;
    expect(attempts.map((a: { attempt: number }) => a.attempt)).toEqual([2, 1]);

    receiver.answer('/dead', 200);
    const replay = await call(sandbox, 'POST', `/v1/webhooks/${hook.id}/replay`, { key: tenant.key, body: { since } });
    expect(replay.body).toEqual({ events: 1 });
    await receiver.waitFor(() => receiver.acceptedEvents('/dead').length === 1, 10_000);
    expect(receiver.acceptedEvents('/dead')[0]).toMatchObject({ id: eventId, data: 'last words' });
  });
});

describe('the dead letters API', () => {
  it('lists a webhook’s dead letters page by page, and sends them all again, once, as the deliveries they were', async () => {
    const tenant = await createTenant(sandbox, 'dead-api');
    const other = await createTenant(sandbox, 'dead-api-other');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'da:1', url: `${receiver.url}/dead-api` });
    receiver.answer('/dead-api', 500);
    const deadBefore = sandbox.metrics.total('DeadLetters');
    const ids: string[] = [];
    for (const n of [1, 2, 3]) {
      ids.push((await publish(sandbox, tenant.key, [{ resource: 'da:1', type: 'a.b', data: { n } }])).body.events[0].id as string);
      // Each its own delivery: the next is published once this one's first attempt failed.
      await receiver.waitFor(() => receiver.deliveries('/dead-api').some((d) => d.json.events?.[0]?.id === ids[n - 1]), 10_000);
    }
    await receiver.waitFor(() => sandbox.metrics.total('DeadLetters') >= deadBefore + 3, 20_000);
    const failed = new Set(receiver.deliveries('/dead-api').map((d) => d.headers['webhook-id']));

    const path = `/v1/webhooks/${hook.id}/dead-letters`;
    const first = await call(sandbox, 'GET', `${path}?limit=2`, { key: tenant.key });
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ has_more: true, next: expect.any(String) });
    const second = await call(sandbox, 'GET', `${path}?limit=2&after=${first.body.next}`, { key: tenant.key });
    expect(second.body).toMatchObject({ has_more: false });
    expect(second.body.next).toBeUndefined();
    const letters = [...first.body.data, ...second.body.data];
    // Oldest first; the events without their data, each delivery with its id and what ended it.
    expect(letters.map((l: { events: Array<{ id: string }> }) => l.events.map((e) => e.id))).toEqual(ids.map((id) => [id]));
    for (const letter of letters) {
      expect(letter).toMatchObject({
        attempts: 2,
        reason: 'HTTP 500',
        events: [{ seq: expect.any(Number), resource: 'da:1', type: 'a.b' }],
      });
      expect(letter.events[0].data).toBeUndefined();
      expect(failed.has(letter.delivery_id)).toBe(true);
    }
    // Another tenant's webhook is not found; a made-up page token is refused.
    expect((await call(sandbox, 'GET', path, { key: other.key })).status).toBe(404);
    expect((await call(sandbox, 'POST', `${path}/replay`, { key: other.key })).status).toBe(404);
    expectError(await call(sandbox, 'GET', `${path}?after=bm90LWEtdG9rZW4`, { key: tenant.key }), 400, 'invalid_request');

    // Once the endpoint works: all of them again, each under its own msg_ id, and they are dead letters no more.
    receiver.answer('/dead-api', 200);
    const replayed = await call(sandbox, 'POST', `${path}/replay`, { key: tenant.key });
    expect(replayed.status).toBe(202);
    expect(replayed.body).toEqual({ deliveries: 3, events: 3, has_more: false });
    await receiver.waitFor(() => receiver.acceptedEvents('/dead-api').length === 3, 10_000);
    expect(
      receiver
        .acceptedEvents('/dead-api')
        .map((e) => e.id)
        .sort(),
    ).toEqual([...ids].sort());
    const ok = receiver.deliveries('/dead-api').filter((d) => d.answered === 200);
    expect(new Set(ok.map((d) => d.headers['webhook-id']))).toEqual(new Set(letters.map((l: { delivery_id: string }) => l.delivery_id)));
    expect((await call(sandbox, 'GET', path, { key: tenant.key })).body).toEqual({ data: [], has_more: false });
    expect((await call(sandbox, 'POST', `${path}/replay`, { key: tenant.key })).body).toEqual({
      deliveries: 0,
      events: 0,
      has_more: false,
    });
  });
});

describe('a dead-letter replay whose delivery fails again before the replay removes its letter', () => {
  it('keeps the new dead letter: the replay removes only the letter it read', async () => {
    const tenant = await createTenant(sandbox, 'dead-again');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'dg:1', url: `${receiver.url}/dead-again` });
    receiver.answer('/dead-again', 500);
    const deadBefore = sandbox.metrics.total('DeadLetters');
    const published = await publish(sandbox, tenant.key, [{ resource: 'dg:1', type: 'a.b', data: 'again' }]);
    const eventId = published.body.events[0].id as string;
    await receiver.waitFor(() => sandbox.metrics.total('DeadLetters') >= deadBefore + 1, 15_000);

    const delivery = deliveryDeps(sandbox.wiring, sandbox.notifier);
    const deadLetters = delivery.deadLetters;
    // The replay's removal comes late: after the delivery it sent failed both attempts again.
    const late = new Proxy(deadLetters, {
      get(target, property) {
        const value = Reflect.get(target, property);
        if (property !== 'remove') return typeof value === 'function' ? value.bind(target) : value;
        return async (...args: Parameters<DeadLetters['remove']>) => {
          await receiver.waitFor(() => receiver.deliveries('/dead-again').length >= 4, 15_000);
          await receiver.waitFor(() => sandbox.metrics.total('DeadLetters') >= deadBefore + 2, 3_000).catch(() => undefined);
          return target.remove(...args);
        };
      },
    });
    const webhooks = webhookService(sandbox, { delivery: { deadLetters: late } });
    expect(await webhooks.replayDeadLetters(tenant.id, hook.id)).toMatchObject({ deliveries: 1, events: 1 });

    const { letters } = await deadLetters.page(hook.id, Date.now(), 10);
    expect(letters.map((l) => l.message.events.map((e) => e.id))).toEqual([[eventId]]);
    expect(sandbox.metrics.total('DeadLetters')).toBe(deadBefore + 2);
    // A later replay sends it again and removes it.
    receiver.answer('/dead-again', 200);
    expect(await webhooks.replayDeadLetters(tenant.id, hook.id)).toMatchObject({ deliveries: 1 });
    await receiver.waitFor(() => receiver.acceptedEvents('/dead-again').length === 1, 10_000);
    expect((await deadLetters.page(hook.id, Date.now(), 10)).letters).toEqual([]);
  });
});

describe('a page of dead letters for replay', () => {
  it('holds no more than its bytes: the letter that would pass them waits for the next page', async () => {
    const deadLetters = new DeadLetters({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable, retentionDays: 7 });
    const webhookId = 'wh_0000000000000bytes1';
    const now = Date.now();
    for (const n of [1, 2, 3]) {
      const message: DeliveryMessage = {
        deliveryId: `msg_bytes${n}`,
        tenantId: 'ten_bytes',
        webhookId,
        events: [deliveredEventFixture({ id: `evt_bytes${n}`, seq: n, resource: 'b:1', data: 'x'.repeat(400) })],
        attempt: 8,
      };
      expect(await deadLetters.add(message, 'HTTP 500', now + n)).toBe(true);
    }
    const size = (letters: Array<{ message: DeliveryMessage }>) =>
      letters.reduce((sum, l) => sum + Buffer.byteLength(JSON.stringify(l.message)), 0);
    const page = await deadLetters.page(webhookId, now, 100, { bytes: 1_000 });
    expect(page.letters.map((l) => l.message.deliveryId)).toEqual(['msg_bytes1']);
    expect(size(page.letters)).toBeLessThanOrEqual(1_000);
    expect(page.more).toBe(true);
    // Room for two: two.
    const two = await deadLetters.page(webhookId, now, 100, { bytes: 2 * size(page.letters) + 10 });
    expect(two.letters).toHaveLength(2);
  });
});

describe('a webhook deleted while its delivery’s last attempt waits for an answer', () => {
  it('writes no dead letter for it and pages nobody: the delivery is counted as discarded by its owner', async () => {
    const tenant = await createTenant(sandbox, 'deleted-at-last-attempt');
    let hookId = '';
    let attempts = 0;
    receiver.answer('/deleted-at-last', async ({ ping }) => {
      if (ping) return 200;
      // The last attempt: the owner deletes the webhook while it waits for the answer.
      if (++attempts === 2) expect((await call(sandbox, 'DELETE', `/v1/webhooks/${hookId}`, { key: tenant.key })).status).toBe(204);
      return 500;
    });
    hookId = (await createWebhook(sandbox, tenant.key, { resource: 'dl:1', url: `${receiver.url}/deleted-at-last` })).id;
    const deadBefore = sandbox.metrics.total('DeadLetters');
    const discardedBefore = sandbox.metrics.total('EventsDiscardedByOwner', { reason: 'webhook_deleted' });

    await publish(sandbox, tenant.key, [{ resource: 'dl:1', type: 'a.b', data: 1 }]);
    await receiver.waitFor(
      () =>
        sandbox.metrics.total('DeadLetters') > deadBefore ||
        sandbox.metrics.total('EventsDiscardedByOwner', { reason: 'webhook_deleted' }) > discardedBefore,
      15_000,
    );

    expect(attempts).toBe(2);
    expect(sandbox.metrics.total('DeadLetters')).toBe(deadBefore);
    expect(sandbox.metrics.total('EventsDiscardedByOwner', { reason: 'webhook_deleted' })).toBe(discardedBefore + 1);
    const deadLetters = new DeadLetters({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable, retentionDays: 7 });
    expect((await deadLetters.page(hookId, Date.now(), 100)).letters).toEqual([]);
  });
});

describe('a held delivery at its last attempt', () => {
  it('stays held until its dead letter is written: a step that fails or dies between the two writes it once when run again', async () => {
    const tenant = await createTenant(sandbox, 'held-last');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'hl:1', url: `${receiver.url}/held-last` });
    receiver.answer('/held-last', 500);
    const { deliveryDeps } = await import('../../functions/app/runtime.ts');
    const { handleDeliverMessage } = await import('../../functions/app/delivery.ts');
    const { startRelease } = await import('../../functions/app/delivery/chains.ts');
    const sent: DeliverQueueMessage[] = [];
    const deps = {
      ...deliveryDeps(sandbox.wiring, sandbox.notifier),
      switches: NO_SWITCHES,
      queue: { send: async (messages: readonly DeliverQueueMessage[]) => void sent.push(...messages) },
    };
    // Held at its last attempt (the schedule here gives two).
    const message: DeliveryMessage = {
      deliveryId: 'msg_heldlast0000000000',
      tenantId: tenant.id,
      webhookId: hook.id,
      attempt: 2,
      events: [deliveredEventFixture({ id: 'evt_heldlast', seq: 1, resource: 'hl:1', data: 'last words' })],
    };
    expect(await holdDelivery(deps, message)).toEqual([true, true]);
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    await startRelease(deps, webhook);
    const [step] = sent.splice(0);
    const deadBefore = sandbox.metrics.total('DeadLetters');
    // DynamoDB refuses the dead letter once (throttled), then the function dies once
    // after writing it: each time the step fails, and SQS delivers it again.
    const failures = ['dead letter', 'removal'];
    class FailingDeadLetters extends DeadLetters {
      override async add(...args: Parameters<DeadLetters['add']>): Promise<boolean> {
        if (failures[0] === 'dead letter' && failures.shift()) throw new Error('ProvisionedThroughputExceededException');
        return super.add(...args);
      }
    }
    class FailingHeld extends HeldDeliveries {
      override async remove(...args: Parameters<HeldDeliveries['remove']>): Promise<boolean> {
        if (failures[0] === 'removal' && failures.shift()) throw new Error('the function died');
        return super.remove(...args);
      }
    }
    const options = { client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable, retentionDays: 7 };
    const failing = {
      ...deps,
      ...deliveryStores(options),
      deadLetters: new FailingDeadLetters(options),
      held: new FailingHeld(options),
    };
    await expect(handleDeliverMessage(failing, step as DeliverQueueMessage)).rejects.toThrow('ProvisionedThroughputExceededException');
    expect((await deps.held.page(hook.id, 10, Date.now())).live).toHaveLength(1);
    expect((await deps.deadLetters.page(hook.id, Date.now(), 100)).letters).toEqual([]);
    // Each time a visibility timeout later, as SQS hands back a record that failed.
    const visibilityMs = DELIVER_QUEUE.visibilityTimeoutSeconds * 1000;
    const handedBack = (times: number) => ({ now: () => Date.now() + times * visibilityMs });
    await expect(handleDeliverMessage({ ...failing, ...handedBack(1) }, step as DeliverQueueMessage)).rejects.toThrow('the function died');
    expect(await handleDeliverMessage({ ...deps, ...handedBack(2) }, step as DeliverQueueMessage)).toBe('released');

    const dead = (await deps.deadLetters.page(hook.id, Date.now(), 100)).letters;
    expect(dead.map((d) => d.message.events.map((e) => e.data))).toEqual([['last words']]);
    expect((await deps.held.page(hook.id, 10, Date.now())).live).toEqual([]);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(0);
    expect(sandbox.metrics.total('DeadLetters')).toBe(deadBefore + 1);
  });
});

describe('holding', () => {
  it('counts a delivery held twice (SQS delivers at least once) only once', async () => {
    const { deliveryDeps } = await import('../../functions/app/runtime.ts');
    const { handleDeliverMessage } = await import('../../functions/app/delivery.ts');
    const tenant = await createTenant(sandbox, 'twice');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'h:1', url: `${receiver.url}/twice` });
    await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { status: 'disabled' } });
    const deps = deliveryDeps(sandbox.wiring, sandbox.notifier);
    const message = {
      deliveryId: 'msg_twice00000000000000',
      tenantId: tenant.id,
      webhookId: hook.id,
      attempt: 1,
      events: [{ id: 'evt_twice', seq: 1, resource: 'h:1', parents: [], type: 'a.b', data: 1, created_at: new Date().toISOString() }],
    };
    expect(await handleDeliverMessage(deps, message)).toBe('held');
    expect(await handleDeliverMessage(deps, message)).toBe('held');
    expect((await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held).toBe(1);
  });
});

describe('a dead-letter replay to a webhook that holds its deliveries', () => {
  it('sends each dead letter as the delivery it was once it is released: its own msg_ id, not merged with the others', async () => {
    const tenant = await createTenant(sandbox, 'dead-held');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'dh:1', url: `${receiver.url}/dead-held` });
    receiver.answer('/dead-held', 500);
    const deadBefore = sandbox.metrics.total('DeadLetters');
    for (const n of [1, 2]) {
      await publish(sandbox, tenant.key, [{ resource: 'dh:1', type: 'a.b', data: n }]);
      await receiver.waitFor(() => sandbox.metrics.total('DeadLetters') >= deadBefore + n, 15_000);
    }
    const path = `/v1/webhooks/${hook.id}/dead-letters`;
    const letters = (await call(sandbox, 'GET', path, { key: tenant.key })).body.data as Array<{ delivery_id: string }>;
    expect(letters).toHaveLength(2);

    // Its owner disabled it while fixing the endpoint: the replay's deliveries are held, and released on re-enabling.
    expect((await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { status: 'disabled' } })).status).toBe(200);
    expect((await call(sandbox, 'POST', `${path}/replay`, { key: tenant.key })).body).toMatchObject({ deliveries: 2 });
    let held = 0;
    for (let i = 0; i < 100 && held < 2; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      held = (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held;
    }
    expect(held).toBe(2);
    receiver.answer('/dead-held', 200);
    expect((await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { status: 'active' } })).status).toBe(200);
    await receiver.waitFor(() => receiver.acceptedEvents('/dead-held').length === 2, 10_000);
    const ids = receiver
      .accepted('/dead-held')
      .filter((d) => d.json.events?.[0]?.type === 'a.b')
      .map((d) => d.headers['webhook-id']);
    expect(ids.sort()).toEqual(letters.map((l) => l.delivery_id).sort());
  });
});

describe('what on-call reads of a dead letter', () => {
  it("names the delivery's events and their resources in the log line, which the admin key cannot list", async () => {
    // Prepare: the delivery stage with a log that keeps its lines, and an endpoint that fails.
    const { handleDeliverMessage } = await import('../../functions/app/delivery.ts');
    const tenant = await createTenant(sandbox, 'dead-logged');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'dl:0', url: `${receiver.url}/dead-logged` });
    receiver.answer('/dead-logged', 500);
    const lines: Array<{ message: string; fields: Record<string, unknown> }> = [];
    const note = (message: string, fields?: Readonly<Record<string, unknown>>) => void lines.push({ message, fields: { ...fields } });
    const deps = { ...deliveryDeps(sandbox.wiring, sandbox.notifier), logger: { info: note, warn: note, error: note } };
    const message: DeliveryMessage = {
      deliveryId: 'msg_deadlogged0000000',
      tenantId: tenant.id,
      webhookId: hook.id,
      // The schedule's last attempt (two in this file's config).
      attempt: 2,
      events: [
        deliveredEventFixture({ id: 'evt_deadlogged1', seq: 4, resource: 'dl:1', parents: ['dl:0'] }),
        deliveredEventFixture({ id: 'evt_deadlogged2', seq: 9, resource: 'dl:2', parents: ['dl:0'] }),
      ],
    };

    // Act
    expect(await handleDeliverMessage(deps, message)).toBe('dead_lettered');

    // Assert: the line says which events of which resources the tenant did not get.
    expect(lines.find((l) => l.message === 'Delivery dead-lettered after its last attempt')?.fields).toMatchObject({
      tenant: tenant.id,
      webhook: hook.id,
      delivery: message.deliveryId,
      attempt: 2,
      events: ['evt_deadlogged1', 'evt_deadlogged2'],
      resources: ['dl:1', 'dl:2'],
    });
  });
});

describe('a page of dead letters listed', () => {
  it('reads at most what one DynamoDB query reads, however large the letters: the rest are on the next pages', async () => {
    const tenant = await createTenant(sandbox, 'large-letters');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'll:1', url: `${receiver.url}/large-letters` });
    const deadLetters = new DeadLetters({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable, retentionDays: 7 });
    const now = Date.now();
    // Twelve letters of 200 KB of events each (a delivery holds up to 256 KiB): 2.4 MB.
    for (let n = 1; n <= 12; n++) {
      const message: DeliveryMessage = {
        deliveryId: `msg_large${String(n).padStart(14, '0')}`,
        tenantId: tenant.id,
        webhookId: hook.id,
        events: [deliveredEventFixture({ id: `evt_large${n}`, seq: n, resource: 'll:1', data: 'x'.repeat(200_000) })],
        attempt: 8,
      };
      expect(await deadLetters.add(message, 'HTTP 500', now + n)).toBe(true);
    }
    const path = `/v1/webhooks/${hook.id}/dead-letters`;

    const pages: Array<Array<{ delivery_id: string }>> = [];
    let after: string | undefined;
    do {
      const page = await call(sandbox, 'GET', `${path}?limit=100${after === undefined ? '' : `&after=${after}`}`, { key: tenant.key });
      expect(page.status).toBe(200);
      pages.push(page.body.data);
      after = page.body.has_more ? page.body.next : undefined;
    } while (after !== undefined && pages.length < 20);

    // At most 1 MiB of letters a page (each 200 KB): 5 of them, and every letter once over the pages.
    expect(Math.max(...pages.map((p) => p.length))).toBeLessThanOrEqual(5);
    expect(pages.flat().map((l) => l.delivery_id)).toEqual(
      Array.from({ length: 12 }, (_, i) => `msg_large${String(i + 1).padStart(14, '0')}`),
    );
  });
});

describe('dead-letter replays of one webhook sent at once', () => {
  it('send each dead letter once between them: one replays the letters, the others find them taken', async () => {
    const tenant = await createTenant(sandbox, 'dead-at-once');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'do:1', url: `${receiver.url}/dead-at-once` });
    const deadLetters = new DeadLetters({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable, retentionDays: 7 });
    const now = Date.now();
    const ids = [1, 2, 3].map((n) => `msg_deadatonce${String(n).padStart(10, '0')}`);
    for (const [i, deliveryId] of ids.entries()) {
      const message: DeliveryMessage = {
        deliveryId,
        tenantId: tenant.id,
        webhookId: hook.id,
        events: [deliveredEventFixture({ id: `evt_deadatonce${i}`, seq: i + 1, resource: 'do:1' })],
        attempt: 8,
      };
      expect(await deadLetters.add(message, 'HTTP 500', now + i)).toBe(true);
    }
    const path = `/v1/webhooks/${hook.id}/dead-letters/replay`;

    const answers = await Promise.all(Array.from({ length: 4 }, () => call(sandbox, 'POST', path, { key: tenant.key })));

    // Each letter goes once: the replays answered 202 sent three between them, and a
    // replay refused while another held the webhook's replay budget says when to try again.
    const replayed = answers.filter((a) => a.status === 202);
    expect(replayed.reduce((sum, a) => sum + a.body.deliveries, 0)).toBe(3);
    for (const refused of answers.filter((a) => a.status !== 202)) {
      expectError(refused, 429, 'rate_limited');
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    }
    await receiver.waitFor(() => receiver.deliveries('/dead-at-once').length >= 3, 10_000);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const sent = receiver.deliveries('/dead-at-once');
    expect(sent.map((d) => d.headers['webhook-id']).sort()).toEqual(ids);
    expect((await deadLetters.page(hook.id, Date.now(), 10)).letters).toEqual([]);
  });
});

describe('a dead-letter replay still sending when its replay budget’s window ends', () => {
  it('holds its letters until it has removed them: a replay in the next window is refused, not sent the same letters', async () => {
    const tenant = await createTenant(sandbox, 'dead-next-window');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'dn:1', url: `${receiver.url}/dead-next-window` });
    const deadLetters = new DeadLetters({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable, retentionDays: 7 });
    const now = Date.now();
    for (const n of [1, 2, 3]) {
      const message: DeliveryMessage = {
        deliveryId: `msg_deadnextwindow${String(n).padStart(6, '0')}`,
        tenantId: tenant.id,
        webhookId: hook.id,
        events: [deliveredEventFixture({ id: `evt_deadnextwindow${n}`, seq: n, resource: 'dn:1' })],
        attempt: 8,
      };
      expect(await deadLetters.add(message, 'HTTP 500', now + n)).toBe(true);
    }
    // The first replay's sends take until `open`; its budget's window is a second long.
    let sends = 0;
    let open: () => void = () => undefined;
    const opened = new Promise<void>((resolve) => {
      open = resolve;
    });
    const sent: DeliverQueueMessage[] = [];
    const webhooks = webhookService(sandbox, {
      service: { replayBudget: { units: 2_000, windowMs: 1_000 } },
      delivery: {
        queue: {
          send: async (messages: readonly DeliverQueueMessage[]) => {
            if (sends++ === 0) await opened;
            sent.push(...messages);
          },
        },
      },
    });

    const first = webhooks.replayDeadLetters(tenant.id, hook.id);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const second = await webhooks.replayDeadLetters(tenant.id, hook.id).catch((error: unknown) => error);
    open();

    expect(await first).toMatchObject({ deliveries: 3 });
    expect(second).toMatchObject({ code: 'rate_limited', retryAfterSeconds: expect.any(Number) });
    expect(new Set(sent.map((m) => (m as DeliveryMessage).deliveryId)).size).toBe(3);
    expect(sent).toHaveLength(3);
    // Done, it lets the next one in: nothing is left to send.
    expect(await webhooks.replayDeadLetters(tenant.id, hook.id)).toMatchObject({ deliveries: 0 });
  });
});
