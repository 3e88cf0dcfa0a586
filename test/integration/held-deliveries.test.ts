/**
 * Held deliveries: held in order while an endpoint is quarantined, disabled or paused,
 * released by probes and release steps (lost chains revived), past the cap collapsed
 * into one `sluice.gap` marker per resource, and removed with a deleted webhook. The
 * per-endpoint rate and a slow endpoint's pace are in endpoint-pace.test.ts.
 */
import { BatchWriteCommand, DeleteCommand, PutCommand, QueryCommand } from '@aws-sdk/lib-dynamodb';
import { describe, expect, it } from 'vitest';
import { GapCounts } from '../../functions/adapters/gap-counts.ts';
import { SwitchStore } from '../../functions/adapters/switch-store.ts';
import type { WebhookStore } from '../../functions/adapters/webhook-store.ts';
import { startRelease } from '../../functions/app/delivery/chains.ts';
import type { DeliveryDeps } from '../../functions/app/delivery/deps.ts';
import { applyHealth } from '../../functions/app/delivery/health.ts';
import { handleDeliverMessage } from '../../functions/app/delivery.ts';
import { deliveryDeps, deliveryStores } from '../../functions/app/runtime.ts';
import { switchId } from '../../functions/app/switches.ts';
import { WebhookService } from '../../functions/app/webhooks.ts';
import { DEFAULT_CONFIG } from '../../functions/core/config.ts';
import { mergeDeliveries } from '../../functions/core/deliveries.ts';
import type { DeliverQueueMessage, DeliveryMessage, ReleaseMessage } from '../../functions/core/model.ts';
import { DELIVER_QUEUE } from '../../functions/definitions/queues.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook, publish } from '../support/api.ts';
import { deliveredEventFixture, resourceDeliveryFixture } from '../support/fixtures.ts';
import { holdDelivery, QUICK_HOLDS } from '../support/held.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';
import { deliveryDepsAt } from '../support/services.ts';

let sandbox: Sandbox;
let receiver: Receiver;

withSandbox({ config: QUICK_HOLDS }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

const okEvents = (path: string) => receiver.acceptedEvents(path);
/** How long SQS keeps a record that failed before the delivery function is handed it again. */
const VISIBILITY_MS = DELIVER_QUEUE.visibilityTimeoutSeconds * 1000;
/** Delivery deps at another time (see deliveryDepsAt). */
const later = (offsetMs: number, send?: DeliveryDeps['send']) => deliveryDepsAt(sandbox, offsetMs, send);

/** The deployed defaults of the retry schedule, quarantine and probes. */
const pick = (c: typeof DEFAULT_CONFIG) => ({
  retryScheduleSeconds: c.retryScheduleSeconds,
  quarantineAfterFailures: c.quarantineAfterFailures,
  probeIntervalMinSeconds: c.probeIntervalMinSeconds,
  probeIntervalMaxSeconds: c.probeIntervalMaxSeconds,
  failingAttemptIntervalMs: c.failingAttemptIntervalMs,
  deliveryTimeoutMs: c.deliveryTimeoutMs,
});

describe('held deliveries', () => {
  it('keeps at most the cap, and stands for the rest with one gap marker per resource, delivered after them', async () => {
    const tenant = await createTenant(sandbox, 'overflow');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'o:1', url: `${receiver.url}/overflow` });
    receiver.answer('/overflow', 'hang');
    // The first event's failure quarantines the endpoint; the next ones are held.
    await publish(sandbox, tenant.key, [{ resource: 'o:1', type: 'a.b', data: 0 }]);
    let state = '';
    for (let i = 0; i < 50 && state !== 'quarantined'; i++) {
      state = (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.state;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(state).toBe('quarantined');
    for (let i = 1; i <= 5; i++) {
      await publish(sandbox, tenant.key, [{ resource: 'o:1', type: 'a.b', data: i }]);
      await new Promise((resolve) => setTimeout(resolve, 150));
    }
    await receiver.waitFor(() => sandbox.metrics.total('EventsHeldOverflow') >= 4, 10_000);
    expect((await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held).toBe(2);

    receiver.answer('/overflow', 200);
    await receiver.waitFor(() => okEvents('/overflow').some((e) => e.type === 'sluice.gap'), 15_000);
    const delivered = okEvents('/overflow');
    const gap = delivered.find((e) => e.type === 'sluice.gap');
    expect(gap).toMatchObject({ resource: 'o:1', data: { dropped: 4, reason: 'held_overflow' } });
    // The two held events (the one that failed, and the next) came first, in order; the marker stands for the other four.
    const real = delivered.filter((e) => e.type === 'a.b');
    expect(real.map((e) => e.seq)).toEqual([1, 2]);
    expect(delivered.indexOf(gap as (typeof delivered)[number])).toBe(delivered.length - 1);
  }, 40_000);

  it('counts what a webhook sluice disabled cannot hold apart from what pages (webhook-disabled paged once), with a gap marker for it', async () => {
    const tenant = await createTenant(sandbox, 'gone-overflow');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'go:1', url: `${receiver.url}/gone-overflow` });
    receiver.answer('/gone-overflow', 410);
    // The first event's 410 disables the webhook (sluice's doing, not its owner's); it and the next are held.
    await publish(sandbox, tenant.key, [{ resource: 'go:1', type: 'a.b', data: 0 }]);
    let status = '';
    for (let i = 0; i < 50 && status !== 'disabled'; i++) {
      status = (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.status;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(status).toBe('disabled');
    const overflowBefore = sandbox.metrics.total('EventsHeldOverflow');
    for (let i = 1; i <= 5; i++) {
      await publish(sandbox, tenant.key, [{ resource: 'go:1', type: 'a.b', data: i }]);
      await new Promise((resolve) => setTimeout(resolve, 150));
    }
    await receiver.waitFor(() => sandbox.metrics.total('EventsDiscardedWhileDisabled') >= 4, 10_000);
    expect(sandbox.metrics.total('EventsDiscardedWhileDisabled')).toBe(4);
    expect(sandbox.metrics.total('EventsHeldOverflow')).toBe(overflowBefore);

    // Its owner's endpoint works again and they enable it: what it held, then the marker for the rest.
    receiver.answer('/gone-overflow', 200);
    await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { status: 'active' } });
    await receiver.waitFor(() => okEvents('/gone-overflow').some((e) => e.type === 'sluice.gap'), 15_000);
    const delivered = okEvents('/gone-overflow');
    expect(delivered.filter((e) => e.type === 'a.b').map((e) => e.seq)).toEqual([1, 2]);
    expect(delivered.at(-1)).toMatchObject({ type: 'sluice.gap', resource: 'go:1', data: { dropped: 4, reason: 'held_overflow' } });
  }, 40_000);

  it('frees the places of held deliveries past the retention period for what comes next, with a retention marker for them', async () => {
    const tenant = await createTenant(sandbox, 'expired-held');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'eh:1', url: `${receiver.url}/expired-held` });
    // Its owner disabled it: what comes is held, up to its cap (2 here).
    await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { status: 'disabled' } });
    const { deps } = later(0);
    const message = (n: number): DeliveryMessage => ({
      deliveryId: `msg_eh${n}`,
      tenantId: tenant.id,
      webhookId: hook.id,
      events: [deliveredEventFixture({ id: `evt_eh${n}`, seq: n, resource: 'eh:1' })],
      attempt: 1,
    });
    // The cap filled 8 days ago: both held deliveries are past the retention period (7 days), not yet deleted by TTL.
    const eightDaysAgo = Date.now() - 8 * 86_400_000;
    for (const n of [1, 2]) {
      expect(await deps.webhooks.countHeld(tenant.id, hook.id, 1, 2)).toBeDefined();
      expect(await deps.held.hold(message(n), eightDaysAgo)).toBe(true);
    }
    const droppedBefore = sandbox.metrics.total('EventsDropped');
    const discardedBefore = sandbox.metrics.total('EventsDiscardedByOwner');

    // Act: three deliveries come.
    for (const n of [3, 4, 5]) expect(await handleDeliverMessage(deps, message(n))).toBe('held');

    // Assert: the two expired ones made way for two new ones, counted for a retention marker; the third found the cap full of live ones.
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(2);
    const held = await deps.held.page(hook.id, 10, Date.now());
    expect(held.live.map((h) => h.message.deliveryId)).toEqual(['msg_eh3', 'msg_eh4']);
    expect(held.expired).toEqual([]);
    expect(sandbox.metrics.total('EventsDropped') - droppedBefore).toBe(2);
    expect(sandbox.metrics.total('EventsDiscardedByOwner') - discardedBefore).toBe(1);
    expect(await deps.gaps.owed(hook.id, Date.now())).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ resource: 'eh:1', reason: 'retention', dropped: 2 }),
        expect.objectContaining({ resource: 'eh:1', reason: 'held_overflow', dropped: 1 }),
      ]),
    );
  });

  it('counts a gap marker past the cap for the events it stood for, and not as a held-overflow event (which pages)', async () => {
    const tenant = await createTenant(sandbox, 'marker-overflow');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'mo:0', url: `${receiver.url}/marker-overflow` });
    const { deps } = later(0);
    // The webhook holds as many as its cap (2 here): what comes next is held behind them, or counted.
    for (const seq of [1, 2]) {
      const event = deliveredEventFixture({ id: `evt_mo${seq}`, seq, resource: 'mo:1', parents: ['mo:0'], data: seq });
      expect(
        await holdDelivery(deps, { deliveryId: `msg_mo${seq}`, tenantId: tenant.id, webhookId: hook.id, events: [event], attempt: 1 }, 2),
      ).toEqual([true, true]);
    }
    const overflowBefore = sandbox.metrics.total('EventsHeldOverflow');
    // A drop switch's marker for 7 events reaches it.
    const marker: DeliveryMessage = {
      deliveryId: 'msg_mo0',
      tenantId: tenant.id,
      webhookId: hook.id,
      events: [
        {
          id: 'evt_mo0',
          resource: 'mo:2',
          type: 'sluice.gap',
          data: { dropped: 7, reason: 'switch_drop' },
          created_at: new Date().toISOString(),
        },
      ],
      attempt: 1,
    };
    expect(await handleDeliverMessage(deps, marker)).toBe('held');
    expect(await deps.gaps.owed(hook.id, Date.now())).toMatchObject([{ resource: 'mo:2', reason: 'switch_drop', dropped: 7 }]);
    // Its events were counted (EventsDropped) when they were dropped: no event overflowed here.
    expect(sandbox.metrics.total('EventsHeldOverflow')).toBe(overflowBefore);
  });
});

describe('deliveries past the held cap', () => {
  it('are logged with the tenant, webhook and resource, once a minute per webhook, so on-call can find whose overflow pages', async () => {
    const tenant = await createTenant(sandbox, 'overflow-log');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'ol:0', url: `${receiver.url}/overflow-log` });
    const admin = { key: sandbox.adminKey };
    await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin,
      body: { scope: 'webhook', tenant: tenant.id, target: hook.id, action: 'pause', reason: 'test' },
    });
    const warned: Array<[string, unknown]> = [];
    const deps = {
      ...deliveryDeps(sandbox.wiring, sandbox.notifier),
      logger: { info: () => {}, warn: (message: string, fields: unknown) => void warned.push([message, fields]), error: () => {} },
    };
    // Four deliveries to a paused webhook whose cap is 2: two held, two past the cap.
    for (let seq = 1; seq <= 4; seq++) {
      const events = [deliveredEventFixture({ id: `evt_ol${seq}`, seq, resource: 'ol:1', parents: ['ol:0'] })];
      await handleDeliverMessage(deps, { deliveryId: `msg_ol${seq}`, tenantId: tenant.id, webhookId: hook.id, events, attempt: 1 });
    }
    expect(sandbox.metrics.total('EventsHeldOverflow')).toBeGreaterThanOrEqual(2);
    const overflow = warned.filter(([, fields]) => (fields as { webhook?: string }).webhook === hook.id);
    expect(overflow).toHaveLength(1);
    expect(overflow[0]?.[1]).toMatchObject({ tenant: tenant.id, webhook: hook.id, resource: 'ol:1', held_cap: 2 });
    // Its endpoint is healthy: the line says a pause holds it, not that it is sent more than its rate (see the runbook).
    expect(overflow[0]?.[1]).toMatchObject({ state: 'healthy', switch: 'pause' });
  });
});

describe('merged deliveries held', () => {
  it('holds a delivery of several resources as one part per resource (one count for all), and releases them together, each in seq order', async () => {
    const tenant = await createTenant(sandbox, 'merged');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'm:0', url: `${receiver.url}/merged` });
    const admin = { key: sandbox.adminKey };
    const pause = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin,
      body: { scope: 'webhook', tenant: tenant.id, target: hook.id, action: 'pause', reason: 'test' },
    });
    const event = (resource: string, seq: number) =>
      deliveredEventFixture({ id: `evt_${resource.replace(':', '')}${seq}`, seq, resource, parents: ['m:0'], data: { resource, seq } });
    // What a distributor invocation sends when two objects' turns share the webhook.
    const [merged] = mergeDeliveries([
      { deliveryId: 'msg_a', tenantId: tenant.id, webhookId: hook.id, events: [event('m:2', 1), event('m:2', 2)], attempt: 1 },
      { deliveryId: 'msg_b', tenantId: tenant.id, webhookId: hook.id, events: [event('m:1', 1)], attempt: 1 },
    ]);
    const deps = deliveryDeps(sandbox.wiring, sandbox.notifier);
    expect(await handleDeliverMessage(deps, merged as DeliveryMessage)).toBe('held');
    const held = (await deps.held.page(hook.id, 10, Date.now())).live;
    expect(held.map((h) => h.message.events.map((e) => `${e.resource}/${'seq' in e ? e.seq : 0}`))).toEqual([
      ['m:1/1'],
      ['m:2/1', 'm:2/2'],
    ]);
    expect((await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held).toBe(2);

    expect((await call(sandbox, 'DELETE', `/v1/admin/switches/${pause.body.id}`, admin)).status).toBe(204);
    await receiver.waitFor(() => okEvents('/merged').length === 3, 10_000);
    const received = okEvents('/merged');
    expect(received.filter((e) => e.resource === 'm:2').map((e) => e.seq)).toEqual([1, 2]);
    expect(received.filter((e) => e.resource === 'm:1').map((e) => e.seq)).toEqual([1]);
    // Released together: first attempts held apart go out in one delivery, each resource in order.
    expect(receiver.deliveries('/merged').filter((d) => d.json.events.some((e) => e.type === 'a.b'))).toHaveLength(1);
    // The count goes down after each answered release.
    let remaining = -1;
    for (let i = 0; i < 50 && remaining !== 0; i++) {
      remaining = (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held;
      if (remaining !== 0) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(remaining).toBe(0);
  });
});

describe('replay after a release was sent twice', () => {
  it('replays each logged event once, even when two logged deliveries share it', async () => {
    const tenant = await createTenant(sandbox, 'relogged');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'r:0', url: `${receiver.url}/relogged` });
    const { deliveryLog } = deliveryDeps(sandbox.wiring, sandbox.notifier);
    const event = (n: number) => deliveredEventFixture({ id: `evt_relogged${n}`, seq: n, resource: 'r:1', parents: ['r:0'] });
    const since = Date.now();
    const attempt = { id: 'att_x', delivery_id: 'msg_x', attempt: 1, status_code: 500, duration_ms: 1, error: 'HTTP 500', at: '' };
    // A release that failed after it was logged, then went out again with one more event.
    await deliveryLog.add(
      { deliveryId: 'msg_one', tenantId: tenant.id, webhookId: hook.id, events: [event(1), event(2)], attempt: 1 },
      since + 1,
      attempt,
    );
    await deliveryLog.add(
      { deliveryId: 'msg_two', tenantId: tenant.id, webhookId: hook.id, events: [event(1), event(2), event(3)], attempt: 1 },
      since + 2,
      attempt,
    );
    const replay = await call(sandbox, 'POST', `/v1/webhooks/${hook.id}/replay`, {
      key: tenant.key,
      body: { since: new Date(since).toISOString() },
    });
    expect(replay.body).toEqual({ events: 3 });
    await receiver.waitFor(() => okEvents('/relogged').filter((e) => e.type === 'a.b').length >= 3, 10_000);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(
      okEvents('/relogged')
        .filter((e) => e.type === 'a.b')
        .map((e) => e.seq),
    ).toEqual([1, 2, 3]);
  });
});

describe('the replay log', () => {
  it("keeps a delivery's events compressed, and replays them and those of items logged before it was", async () => {
    const tenant = await createTenant(sandbox, 'compressed');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'z:0', url: `${receiver.url}/compressed` });
    const { deliveryLog } = deliveryDeps(sandbox.wiring, sandbox.notifier);
    const event = (n: number) =>
      deliveredEventFixture({
        id: `evt_compressed${n}`,
        seq: n,
        resource: `z:${n}`,
        parents: ['z:0'],
        data: { title: `Event number ${n}`, state: 'open' },
      });
    const since = Date.now();
    const attempt = { id: 'att_z', delivery_id: 'msg_z', attempt: 1, status_code: 200, duration_ms: 1, error: null, at: '' };
    const events = Array.from({ length: 20 }, (_, i) => event(i + 1));
    await deliveryLog.add({ deliveryId: 'msg_z', tenantId: tenant.id, webhookId: hook.id, events, attempt: 1 }, since + 1, attempt);
    // An item as the log wrote it before: its events as JSON text.
    await sandbox.wiring.dynamo.send(
      new PutCommand({
        TableName: sandbox.wiring.controlTable,
        Item: {
          pk: `deliveries#${hook.id}`,
          sk: `${String(since + 2).padStart(15, '0')}#msg_old`,
          ...attempt,
          delivery_id: 'msg_old',
          events: JSON.stringify([event(21)]),
          expires_at: Math.floor(since / 1000) + 3_600,
          expires_at_ms: since + 3_600_000,
        },
      }),
    );
    const { Items } = await sandbox.wiring.dynamo.send(
      new QueryCommand({
        TableName: sandbox.wiring.controlTable,
        KeyConditionExpression: 'pk = :pk',
        ExpressionAttributeValues: { ':pk': `deliveries#${hook.id}` },
      }),
    );
    const logged = Items?.find((item) => item.delivery_id === 'msg_z');
    expect(logged?.events).toBeUndefined();
    // Under a third of the JSON: about 1 KiB billed instead of about 4.
    expect((logged?.events_z as Uint8Array).byteLength).toBeLessThan(JSON.stringify(events).length / 3);
    const replay = await call(sandbox, 'POST', `/v1/webhooks/${hook.id}/replay`, {
      key: tenant.key,
      body: { since: new Date(since).toISOString() },
    });
    expect(replay.body).toEqual({ events: 21 });
    await receiver.waitFor(() => okEvents('/compressed').filter((e) => e.type === 'a.b').length >= 21, 10_000);
    expect(
      okEvents('/compressed')
        .filter((e) => e.type === 'a.b')
        .map((e) => e.id)
        .sort(),
    ).toEqual([...events, event(21)].map((e) => e.id).sort());
  });
});

describe('a chain of probes or release steps that was lost', () => {
  const message = resourceDeliveryFixture;

  it('is noticed by a delivery held behind it: a quarantined webhook whose probe is long overdue is probed again', async () => {
    const tenant = await createTenant(sandbox, 'lost-probes');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'lp:1', url: `${receiver.url}/lost-probes` });
    const { deps, sent } = later(0);
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    const now = Date.now();
    // Quarantined 30 minutes ago; its next probe was due 21 minutes ago and never came.
    const quarantined = {
      ...webhook.health,
      state: 'quarantined' as const,
      quarantinedAt: now - 30 * 60_000,
      probeIntervalSeconds: 60,
      nextProbeAt: now - 21 * 60_000,
    };
    expect(await deps.webhooks.saveHealth(webhook, quarantined, { probeToken: 'msg_lost' })).toBe(true);

    expect(await handleDeliverMessage(deps, message(tenant.id, hook.id, 1, 'lp:1'))).toBe('held');

    const probes = sent.splice(0) as Array<{ kind?: string; token?: string }>;
    expect(probes).toMatchObject([{ kind: 'probe', webhookId: hook.id }]);
    const revived = await deps.webhooks.get(tenant.id, hook.id);
    expect(revived?.probeToken).toBe(probes[0]?.token);
    expect(revived?.probeToken).not.toBe('msg_lost');
    // The next delivery finds the new chain on time: no second one.
    expect(await handleDeliverMessage(deps, message(tenant.id, hook.id, 2, 'lp:1'))).toBe('held');
    expect(sent).toEqual([]);
  });

  it('is noticed by a delivery held behind it: a healthy webhook whose release went quiet releases again, in order', async () => {
    const tenant = await createTenant(sandbox, 'lost-release');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'lr:1', url: `${receiver.url}/lost-release` });
    const { deps, sent } = later(0);
    // One delivery held, for a release chain whose message was lost (it never took a step).
    expect(await holdDelivery(deps, message(tenant.id, hook.id, 1, 'lr:1'))).toEqual([true, true]);
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    expect(await deps.webhooks.saveHealth(webhook, webhook.health, { releaseToken: 'msg_lost', releaseAt: Date.now() - 21 * 60_000 })).toBe(
      true,
    );

    expect(await handleDeliverMessage(deps, message(tenant.id, hook.id, 2, 'lr:1'))).toBe('held');

    const [release, ...rest] = sent.splice(0) as Array<{ kind?: string; token?: string }>;
    expect(release).toMatchObject({ kind: 'release', webhookId: hook.id });
    expect(rest).toEqual([]);
    // The new chain is on time: the next delivery held behind it would start none.
    const revived = await deps.webhooks.get(tenant.id, hook.id);
    expect(revived?.releaseToken).toBe(release?.token);
    expect(Date.now() - (revived?.releaseAt ?? 0)).toBeLessThan(5_000);
    // The new chain's steps, as the deliver queue would run them, until it asks for no more.
    let next: unknown[] = [release];
    for (let step = 0; step < 5 && next.length > 0; step++) {
      for (const m of next) await handleDeliverMessage(deps, m as DeliveryMessage);
      next = sent.splice(0).filter((m) => (m as { kind?: string }).kind === 'release');
    }
    await receiver.waitFor(() => okEvents('/lost-release').length === 2, 5_000);
    expect(okEvents('/lost-release').map((e) => e.data)).toEqual([1, 2]);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(0);
  });
});

describe('a lost release chain noticed as another container changes the endpoint health', () => {
  it('is started again all the same: the start refused by that write is tried on the webhook read again', async () => {
    const tenant = await createTenant(sandbox, 'lost-raced');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'lx:1', url: `${receiver.url}/lost-raced` });
    const { deps, sent } = later(0);
    const message = (n: number): DeliveryMessage => ({
      deliveryId: `msg_lx${n}`,
      tenantId: tenant.id,
      webhookId: hook.id,
      events: [deliveredEventFixture({ id: `evt_lx${n}`, seq: n, resource: 'lx:1', data: n })],
      attempt: 1,
    });
    // One delivery held, for a release chain whose message was lost (it never took a step).
    expect(await holdDelivery(deps, message(1))).toEqual([true, true]);
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    expect(await deps.webhooks.saveHealth(webhook, webhook.health, { releaseToken: 'msg_lost', releaseAt: Date.now() - 21 * 60_000 })).toBe(
      true,
    );
    // A second container's delivery succeeds a minute after the last success was written:
    // its health write lands just before this container's start of a new chain.
    const other = later(61_000).deps;
    const store = deps.webhooks as WebhookStore;
    let raced = false;
    const racing = {
      ...deps,
      webhooks: new Proxy(store, {
        get: (target, property) => {
          const value = Reflect.get(target, property);
          if (property !== 'saveHealth') return typeof value === 'function' ? value.bind(target) : value;
          return async (...args: Parameters<WebhookStore['saveHealth']>) => {
            if (!raced) {
              raced = true;
              const seen = await other.webhooks.get(tenant.id, hook.id);
              if (!seen) throw new Error('no webhook');
              expect((await applyHealth(other, seen, { type: 'success', now: other.now() })).healthVersion).toBe(seen.healthVersion + 1);
            }
            return store.saveHealth(...args);
          };
        },
      }),
    };

    expect(await handleDeliverMessage(racing, message(2))).toBe('held');
    expect(raced).toBe(true);

    const release = sent.splice(0).filter((m) => (m as { kind?: string }).kind === 'release');
    expect(release).toMatchObject([{ kind: 'release', webhookId: hook.id }]);
    let next: unknown[] = release;
    for (let step = 0; step < 5 && next.length > 0; step++) {
      for (const m of next) await handleDeliverMessage(deps, m as DeliveryMessage);
      next = sent.splice(0).filter((m) => (m as { kind?: string }).kind === 'release');
    }
    await receiver.waitFor(() => okEvents('/lost-raced').length === 2, 5_000);
    expect(okEvents('/lost-raced').map((e) => e.data)).toEqual([1, 2]);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(0);
  });
});

describe('held deliveries that outlive the retention period, and a held count that drifted', () => {
  it('drops held deliveries past the retention period from the count, and a retention gap marker stands for them', async () => {
    const tenant = await createTenant(sandbox, 'held-expired');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'x:0', url: `${receiver.url}/held-expired` });
    const event = (seq: number) => deliveredEventFixture({ id: `evt_x${seq}`, seq, resource: 'x:1', parents: ['x:0'], data: seq });
    const deps = deliveryDeps(sandbox.wiring, sandbox.notifier);
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    // Two deliveries held (as a quarantine or pause would), now a week and a day old.
    for (const seq of [1, 2]) {
      const message: DeliveryMessage = {
        deliveryId: `msg_x${seq}`,
        tenantId: tenant.id,
        webhookId: hook.id,
        events: [event(seq)],
        attempt: 1,
      };
      expect(await holdDelivery(deps, message)).toEqual([true, true]);
    }
    const { deps: eightDaysOn, sent } = later(8 * 86_400_000);
    await startRelease(eightDaysOn, webhook);
    // The release steps, as the deliver queue would run them, until none asks for another.
    const deliveries: unknown[] = [];
    for (let step = 0; step < 5 && sent.length > 0; step++) {
      const next = sent.splice(0);
      deliveries.push(...next.filter((m) => (m as { kind?: string }).kind !== 'release'));
      for (const release of next.filter((m) => (m as { kind?: string }).kind === 'release')) {
        expect(await handleDeliverMessage(eightDaysOn, release as DeliveryMessage)).toBe('released');
      }
    }
    expect(sent).toEqual([]);
    expect(deliveries).toMatchObject([
      { webhookId: hook.id, events: [{ type: 'sluice.gap', resource: 'x:1', data: { dropped: 2, reason: 'retention' } }] },
    ]);
    expect((await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held).toBe(0);
  });

  it("drops held deliveries past the retention period within a step's time: the rest wait for the next step", async () => {
    const tenant = await createTenant(sandbox, 'held-expired-slow');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'xs:0', url: `${receiver.url}/held-expired-slow` });
    const deps = deliveryDeps(sandbox.wiring, sandbox.notifier);
    for (const seq of [1, 2, 3, 4, 5]) {
      const message: DeliveryMessage = {
        deliveryId: `msg_xs${seq}`,
        tenantId: tenant.id,
        webhookId: hook.id,
        events: [deliveredEventFixture({ id: `evt_xs${seq}`, seq, resource: 'xs:1', parents: ['xs:0'], data: seq })],
        attempt: 1,
      };
      expect(await holdDelivery(deps, message)).toEqual([true, true]);
    }
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    const { deps: eightDaysOn, sent } = later(8 * 86_400_000);
    await startRelease(eightDaysOn, webhook);
    // A slow DynamoDB: each look at the clock finds 150 ms more gone (the step has 400 ms, deliveryTimeoutMs).
    let clock = Date.now() + 8 * 86_400_000;
    const slow = { ...eightDaysOn, now: () => (clock += 150) };
    const [step] = sent.splice(0);
    expect(await handleDeliverMessage(slow, step as DeliveryMessage)).toBe('released');
    const left = (await deps.webhooks.get(tenant.id, hook.id))?.heldCount ?? 0;
    expect(left).toBeGreaterThan(0);
    expect(left).toBeLessThan(5);
    // The steps after it drop the rest, and one marker stands for all five.
    const deliveries: unknown[] = [];
    for (let n = 0; n < 10 && sent.length > 0; n++) {
      const next = sent.splice(0);
      deliveries.push(...next.filter((m) => (m as { kind?: string }).kind !== 'release'));
      for (const release of next.filter((m) => (m as { kind?: string }).kind === 'release')) {
        await handleDeliverMessage(slow, release as DeliveryMessage);
      }
    }
    expect(deliveries).toMatchObject([{ events: [{ type: 'sluice.gap', resource: 'xs:1', data: { dropped: 5, reason: 'retention' } }] }]);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(0);
  });

  it('counts a held gap marker past the retention period as the events it stood for, under its own reason, not as one event', async () => {
    const tenant = await createTenant(sandbox, 'held-marker-expired');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'xm:0', url: `${receiver.url}/held-marker-expired` });
    const deps = deliveryDeps(sandbox.wiring, sandbox.notifier);
    // A drop switch's marker for 7 events, held (the endpoint was quarantined when it went out), then an event.
    const marker: DeliveryMessage = {
      deliveryId: 'msg_xm0',
      tenantId: tenant.id,
      webhookId: hook.id,
      events: [
        {
          id: 'evt_xm0',
          resource: 'xm:1',
          type: 'sluice.gap',
          data: { dropped: 7, reason: 'switch_drop' },
          created_at: '2026-11-01T00:00:00.000Z',
        },
      ],
      attempt: 1,
    };
    const event: DeliveryMessage = {
      deliveryId: 'msg_xm1',
      tenantId: tenant.id,
      webhookId: hook.id,
      events: [deliveredEventFixture({ id: 'evt_xm1', seq: 1, resource: 'xm:1', parents: ['xm:0'], data: 1 })],
      attempt: 1,
    };
    for (const message of [marker, event]) expect(await holdDelivery(deps, message)).toEqual([true, true]);
    const droppedBefore = sandbox.metrics.total('EventsDropped', { reason: 'retention' });
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    const { deps: eightDaysOn, sent } = later(8 * 86_400_000);
    await startRelease(eightDaysOn, webhook);
    const deliveries: unknown[] = [];
    for (let step = 0; step < 5 && sent.length > 0; step++) {
      const next = sent.splice(0);
      deliveries.push(...next.filter((m) => (m as { kind?: string }).kind !== 'release'));
      for (const release of next.filter((m) => (m as { kind?: string }).kind === 'release')) {
        expect(await handleDeliverMessage(eightDaysOn, release as DeliveryMessage)).toBe('released');
      }
    }
    const markers = (deliveries as DeliveryMessage[]).flatMap((d) => d.events.map((e) => (e as { data: unknown }).data));
    expect(markers).toEqual(
      expect.arrayContaining([
        { dropped: 7, reason: 'switch_drop' },
        { dropped: 1, reason: 'retention' },
      ]),
    );
    expect(markers).toHaveLength(2);
    // Only the event outlived the retention period here; the marker's 7 were counted when they were dropped.
    expect(sandbox.metrics.total('EventsDropped', { reason: 'retention' })).toBe(droppedBefore + 1);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(0);
  });

  it('counts a held delivery past the retention period for its marker before removing it: a count that fails leaves it held', async () => {
    const tenant = await createTenant(sandbox, 'held-expired-once');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'xo:0', url: `${receiver.url}/held-expired-once` });
    const base = deliveryDeps(sandbox.wiring, sandbox.notifier);
    const message: DeliveryMessage = {
      deliveryId: 'msg_xo1',
      tenantId: tenant.id,
      webhookId: hook.id,
      events: [deliveredEventFixture({ id: 'evt_xo1', seq: 1, resource: 'xo:1', parents: ['xo:0'], data: 1 })],
      attempt: 1,
    };
    expect(await holdDelivery(base, message)).toEqual([true, true]);
    const webhook = await base.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    const { deps: eightDaysOn, sent } = later(8 * 86_400_000);
    await startRelease(eightDaysOn, webhook);
    const [step] = sent.splice(0);
    // DynamoDB refuses the count once: the step fails, and SQS delivers it again.
    class FailingOnce extends GapCounts {
      failed = false;
      override async count(...args: Parameters<GapCounts['count']>): Promise<void> {
        if (!this.failed) {
          this.failed = true;
          throw new Error('InternalServerError');
        }
        return super.count(...args);
      }
    }
    const options = { client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable, retentionDays: 7 };
    const stores = { ...deliveryStores(options), gaps: new FailingOnce(options) };
    await expect(handleDeliverMessage({ ...eightDaysOn, ...stores }, step as DeliveryMessage)).rejects.toThrow('InternalServerError');
    // A visibility timeout later, as SQS hands back a record that failed.
    const handedBack = { ...eightDaysOn, now: () => eightDaysOn.now() + VISIBILITY_MS };
    expect(await handleDeliverMessage(handedBack, step as DeliveryMessage)).toBe('released');
    const next = sent.splice(0);
    for (const release of next.filter((m) => (m as { kind?: string }).kind === 'release')) {
      await handleDeliverMessage(eightDaysOn, release as DeliveryMessage);
    }
    expect([...next, ...sent].filter((m) => (m as { kind?: string }).kind !== 'release')).toMatchObject([
      { events: [{ type: 'sluice.gap', resource: 'xo:1', data: { dropped: 1, reason: 'retention' } }] },
    ]);
    expect((await base.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(0);
  });

  it('counts held deliveries gone without a release (TTL-deleted) as dropped for retention, with a gap marker, and sets the count to what is held', async () => {
    const tenant = await createTenant(sandbox, 'held-drift');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'y:0', url: `${receiver.url}/held-drift` });
    const deps = deliveryDeps(sandbox.wiring, sandbox.notifier);
    for (const seq of [1, 2]) {
      const event = deliveredEventFixture({ id: `evt_y${seq}`, seq, resource: 'y:1', parents: ['y:0'], data: seq });
      expect(
        await holdDelivery(deps, { deliveryId: `msg_y${seq}`, tenantId: tenant.id, webhookId: hook.id, events: [event], attempt: 1 }),
      ).toEqual([true, true]);
    }
    // DynamoDB's TTL deletes the first held item (past the retention period) before any release reads it.
    const [gone] = (await deps.held.page(hook.id, 10, Date.now())).live;
    await sandbox.wiring.dynamo.send(
      new DeleteCommand({ TableName: sandbox.wiring.controlTable, Key: { pk: `held#${hook.id}`, sk: gone?.sk } }),
    );
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    const droppedBefore = sandbox.metrics.total('EventsDropped', { reason: 'retention' });
    const { deps: now, sent } = later(0);
    await startRelease(now, webhook);
    // The first step delivers what is still held; the next finds the count at 1 with nothing held.
    expect(await handleDeliverMessage(now, sent.splice(0)[0] as DeliveryMessage)).toBe('released');
    await receiver.waitFor(() => okEvents('/held-drift').length === 1, 5_000);
    expect(await handleDeliverMessage(now, sent.splice(0)[0] as DeliveryMessage)).toBe('released');
    // Right away it may be a hold between its two writes: look again.
    expect(sent).toMatchObject([{ kind: 'release', emptySince: expect.any(Number) }]);
    expect((await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held).toBe(1);
    // Still nothing held 31 s later: the delivery it counts is gone.
    const again = { ...(sent.splice(0)[0] as object), emptySince: Date.now() - 31_000 } as unknown as DeliveryMessage;
    expect(await handleDeliverMessage(now, again)).toBe('released');

    expect(sent).toMatchObject([
      { webhookId: hook.id, events: [{ type: 'sluice.gap', resource: 'y:0', data: { dropped: 1, reason: 'retention' } }] },
    ]);
    expect(sandbox.metrics.total('EventsDropped', { reason: 'retention' })).toBe(droppedBefore + 1);
    expect((await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held).toBe(0);
    // The step run again (SQS delivers it again) belongs to a chain that ended: it counts nothing more and owes no other marker.
    sent.splice(0);
    expect(await handleDeliverMessage(now, again)).toBe('stale');
    expect(sent).toEqual([]);
    expect(sandbox.metrics.total('EventsDropped', { reason: 'retention' })).toBe(droppedBefore + 1);
    await publish(sandbox, tenant.key, [{ resource: 'y:0', type: 'a.b', data: 'flows again' }]);
    await receiver.waitFor(() => okEvents('/held-drift').some((e) => e.data === 'flows again'), 10_000);
  });
});

describe('the gap markers owed for counted events', () => {
  it("sends a count's marker before clearing the count: a step that could not send it, or died after, sends the same marker again", async () => {
    const tenant = await createTenant(sandbox, 'gap-owed');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'go:0', url: `${receiver.url}/gap-owed` });
    const { deps, sent } = later(0);
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    // Four events a drop switch discarded; the switch is lifted.
    await deps.gaps.count(hook.id, 'go:1', 4, Date.now(), 'switch_drop');
    await startRelease(deps, webhook);
    const [step] = sent.splice(0) as DeliveryMessage[];
    // The deliver queue refuses the marker (throttled, the network): the step fails, and SQS delivers it again.
    const refused = {
      ...deps,
      queue: {
        send: async (messages: readonly unknown[]) => {
          if (messages.some((m) => (m as { kind?: string }).kind === undefined)) throw new Error('SQS unavailable');
        },
      },
    };
    await expect(handleDeliverMessage(refused, step as DeliveryMessage)).rejects.toThrow('SQS unavailable');
    // This time the function dies once the marker is sent, before its count is cleared.
    class DyingAfterTheSend extends GapCounts {
      override async markerSent(): Promise<boolean> {
        throw new Error('the function died');
      }
    }
    const options = { client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable, retentionDays: 7 };
    const stores = { ...deliveryStores(options), gaps: new DyingAfterTheSend(options) };
    // Each a visibility timeout after the one before, as SQS hands back a record that failed.
    const handedBack = (times: number) => ({ ...deps, now: () => deps.now() + times * VISIBILITY_MS });
    await expect(handleDeliverMessage({ ...handedBack(1), ...stores }, step as DeliveryMessage)).rejects.toThrow('the function died');
    expect(await handleDeliverMessage(handedBack(2), step as DeliveryMessage)).toBe('released');

    // Sent twice, as the same delivery: the subscriber sees one webhook-id twice, and can drop the second.
    const markers = sent.splice(0) as DeliveryMessage[];
    expect(markers).toHaveLength(2);
    expect(markers[1]).toEqual(markers[0]);
    expect(markers[0]).toMatchObject({ events: [{ type: 'sluice.gap', resource: 'go:1', data: { dropped: 4, reason: 'switch_drop' } }] });
    for (const marker of markers) expect(await handleDeliverMessage(deps, marker)).toBe('delivered');
    await receiver.waitFor(() => okEvents('/gap-owed').length === 2, 5_000);
    expect(new Set(receiver.deliveries('/gap-owed').map((d) => d.headers['webhook-id']))).toEqual(new Set([markers[0]?.deliveryId]));
    // The count was cleared after the send, and the chain ended: the step run again sends nothing.
    expect(await handleDeliverMessage(deps, step as DeliveryMessage)).toBe('stale');
    expect(sent).toEqual([]);
  });

  for (const keptBy of ['this version', 'an earlier version, without since'] as const) {
    it(`keeps what a count gained while its marker was out, for a marker of its own (a count kept by ${keptBy})`, async () => {
      const tenant = await createTenant(sandbox, 'gap-grown');
      const hook = await createWebhook(sandbox, tenant.key, { resource: 'gg:0', url: `${receiver.url}/gap-grown` });
      const { deps, sent } = later(0);
      const webhook = await deps.webhooks.get(tenant.id, hook.id);
      if (!webhook) throw new Error('no webhook');
      if (keptBy === 'this version') await deps.gaps.count(hook.id, 'gg:1', 3, Date.now(), 'switch_drop');
      else {
        const item = { pk: `overflow#${hook.id}`, sk: 'switch_drop#gg:1', dropped: 3, expires_at: Math.floor(Date.now() / 1000) + 86_400 };
        await sandbox.wiring.dynamo.send(new PutCommand({ TableName: sandbox.wiring.controlTable, Item: item }));
      }
      await startRelease(deps, webhook);
      const [step] = sent.splice(0) as DeliveryMessage[];
      // Two more events are counted (a worker whose cache still shows the switch) while the marker is sent.
      const busy = {
        ...deps,
        queue: {
          send: async (messages: readonly unknown[]) => {
            if (messages.some((m) => (m as { kind?: string }).kind === undefined)) {
              await deps.gaps.count(hook.id, 'gg:1', 2, Date.now(), 'switch_drop');
            }
            await deps.queue.send(messages as DeliveryMessage[]);
          },
        },
      };
      expect(await handleDeliverMessage(busy, step as DeliveryMessage)).toBe('released');
      const [first, next, ...none] = sent.splice(0) as DeliveryMessage[];
      expect(first).toMatchObject({ events: [{ type: 'sluice.gap', data: { dropped: 3 } }] });
      expect(next).toMatchObject({ kind: 'release' });
      expect(none).toEqual([]);
      // The next step sends a marker for the two counted after the first one's read, and clears the count.
      expect(await handleDeliverMessage(deps, next as DeliveryMessage)).toBe('released');
      const [second, ...rest] = sent.splice(0) as DeliveryMessage[];
      expect(second).toMatchObject({ events: [{ type: 'sluice.gap', resource: 'gg:1', data: { dropped: 2, reason: 'switch_drop' } }] });
      expect(second?.deliveryId).not.toBe(first?.deliveryId);
      expect(rest).toEqual([]);
      expect(await deps.gaps.owed(hook.id, Date.now())).toEqual([]);
    });
  }
});

describe('a webhook that owes more gap markers than one step sends, or one DynamoDB page holds', () => {
  it('gets every marker, a step at a time, before its release chain ends', async () => {
    const tenant = await createTenant(sandbox, 'many-gaps');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'mg:0', url: `${receiver.url}/many-gaps` });
    const { deps, sent } = later(0);
    // One count per resource, with long ids: together past DynamoDB's 1 MB page.
    const resources = Array.from({ length: 4_000 }, (_, i) => `mg:${String(i).padStart(5, '0')}:${'x'.repeat(180)}`);
    const now = Date.now();
    for (let i = 0; i < resources.length; i += 100) {
      await Promise.all(resources.slice(i, i + 100).map((r) => deps.gaps.count(hook.id, r, 2, now, 'held_overflow')));
    }
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    await startRelease(deps, webhook);
    const markers: DeliveryMessage[] = [];
    let steps = 0;
    for (let step = sent.splice(0)[0]; step; step = sent.splice(0).find((m) => (m as { kind?: string }).kind === 'release')) {
      steps += 1;
      expect(await handleDeliverMessage(deps, step as DeliveryMessage)).toBe('released');
      markers.push(...(sent as DeliveryMessage[]).filter((m) => m.kind === undefined));
    }
    expect(new Set(markers.map((m) => m.events[0]?.resource))).toEqual(new Set(resources));
    expect(markers.every((m) => m.events[0]?.type === 'sluice.gap')).toBe(true);
    expect(steps).toBeGreaterThan(resources.length / 100);
    expect(await deps.gaps.owed(hook.id, Date.now())).toEqual([]);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.releaseToken).toBeUndefined();
  }, 60_000);
});

describe('an overflow count older than the retention period (a drop or a disable that lasted longer)', () => {
  it('is still owed its marker: DynamoDB TTL does not take it', async () => {
    const tenant = await createTenant(sandbox, 'long-drop');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'ld:0', url: `${receiver.url}/long-drop` });
    const gaps = new GapCounts({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable, retentionDays: 7 });
    const now = Date.now();
    // Three deliveries dropped eight days ago, under a drop on the webhook still in force.
    await gaps.count(hook.id, 'ld:1', 3, now - 8 * 86_400_000, 'switch_drop');
    // What TTL would have deleted by now (dynalite has no TTL): every item of the partition past its expiry.
    const { Items = [] } = await sandbox.wiring.dynamo.send(
      new QueryCommand({
        TableName: sandbox.wiring.controlTable,
        KeyConditionExpression: 'pk = :pk',
        ExpressionAttributeValues: { ':pk': `overflow#${hook.id}` },
      }),
    );
    for (const item of Items.filter((i) => Number(i.expires_at) * 1000 <= now)) {
      await sandbox.wiring.dynamo.send(new DeleteCommand({ TableName: sandbox.wiring.controlTable, Key: { pk: item.pk, sk: item.sk } }));
    }
    // The drop is lifted now: its marker is owed.
    expect(await gaps.owed(hook.id, now)).toMatchObject([{ resource: 'ld:1', reason: 'switch_drop', dropped: 3 }]);
  });
});

describe('an overflow count kept by an earlier version (no since)', () => {
  it('is stamped when first read, the same for every reader, so two steps that read it cannot take a count begun after it was cleared for it', async () => {
    const gaps = new GapCounts({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable, retentionDays: 7 });
    for (const [hook, old, later] of [
      ['wh_legacy0000000000001', 5, 2],
      // A new count as large as the old one: the second step's clear must not take it either.
      ['wh_legacy0000000000002', 1, 1],
    ] as const) {
      const item = { pk: `overflow#${hook}`, sk: 'switch_drop#r:1', dropped: old, expires_at: Math.floor(Date.now() / 1000) + 86_400 };
      await sandbox.wiring.dynamo.send(new PutCommand({ TableName: sandbox.wiring.controlTable, Item: item }));
      // Two release steps at once (an SQS duplicate, or a replaced chain's step) read it.
      const [first] = await gaps.owed(hook, Date.now());
      const [second] = await gaps.owed(hook, Date.now() + 1);
      expect(first?.since).toBeGreaterThan(0);
      expect(second).toEqual(first);
      // The first sends its marker and clears the count; then events are counted again (a stale switch cache).
      expect(await gaps.markerSent(hook, first as NonNullable<typeof first>)).toBe(true);
      await new Promise((resolve) => setTimeout(resolve, 5));
      await gaps.count(hook, 'r:1', later, Date.now(), 'switch_drop');
      // The second step's marker stood for the old count only: the new count still owes its own.
      expect(await gaps.markerSent(hook, second as NonNullable<typeof second>)).toBe(false);
      expect(await gaps.owed(hook, Date.now())).toMatchObject([{ dropped: later, sent: 0 }]);
    }
  });
});

describe('a held delivery the endpoint always refuses', () => {
  it('uses up its retries in the releases and is dead-lettered, and what was held behind it goes out', async () => {
    const tenant = await createTenant(sandbox, 'poison');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'p:0', url: `${receiver.url}/poison` });
    const patch = (status: string) => call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { status } });
    // Disabled by its owner: its deliveries are held.
    expect((await patch('disabled')).status).toBe(200);
    await publish(sandbox, tenant.key, [{ resource: 'p:0', type: 'a.b', data: 'poison' }]);
    const held = async () => (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held;
    for (let i = 0; i < 50 && (await held()) !== 1; i++) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await held()).toBe(1);
    // Every real delivery is refused (as a body it cannot parse would be); probes succeed.
    receiver.answer('/poison', { status: 400, pings: 200 });
    expect((await patch('active')).status).toBe(200);
    const { deadLetters } = deliveryDeps(sandbox.wiring, sandbox.notifier);
    for (let i = 0; i < 300 && (await deadLetters.page(hook.id, Date.now(), 100)).letters.length === 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect((await deadLetters.page(hook.id, Date.now(), 100)).letters.map((d) => d.message.events.map((e) => e.data))).toEqual([
      ['poison'],
    ]);
    expect(await held()).toBe(0);
    receiver.answer('/poison', 200);
    await publish(sandbox, tenant.key, [{ resource: 'p:0', type: 'a.b', data: 'after' }]);
    await receiver.waitFor(() => okEvents('/poison').some((e) => e.data === 'after'), 10_000);
    // Each release was an attempt of it: as many as the retry schedule gives any delivery (four here).
    const refused = receiver.deliveries('/poison').filter((d) => d.answered === 400);
    expect(refused).toHaveLength(4);
  }, 40_000);
});

/**
 * The delivery function's dependencies on a simulated clock, for an endpoint that
 * answers its probes and fails every real delivery (its ping handler answers; a handler
 * that crashes on real events, or its database is down): the deliver queue is `queued`,
 * whose messages `next` hands over in the order of when they are due, moving the clock.
 */
function probesOnlySucceed(config: Partial<typeof DEFAULT_CONFIG>, onDelivery: (at: number) => void = () => undefined) {
  const base = deliveryDeps(sandbox.wiring, sandbox.notifier);
  const sim = { clock: Date.now(), queued: [] as Array<{ message: DeliveryMessage; at: number }> };
  const deps: typeof base = {
    ...base,
    config: { ...base.config, ...pick(DEFAULT_CONFIG), retryJitter: 0, ...config },
    now: () => sim.clock,
    switches: { current: async () => [], refresh: async () => [] },
    queue: {
      send: async (messages, delaySeconds) => {
        for (const message of messages)
          sim.queued.push({ message: message as DeliveryMessage, at: sim.clock + (delaySeconds ?? 0) * 1000 });
      },
    },
    send: async (request) => {
      const ping = request.body.includes('"webhook.ping"');
      if (!ping) onDelivery(sim.clock);
      return { statusCode: ping ? 200 : 500, durationMs: 1, error: undefined, retryAfter: undefined, responseSnippet: '' };
    },
  } as typeof base;
  /** The message due first, the clock moved to when it is due; undefined once none is queued. */
  const next = () => {
    sim.queued.sort((a, b) => a.at - b.at);
    const head = sim.queued.shift();
    if (head) sim.clock = Math.max(sim.clock, head.at);
    return head?.message;
  };
  return { deps, sim, next };
}

describe('a held delivery whose endpoint answers its probes but fails every delivery', () => {
  it('waits out the retry schedule, as any failed delivery does, before it is dead-lettered', async () => {
    const tenant = await createTenant(sandbox, 'flapping');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'fl:0', url: `${receiver.url}/flapping` });
    const attempts: number[] = [];
    // The deployed defaults: the retry schedule of 8 attempts over about 27 h, quarantine after 5 failures.
    const { deps, sim, next } = probesOnlySucceed({}, (at) => attempts.push(at));
    const event = deliveredEventFixture({ id: 'evt_fl1', seq: 1, resource: 'fl:1', parents: ['fl:0'], data: 1 });
    await holdDelivery(deps, { deliveryId: 'msg_fl1', tenantId: tenant.id, webhookId: hook.id, events: [event], attempt: 1 });
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    await startRelease(deps, webhook);
    const start = sim.clock;
    let dead = 0;
    for (let i = 0, message = next(); i < 3_000 && message && dead === 0; i++, message = next()) {
      await handleDeliverMessage(deps, message);
      dead = (await deps.deadLetters.page(hook.id, sim.clock, 10)).letters.length;
    }
    expect(dead).toBe(1);
    // Each failed attempt waited as the schedule says, but the fifth: that failure
    // quarantined the endpoint, and the delivery was held until the first probe got
    // through (a minute), as any delivery failing then is. Before, each release step
    // was its next attempt, seconds apart, and it was dead-lettered within two minutes.
    const waits = attempts.slice(1).map((at, i) => Math.round((at - (attempts[i] as number)) / 1000));
    expect(waits).toEqual([5, 300, 1_800, 7_200, DEFAULT_CONFIG.probeIntervalMinSeconds, 36_000, 36_000]);
    expect((sim.clock - start) / 3_600_000).toBeGreaterThan(22);
  }, 60_000);
});

describe('an endpoint that answers its probes but fails every delivery, under steady traffic', () => {
  it('is quarantined again and again with probes further apart each time, and disabled (its owner told) 3 days after its first quarantine', async () => {
    const tenant = await createTenant(sandbox, 'flapping-steady');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'fs:0', url: `${receiver.url}/flapping-steady` });
    // The deployed defaults, and their 3 days of quarantine before a disable.
    const { deps, sim, next } = probesOnlySucceed({ disableAfterQuarantineSeconds: DEFAULT_CONFIG.disableAfterQuarantineSeconds });
    const start = sim.clock;
    // A new delivery every 30 minutes, over 6 resources.
    let n = 0;
    const publishOne = () => {
      n += 1;
      const event = deliveredEventFixture({ id: `evt_fs${n}`, seq: n, resource: `fs:${n % 6}`, parents: ['fs:0'], data: n });
      sim.queued.push({
        message: { deliveryId: `msg_fs${n}`, tenantId: tenant.id, webhookId: hook.id, events: [event], attempt: 1 },
        at: sim.clock,
      });
    };
    let nextPublish = sim.clock;
    // The first probe interval of each quarantine (s).
    const firstProbes: number[] = [];
    let state = 'healthy';
    const horizon = start + 4 * 86_400_000;
    for (let i = 0; i < 20_000 && sim.clock < horizon && state !== 'disabled'; i++) {
      if (!sim.queued.some((queued) => queued.at <= nextPublish)) {
        sim.clock = Math.max(sim.clock, nextPublish);
        publishOne();
        nextPublish += 30 * 60_000;
        continue;
      }
      await handleDeliverMessage(deps, next() as DeliveryMessage);
      const health = (await deps.webhooks.get(tenant.id, hook.id))?.health;
      if (health?.state === 'quarantined' && state !== 'quarantined') firstProbes.push(health.probeIntervalSeconds as number);
      state = health?.state ?? 'gone';
    }
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    expect(webhook).toMatchObject({ status: 'disabled', health: { state: 'disabled', disabledReason: 'quarantine_expired' } });
    // Disabled at the first failure that quarantined it again past its 3 days (the next
    // round of released deliveries, within an hour's probe interval of them).
    const days = (sim.clock - start) / 86_400_000;
    expect(days).toBeGreaterThanOrEqual(3);
    expect(days).toBeLessThan(3 + 1.5 / 24);
    expect(sandbox.notifier.notices.filter((notice) => notice.webhook === hook.id)).toMatchObject([
      { type: 'webhook.disabled', reason: 'quarantine_expired' },
    ]);
    // Each quarantine's probes start where the one before left off: 1, 2, 4 … 60 minutes,
    // then hourly. Before, every quarantine probed after a minute again, and a probe's
    // success started the 3 days afresh: hundreds of quarantines a day, never disabled.
    expect(firstProbes.slice(0, 8)).toEqual([60, 120, 240, 480, 960, 1_920, 3_600, 3_600]);
    expect(firstProbes.length).toBeGreaterThan(50);
    expect(firstProbes.length).toBeLessThan(100);
  }, 120_000);

  it('ends its trouble at the first delivery that succeeds after a probe did, even within the minute a success is otherwise not written', async () => {
    const tenant = await createTenant(sandbox, 'flapping-ends');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'fe:0', url: `${receiver.url}/flapping-ends` });
    const { deps } = later(0);
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    const now = Date.now();
    // One failure quarantines it here (quarantineAfterFailures: 1).
    const quarantined = await applyHealth(deps, webhook, { type: 'failure', now, statusCode: 500, error: 'HTTP 500' });
    await applyHealth(deps, quarantined, { type: 'probe_succeeded', now: now + 1_000 });
    const probed = await deps.webhooks.get(tenant.id, hook.id);
    expect(probed?.health).toMatchObject({ state: 'healthy', troubleSince: now });
    await applyHealth(deps, probed as NonNullable<typeof probed>, { type: 'success', now: now + 2_000 });
    expect((await deps.webhooks.get(tenant.id, hook.id))?.health).toMatchObject({ state: 'healthy', troubleSince: undefined });
  });
});

describe('a probe', () => {
  it('waits while the quarantined endpoint asked to be left alone (Retry-After), without probing', async () => {
    const tenant = await createTenant(sandbox, 'probe-left-alone');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'pl:0', url: `${receiver.url}/probe-left-alone` });
    const posted: unknown[] = [];
    const { deps, sent } = later(0, async (request) => {
      posted.push(request);
      return { statusCode: 200, durationMs: 1, error: undefined, retryAfter: undefined, responseSnippet: '' };
    });
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    // One failure quarantines it here (quarantineAfterFailures: 1); that queues its first probe.
    const quarantined = await applyHealth(deps, webhook, { type: 'failure', now: Date.now(), statusCode: 500, error: 'HTTP 500' });
    expect(quarantined.health.state).toBe('quarantined');
    const [probe] = sent.splice(0);
    await deps.webhooks.leaveAloneUntil(tenant.id, hook.id, Date.now() + 30_000, `${receiver.url}/probe-left-alone`);
    expect(await handleDeliverMessage(deps, { ...(probe as object), notBefore: undefined } as unknown as DeliveryMessage)).toBe('waiting');
    expect(posted).toEqual([]);
    expect(sent).toMatchObject([{ kind: 'probe' }]);
  });
});

describe('a release step', () => {
  it('sends nothing while the endpoint asked to be left alone (Retry-After), and looks again after', async () => {
    const tenant = await createTenant(sandbox, 'release-left-alone');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'la:0', url: `${receiver.url}/release-left-alone` });
    const base = deliveryDeps(sandbox.wiring, sandbox.notifier);
    const event = deliveredEventFixture({ id: 'evt_la1', seq: 1, resource: 'la:1', parents: ['la:0'], data: 1 });
    expect(
      await holdDelivery(base, { deliveryId: 'msg_la1', tenantId: tenant.id, webhookId: hook.id, events: [event], attempt: 1 }),
    ).toEqual([true, true]);
    await base.webhooks.leaveAloneUntil(tenant.id, hook.id, Date.now() + 30_000, `${receiver.url}/release-left-alone`);
    const posted: unknown[] = [];
    const { deps, sent } = later(0, async (request) => {
      posted.push(request);
      return { statusCode: 200, durationMs: 1, error: undefined, retryAfter: undefined, responseSnippet: '' };
    });
    const webhook = await base.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    await startRelease(deps, webhook);
    const [release] = sent.splice(0);
    expect(await handleDeliverMessage(deps, release as DeliveryMessage)).toBe('released');
    expect(posted).toEqual([]);
    expect(sent).toMatchObject([{ kind: 'release' }]);
    expect((await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held).toBe(1);
  });

  it('keeps its deliveries held when the endpoint asks to wait: no failure, none of their attempts spent, and it steps on after the wait', async () => {
    const tenant = await createTenant(sandbox, 'release-asks-wait');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'rw:0', url: `${receiver.url}/release-asks-wait` });
    const base = deliveryDeps(sandbox.wiring, sandbox.notifier);
    // Two held first attempts, of two resources: released together, in one POST.
    for (const n of [1, 2]) {
      const event = deliveredEventFixture({ id: `evt_rw${n}`, seq: 1, resource: `rw:${n}`, parents: ['rw:0'], data: n });
      expect(
        await holdDelivery(base, { deliveryId: `msg_rw${n}`, tenantId: tenant.id, webhookId: hook.id, events: [event], attempt: 1 }),
      ).toEqual([true, true]);
    }
    let status = 429;
    const posted: number[][] = [];
    const { deps, sent } = later(0, async (request) => {
      posted.push(JSON.parse(request.body).events.map((e: { data: number }) => e.data));
      return { statusCode: status, durationMs: 1, error: undefined, retryAfter: status === 429 ? '1' : undefined, responseSnippet: '' };
    });
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    await startRelease(deps, webhook);
    const [release] = sent.splice(0);
    expect(await handleDeliverMessage(deps, release as DeliveryMessage)).toBe('released');
    expect(posted).toEqual([[1, 2]]);
    // One failure would quarantine it here; asking to wait is none.
    const after = await deps.webhooks.get(tenant.id, hook.id);
    expect(after?.health).toMatchObject({ state: 'healthy', consecutiveFailures: 0 });
    expect(after?.heldCount).toBe(2);
    const held = (await deps.held.page(hook.id, 10, Date.now())).live.map((h) => h.message);
    expect(held).toMatchObject([
      { deliveryId: 'msg_rw1', attempt: 2, waited: 1 },
      { deliveryId: 'msg_rw2', attempt: 2, waited: 1 },
    ]);
    // The next step, once the wait is over, sends them.
    expect(sent).toMatchObject([{ kind: 'release', token: (release as { token: string }).token }]);
    const [step] = sent.splice(0);
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    status = 200;
    expect(await handleDeliverMessage(deps, step as DeliveryMessage)).toBe('released');
    expect(posted.slice(1).flat()).toEqual([1, 2]);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(0);
  });

  it('spends none of the attempts of a delivery with free waits left when the POST it shares with one that has none is asked to wait', async () => {
    const tenant = await createTenant(sandbox, 'release-waits-mixed');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'wm:0', url: `${receiver.url}/release-waits-mixed` });
    const base = deliveryDeps(sandbox.wiring, sandbox.notifier);
    // Two held deliveries whose every attempt was answered "wait", released together in
    // one POST: the first has had all its free waits, the second one of them.
    for (const [n, attempt, waited] of [
      [1, 6, 5],
      [2, 2, 1],
    ] as const) {
      const event = deliveredEventFixture({ id: `evt_wm${n}`, seq: 1, resource: `wm:${n}`, parents: ['wm:0'], data: n });
      const message = { deliveryId: `msg_wm${n}`, tenantId: tenant.id, webhookId: hook.id, events: [event], attempt, waited };
      expect(await holdDelivery(base, message)).toEqual([true, true]);
    }
    const posted: number[][] = [];
    const { deps, sent } = later(0, async (request) => {
      posted.push(JSON.parse(request.body).events.map((e: { data: number }) => e.data));
      return { statusCode: 429, durationMs: 1, error: undefined, retryAfter: '1', responseSnippet: '' };
    });
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    await startRelease(deps, webhook);
    expect(await handleDeliverMessage(deps, sent.splice(0)[0] as DeliveryMessage)).toBe('released');
    expect(posted).toEqual([[1, 2]]);
    // The answer is the first one's sixth "wait": a failed attempt of it. For the second it
    // is its second, which spends nothing: held or sent on, it has spent one attempt, as before.
    const held = (await deps.held.page(hook.id, 10, Date.now())).live.map((h) => h.message);
    const queued = sent.filter((m): m is DeliveryMessage => m.kind === undefined || m.kind === 'delivery');
    const second = [...held, ...queued].filter((m) => m.deliveryId === 'msg_wm2');
    expect(second).toHaveLength(1);
    expect(second[0]).toMatchObject({ attempt: 3, waited: 2 });
    const first = [...held, ...queued].filter((m) => m.deliveryId === 'msg_wm1');
    expect(first).toMatchObject([{ attempt: 7, waited: 5 }]);
  });

  it('sends what an endpoint asked to wait for together again after the wait, as the next attempt of the same delivery, not one POST each', async () => {
    const tenant = await createTenant(sandbox, 'release-waited-merged');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'rm:0', url: `${receiver.url}/release-waited-merged` });
    const base = deliveryDeps(sandbox.wiring, sandbox.notifier);
    // Three held first attempts (at most 3 a step here, endpointRatePerSecond): released together, in one POST.
    for (const n of [1, 2, 3]) {
      const event = deliveredEventFixture({ id: `evt_rm${n}`, seq: n, resource: 'rm:1', parents: ['rm:0'], data: n });
      expect(
        await holdDelivery(base, { deliveryId: `msg_rm${n}`, tenantId: tenant.id, webhookId: hook.id, events: [event], attempt: 1 }),
      ).toEqual([true, true]);
    }
    let status = 429;
    const posted: Array<{ id: string | undefined; data: number[] }> = [];
    const { deps, sent } = later(0, async (request) => {
      posted.push({ id: request.headers['webhook-id'], data: JSON.parse(request.body).events.map((e: { data: number }) => e.data) });
      return { statusCode: status, durationMs: 1, error: undefined, retryAfter: status === 429 ? '1' : undefined, responseSnippet: '' };
    });
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    await startRelease(deps, webhook);
    expect(await handleDeliverMessage(deps, sent.splice(0)[0] as DeliveryMessage)).toBe('released');
    const [step] = sent.splice(0);
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    status = 200;
    expect(await handleDeliverMessage(deps, step as DeliveryMessage)).toBe('released');
    // Asking to wait is no failure: the endpoint that asked gets the same one POST again, not three.
    expect(posted.map((p) => p.data)).toEqual([
      [1, 2, 3],
      [1, 2, 3],
    ]);
    expect(posted[1]?.id).toBe(posted[0]?.id);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(0);
    // The attempts log: the delivery's first attempt (429), then its second (200).
    const attempts = (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}/attempts`, { key: tenant.key })).body.data;
    expect(attempts.filter((a: { delivery_id: string }) => a.delivery_id === posted[0]?.id)).toMatchObject([
      { attempt: 2, status_code: 200 },
      { attempt: 1, status_code: 429 },
    ]);
  });

  it("sends at most the endpoint's rate of POSTs a step, and leaves the rest, in order, to the next step a second later", async () => {
    const tenant = await createTenant(sandbox, 'paced-release');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'pr:0', url: `${receiver.url}/paced-release` });
    const base = deliveryDeps(sandbox.wiring, sandbox.notifier);
    // Five held retries: each goes alone (a failed delivery is not merged), one POST each.
    for (const n of [1, 2, 3, 4, 5]) {
      const event = deliveredEventFixture({ id: `evt_pr${n}`, seq: n, resource: 'pr:1', parents: ['pr:0'], data: n });
      expect(
        await holdDelivery(base, { deliveryId: `msg_pr${n}`, tenantId: tenant.id, webhookId: hook.id, events: [event], attempt: 2 }),
      ).toEqual([true, true]);
    }
    const posted: number[] = [];
    const quick: ReturnType<typeof deliveryDeps>['send'] = async (request) => {
      posted.push(JSON.parse(request.body).events[0].data);
      return { statusCode: 200, durationMs: 5, error: undefined, retryAfter: undefined, responseSnippet: '' };
    };
    const { deps: recorded, sent } = later(0, quick);
    const delays: Array<number | undefined> = [];
    const deps = {
      ...recorded,
      queue: {
        send: async (messages: readonly DeliverQueueMessage[], delaySeconds?: number) => {
          sent.push(...messages);
          delays.push(delaySeconds);
        },
      },
    } as typeof recorded;
    const webhook = await base.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    await startRelease(deps, webhook);
    const [release] = sent.splice(0);
    delays.splice(0);
    // endpointRatePerSecond is 3 here.
    expect(await handleDeliverMessage(deps, release as DeliveryMessage)).toBe('released');
    expect(posted).toEqual([1, 2, 3]);
    expect(sent).toMatchObject([{ kind: 'release' }]);
    expect(delays).toEqual([1]);
    expect(await handleDeliverMessage(deps, sent.splice(0)[0] as DeliveryMessage)).toBe('released');
    expect(posted).toEqual([1, 2, 3, 4, 5]);
  });

  /** Holds `perResource` retries (each goes alone) on each of `resources` resources of a new webhook; answers its deps and the webhook. */
  async function heldRetries(name: string, resources: number, perResource: number) {
    const tenant = await createTenant(sandbox, name);
    const hook = await createWebhook(sandbox, tenant.key, { resource: `${name}:0`, url: `${receiver.url}/${name}` });
    const base = deliveryDeps(sandbox.wiring, sandbox.notifier);
    for (let r = 1; r <= resources; r++) {
      for (let n = 1; n <= perResource; n++) {
        const event = deliveredEventFixture({ id: `evt_${name}${r}x${n}`, seq: n, resource: `${name}:${r}`, parents: [`${name}:0`] });
        const message = { deliveryId: `msg_${name}${r}x${n}`, tenantId: tenant.id, webhookId: hook.id, events: [event], attempt: 2 };
        expect(await holdDelivery(base, message, 100)).toEqual([true, true]);
      }
    }
    const webhook = await base.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    return { base, webhook };
  }

  it("sends different resources' held deliveries at once, up to 10 POSTs under way, each resource's in order", async () => {
    const { webhook } = await heldRetries('lanes', 12, 2);
    const posted: string[] = [];
    let underWay = 0;
    let most = 0;
    const send: ReturnType<typeof deliveryDeps>['send'] = async (request) => {
      underWay += 1;
      most = Math.max(most, underWay);
      await new Promise((resolve) => setTimeout(resolve, 40));
      underWay -= 1;
      posted.push(JSON.parse(request.body).events[0].id);
      return { statusCode: 200, durationMs: 40, error: undefined, retryAfter: undefined, responseSnippet: '' };
    };
    const { deps: recorded, sent } = later(0, send);
    const deps = { ...recorded, config: { ...recorded.config, endpointRatePerSecond: 50, deliveryTimeoutMs: 2_000 } };
    await startRelease(deps, webhook);
    expect(await handleDeliverMessage(deps, sent.splice(0)[0] as DeliveryMessage)).toBe('released');
    expect(most).toBe(10);
    expect(posted).toHaveLength(24);
    for (let r = 1; r <= 12; r++) {
      expect(posted.indexOf(`evt_lanes${r}x1`)).toBeLessThan(posted.indexOf(`evt_lanes${r}x2`));
    }
    expect(sent).toMatchObject([{ kind: 'release' }]);
  });

  it("keeps its lanes together to the endpoint's rate of POSTs a step", async () => {
    const { webhook } = await heldRetries('lanerate', 12, 1);
    const posted: string[] = [];
    const send: ReturnType<typeof deliveryDeps>['send'] = async (request) => {
      await new Promise((resolve) => setTimeout(resolve, 20));
      posted.push(JSON.parse(request.body).events[0].id);
      return { statusCode: 200, durationMs: 20, error: undefined, retryAfter: undefined, responseSnippet: '' };
    };
    const { deps: recorded, sent } = later(0, send);
    const deps = { ...recorded, config: { ...recorded.config, endpointRatePerSecond: 4, deliveryTimeoutMs: 2_000 } };
    await startRelease(deps, webhook);
    expect(await handleDeliverMessage(deps, sent.splice(0)[0] as DeliveryMessage)).toBe('released');
    expect(posted).toHaveLength(4);
    expect(await handleDeliverMessage(deps, sent.splice(0)[0] as DeliveryMessage)).toBe('released');
    expect(posted).toHaveLength(8);
  });

  it('starts no POST in any lane once one failed, and steps on once, after the retry wait', async () => {
    const { webhook } = await heldRetries('lanefail', 3, 2);
    const posted: string[] = [];
    const send: ReturnType<typeof deliveryDeps>['send'] = async (request) => {
      const id: string = JSON.parse(request.body).events[0].id;
      posted.push(id);
      if (id === 'evt_lanefail2x1') return { statusCode: 500, durationMs: 1, error: undefined, retryAfter: undefined, responseSnippet: '' };
      await new Promise((resolve) => setTimeout(resolve, 50));
      return { statusCode: 200, durationMs: 50, error: undefined, retryAfter: undefined, responseSnippet: '' };
    };
    const { deps: recorded, sent, delays } = later(0, send);
    const deps = {
      ...recorded,
      config: { ...recorded.config, endpointRatePerSecond: 50, deliveryTimeoutMs: 2_000, quarantineAfterFailures: 5 },
    };
    await startRelease(deps, webhook);
    const [release] = sent.splice(0);
    delays.splice(0);
    expect(await handleDeliverMessage(deps, release as DeliveryMessage)).toBe('released');
    // The three lanes' first POSTs went at once; the failure stopped the other two lanes' second ones.
    expect(posted.sort()).toEqual(['evt_lanefail1x1', 'evt_lanefail2x1', 'evt_lanefail3x1']);
    expect(sent.filter((m) => (m as { kind?: string }).kind === 'release')).toHaveLength(1);
    // After the retry's wait (schedule [0, 1, 1, 1]: 1 s).
    expect(delays[sent.findIndex((m) => (m as { kind?: string }).kind === 'release')]).toBe(1);
    // The failed delivery goes back to its retry schedule; each resource's second delivery stays held.
    expect((await deps.webhooks.get(webhook.tenantId, webhook.id))?.heldCount).toBe(3);
  });

  it('steps on once, after the wait asked, when one lane is asked to wait while the others are taken', async () => {
    const { webhook } = await heldRetries('lanewaitok', 3, 2);
    const posted: string[] = [];
    const send: ReturnType<typeof deliveryDeps>['send'] = async (request) => {
      const id: string = JSON.parse(request.body).events[0].id;
      posted.push(id);
      if (id === 'evt_lanewaitok2x1') return { statusCode: 429, durationMs: 1, error: undefined, retryAfter: '3', responseSnippet: '' };
      await new Promise((resolve) => setTimeout(resolve, 300));
      return { statusCode: 200, durationMs: 300, error: undefined, retryAfter: undefined, responseSnippet: '' };
    };
    const { deps: recorded, sent, delays } = later(0, send);
    const deps = { ...recorded, config: { ...recorded.config, endpointRatePerSecond: 50, deliveryTimeoutMs: 2_000 } };
    await startRelease(deps, webhook);
    const [release] = sent.splice(0);
    delays.splice(0);
    expect(await handleDeliverMessage(deps, release as DeliveryMessage)).toBe('released');
    // The lanes' first POSTs went at once; the others' were taken, and no lane started another.
    expect(posted.sort()).toEqual(['evt_lanewaitok1x1', 'evt_lanewaitok2x1', 'evt_lanewaitok3x1']);
    expect(sent).toMatchObject([{ kind: 'release', token: (release as ReleaseMessage).token }]);
    expect(delays).toEqual([3]);
    // The one asked to wait is held again (its next attempt, no failure), with each resource's second.
    expect((await deps.webhooks.get(webhook.tenantId, webhook.id))?.heldCount).toBe(4);
    expect((await deps.webhooks.get(webhook.tenantId, webhook.id))?.health).toMatchObject({ state: 'healthy', consecutiveFailures: 0 });
  });

  it('waits for every lane before it fails a step one of its lanes threw in, and steps on by SQS handing the step back', async () => {
    const { webhook } = await heldRetries('lanethrow', 3, 1);
    const posted: string[] = [];
    const send: ReturnType<typeof deliveryDeps>['send'] = async (request) => {
      const id: string = JSON.parse(request.body).events[0].id;
      if (id === 'evt_lanethrow2x1') throw new Error('boom');
      await new Promise((resolve) => setTimeout(resolve, 300));
      posted.push(id);
      return { statusCode: 200, durationMs: 300, error: undefined, retryAfter: undefined, responseSnippet: '' };
    };
    const { deps: recorded, sent } = later(0, send);
    const deps = { ...recorded, config: { ...recorded.config, endpointRatePerSecond: 50, deliveryTimeoutMs: 2_000 } };
    await startRelease(deps, webhook);
    const [release] = sent.splice(0);
    await expect(handleDeliverMessage(deps, release as DeliveryMessage)).rejects.toThrow('boom');
    // The other lanes had finished: their POSTs taken and their deliveries no longer held.
    expect(posted.sort()).toEqual(['evt_lanethrow1x1', 'evt_lanethrow3x1']);
    expect((await deps.webhooks.get(webhook.tenantId, webhook.id))?.heldCount).toBe(1);
    // No next step of its own: the step handed back is the chain's one next step.
    expect(sent).toEqual([]);
  });

  it("starts no POST in a lane that was reading the webhook when another lane failed, and takes no share of the endpoint's rate for it", async () => {
    const { webhook } = await heldRetries('lanereadfail', 2, 1);
    const posted: string[] = [];
    const send: ReturnType<typeof deliveryDeps>['send'] = async (request) => {
      posted.push(JSON.parse(request.body).events[0].id);
      return { statusCode: 500, durationMs: 1, error: undefined, retryAfter: undefined, responseSnippet: '' };
    };
    const { deps: recorded, sent } = later(0, send);
    // The second lane's read of the webhook (before its first POST) answers after the first lane's POST failed.
    let slowReads = false;
    const store = recorded.webhooks;
    const webhooks = new Proxy(store, {
      get(target, key) {
        if (key === 'get' && slowReads) {
          return async (...args: Parameters<WebhookStore['get']>) => {
            await new Promise((resolve) => setTimeout(resolve, 1_000));
            return target.get(...args);
          };
        }
        const value = Reflect.get(target, key);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    // One clock for the whole step, so that the shares it takes end at a known time.
    const at = Date.now();
    const deps = {
      ...recorded,
      webhooks,
      now: () => at,
      config: { ...recorded.config, endpointRatePerSecond: 50, deliveryTimeoutMs: 2_000, quarantineAfterFailures: 5 },
    };
    await startRelease(deps, webhook);
    const [release] = sent.splice(0);
    const step = handleDeliverMessage(deps, release as DeliveryMessage);
    slowReads = true;
    expect(await step).toBe('released');
    expect(posted).toEqual(['evt_lanereadfail1x1']);
    expect(sent.filter((m) => (m as { kind?: string }).kind === 'release')).toHaveLength(1);
    // One POST, one share (20 ms at 50 a second), not one for the lane that made none.
    expect(await later(0).deps.paces.freeAt(webhook.id, at)).toBe(at + 20);
  });

  it('sends what two lanes were asked to wait for again as the deliveries they were, each under its webhook-id, not merged into one', async () => {
    const tenant = await createTenant(sandbox, 'lanewait');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'lw:0', url: `${receiver.url}/lanewait` });
    const base = deliveryDeps(sandbox.wiring, sandbox.notifier);
    // In release order: a first attempt, a retry (which goes alone, between them), a first attempt: three POSTs, three lanes.
    for (const [r, attempt] of [
      [1, 1],
      [2, 2],
      [3, 1],
    ] as const) {
      const event = deliveredEventFixture({ id: `evt_lw${r}`, seq: 1, resource: `lw:${r}`, parents: ['lw:0'] });
      const message = { deliveryId: `msg_lw${r}`, tenantId: tenant.id, webhookId: hook.id, events: [event], attempt };
      expect(await holdDelivery(base, message, 100)).toEqual([true, true]);
    }
    let waits = true;
    const posted: Array<{ id: string | undefined; events: string[] }> = [];
    const { deps, sent } = later(0, async (request) => {
      const events: string[] = JSON.parse(request.body).events.map((e: { id: string }) => e.id);
      posted.push({ id: request.headers['webhook-id'], events });
      // Answered after the three are under way: the retry is taken, the first attempts are asked to wait.
      await new Promise((resolve) => setTimeout(resolve, 100));
      const wait = waits && !events.includes('evt_lw2');
      return { statusCode: wait ? 429 : 200, durationMs: 100, error: undefined, retryAfter: wait ? '1' : undefined, responseSnippet: '' };
    });
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    await startRelease(deps, webhook);
    expect(await handleDeliverMessage(deps, sent.splice(0)[0] as DeliveryMessage)).toBe('released');
    const asked = posted.splice(0).filter((p) => !p.events.includes('evt_lw2'));
    expect(asked.map((p) => p.events).sort()).toEqual([['evt_lw1'], ['evt_lw3']]);
    const [step] = sent.splice(0);
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    waits = false;
    expect(await handleDeliverMessage(deps, step as DeliveryMessage)).toBe('released');
    // The retry went; the two asked to wait are next to each other now, yet each goes as the delivery it was.
    const byEvents = (list: typeof posted) => [...list].sort((a, b) => (a.events[0] ?? '').localeCompare(b.events[0] ?? ''));
    expect(byEvents(posted)).toEqual(byEvents(asked));
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(0);
  });

  it("takes its POSTs' shares of the endpoint's time: a delivery after the chain ends waits behind them, not beside them with the whole burst", async () => {
    const { webhook } = await heldRetries('laneshares', 4, 1);
    const send: ReturnType<typeof deliveryDeps>['send'] = async () => ({
      statusCode: 200,
      durationMs: 5,
      error: undefined,
      retryAfter: undefined,
      responseSnippet: '',
    });
    const { deps, sent } = later(0, send);
    await startRelease(deps, webhook);
    const before = Date.now();
    // endpointRatePerSecond is 3 here: the step sends 3 POSTs, a second of the endpoint's time.
    expect(await handleDeliverMessage(deps, sent.splice(0)[0] as DeliveryMessage)).toBe('released');
    const { deps: fresh } = later(0, send);
    const freeAt = await fresh.paces.freeAt(webhook.id, Date.now());
    expect(freeAt).toBeGreaterThanOrEqual(before + 1_000 - 5);
  });

  it("takes its POSTs' shares at the endpoint's rate, not at a slow pace it lost during the step: its next delivery is not held", async () => {
    const { base, webhook } = await heldRetries('givenshares', 10, 5);
    // Noted slow (1.5 s: 150 ms of its time a POST), it answers quickly now: the step's
    // first answer forgets the slowness and gives its time back, and the step sends 50 POSTs.
    await base.webhooks.noteSlowAnswers(webhook.tenantId, webhook.id, webhook.url, 1_500);
    const slowed = await base.webhooks.get(webhook.tenantId, webhook.id);
    if (!slowed) throw new Error('no webhook');
    let posts = 0;
    const send: ReturnType<typeof deliveryDeps>['send'] = async () => {
      posts += 1;
      return { statusCode: 200, durationMs: 5, error: undefined, retryAfter: undefined, responseSnippet: '' };
    };
    const { deps: recorded, sent } = later(0, send);
    const deps = { ...recorded, config: { ...recorded.config, endpointRatePerSecond: 50, deliveryTimeoutMs: 2_000 } };
    await startRelease(deps, slowed);
    expect(await handleDeliverMessage(deps, sent.splice(0)[0] as DeliveryMessage)).toBe('released');
    expect(posts).toBe(50);
    expect((await deps.webhooks.get(webhook.tenantId, webhook.id))?.slowMs).toBeUndefined();
    // 50 POSTs at 50 a second: a second of its time, where at 150 ms each they took 7.5 s.
    const { deps: fresh } = later(0, send);
    const freeAt = (await fresh.paces.freeAt(webhook.id, Date.now())) ?? 0;
    expect(freeAt).toBeLessThan(Date.now() + 1_500);
    // A new delivery to the quick endpoint goes, not held behind 7.5 s of a pace it lost.
    const next: DeliveryMessage = {
      deliveryId: 'msg_givenshares_next',
      tenantId: webhook.tenantId,
      webhookId: webhook.id,
      events: [deliveredEventFixture({ id: 'evt_givenshares_next', seq: 1, resource: 'givenshares:99' })],
      attempt: 1,
    };
    expect(await handleDeliverMessage({ ...deps, now: () => Date.now() }, next)).not.toBe('held');
  });

  it('starts no POST once it is older than the delivery timeout, and leaves the rest of its page for the next step', async () => {
    const tenant = await createTenant(sandbox, 'slow-release');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 's:0', url: `${receiver.url}/slow-release` });
    const base = deliveryDeps(sandbox.wiring, sandbox.notifier);
    // Three held retries (sent one by one), to an endpoint that takes 300 ms to answer each.
    for (const n of [1, 2, 3]) {
      const event = deliveredEventFixture({ id: `evt_s${n}`, seq: n, resource: 's:1', parents: ['s:0'], data: n });
      expect(
        await holdDelivery(base, { deliveryId: `msg_s${n}`, tenantId: tenant.id, webhookId: hook.id, events: [event], attempt: 2 }),
      ).toEqual([true, true]);
    }
    const posted: number[] = [];
    const slow: ReturnType<typeof deliveryDeps>['send'] = async (request) => {
      await new Promise((resolve) => setTimeout(resolve, 300));
      posted.push(JSON.parse(request.body).events[0].data);
      return { statusCode: 200, durationMs: 300, error: undefined, retryAfter: undefined, responseSnippet: '' };
    };
    const { deps, sent } = later(0, slow);
    const webhook = await base.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    await startRelease(deps, webhook);
    const [release] = sent.splice(0);
    // deliveryTimeoutMs is 400 here: the step starts at 0 and 300 ms, not at 600.
    expect(await handleDeliverMessage(deps, release as DeliveryMessage)).toBe('released');
    expect(posted).toEqual([1, 2]);
    expect(sent).toMatchObject([{ kind: 'release' }]);
    expect(await handleDeliverMessage(deps, sent.splice(0)[0] as DeliveryMessage)).toBe('released');
    expect(posted).toEqual([1, 2, 3]);
  });
});

describe('deleting a webhook that holds deliveries', () => {
  it('removes what it held and counts those events as discarded by their owner (webhook_deleted), which pages nobody', async () => {
    const tenant = await createTenant(sandbox, 'deleted-holding');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'd:0', url: `${receiver.url}/deleted-holding` });
    await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { status: 'disabled' } });
    await publish(sandbox, tenant.key, [{ resource: 'd:0', type: 'a.b', data: 1 }]);
    await publish(sandbox, tenant.key, [{ resource: 'd:0', type: 'a.b', data: 2 }]);
    const held = async () => (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held;
    for (let i = 0; i < 50 && (await held()) !== 2; i++) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await held()).toBe(2);
    const before = sandbox.metrics.total('EventsDiscardedByOwner', { reason: 'webhook_deleted' });
    expect((await call(sandbox, 'DELETE', `/v1/webhooks/${hook.id}`, { key: tenant.key })).status).toBe(204);
    expect(sandbox.metrics.total('EventsDiscardedByOwner', { reason: 'webhook_deleted' })).toBe(before + 2);
    const stores = deliveryDeps(sandbox.wiring, sandbox.notifier);
    expect(await stores.held.page(hook.id, 10, Date.now())).toMatchObject({ live: [], expired: [] });
  });

  it('counts the events it held as discarded, not a held gap marker, whose events were counted when they were dropped', async () => {
    const tenant = await createTenant(sandbox, 'deleted-marker');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'dm:0', url: `${receiver.url}/deleted-marker` });
    const deps = deliveryDeps(sandbox.wiring, sandbox.notifier);
    const marker = {
      id: 'evt_dm_gap',
      resource: 'dm:0',
      type: 'sluice.gap' as const,
      data: { dropped: 40, reason: 'switch_drop' as const },
      created_at: new Date().toISOString(),
    };
    const held = (n: number, events: DeliveryMessage['events']): DeliveryMessage => ({
      deliveryId: `msg_dm${n}`,
      tenantId: tenant.id,
      webhookId: hook.id,
      events,
      attempt: 1,
    });
    expect(await holdDelivery(deps, held(1, [deliveredEventFixture({ id: 'evt_dm1', seq: 1, resource: 'dm:0' })]))).toEqual([true, true]);
    expect(await holdDelivery(deps, held(2, [marker]))).toEqual([true, true]);
    const before = sandbox.metrics.total('EventsDiscardedByOwner', { reason: 'webhook_deleted' });
    expect((await call(sandbox, 'DELETE', `/v1/webhooks/${hook.id}`, { key: tenant.key })).status).toBe(204);
    expect(sandbox.metrics.total('EventsDiscardedByOwner', { reason: 'webhook_deleted' })).toBe(before + 1);
  });
});

/**
 * The webhook service of the sandbox's stores, but with its delivery stores (held
 * deliveries, overflow counts) going through `client`, which a test has fail or slow
 * down; every ping answered.
 */
function webhookServiceOver(
  client: typeof sandbox.wiring.dynamo,
  more: Partial<ConstructorParameters<typeof WebhookService>[0]> = {},
): WebhookService {
  const delivery = deliveryDeps(sandbox.wiring, sandbox.notifier);
  const stores = deliveryStores({ client, tableName: sandbox.wiring.controlTable, retentionDays: 7 });
  return new WebhookService({
    webhooks: delivery.webhooks as WebhookStore,
    tenants: { get: async () => undefined },
    send: async () => ({ statusCode: 200, durationMs: 1, error: undefined, retryAfter: undefined, responseSnippet: '' }),
    timeoutMs: 1_000,
    now: Date.now,
    delivery: { ...delivery, ...stores },
    ...more,
  });
}

describe('deleting a webhook whose held deliveries cannot all be removed', () => {
  it('is done all the same (not a 500 a retry turns into a 404): the webhook is gone and what it held is left to expire', async () => {
    const tenant = await createTenant(sandbox, 'deleted-cleanup-fails');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'dc:0', url: `${receiver.url}/deleted-cleanup-fails` });
    await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { status: 'disabled' } });
    await publish(sandbox, tenant.key, [{ resource: 'dc:0', type: 'a.b', data: 1 }]);
    const held = async () => (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held;
    for (let i = 0; i < 50 && (await held()) !== 1; i++) await new Promise((resolve) => setTimeout(resolve, 100));
    // DynamoDB fails the batched removal of the held items (after the SDK's own retries).
    const dynamo = sandbox.wiring.dynamo;
    const failingBatches = {
      send: (command: unknown) =>
        command instanceof BatchWriteCommand
          ? Promise.reject(new Error('ProvisionedThroughputExceededException'))
          : dynamo.send(command as never),
    } as typeof dynamo;
    const service = webhookServiceOver(failingBatches);

    await service.delete(tenant.id, hook.id);

    expect((await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).status).toBe(404);
  });
});

describe('deleting a webhook that holds more than one request has time to remove', () => {
  it('answers within its time, its switch removed, and leaves the rest of what it held to expire', async () => {
    const tenant = await createTenant(sandbox, 'deleted-holding-much');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'dh:0', url: `${receiver.url}/deleted-holding-much` });
    const delivery = deliveryDeps(sandbox.wiring, sandbox.notifier);
    // 30 deliveries of three 60 KB events: some 5.4 MB held, six of DynamoDB's 1 MB pages.
    const large = 'x'.repeat(60_000);
    for (let n = 1; n <= 30; n++) {
      const events = [0, 1, 2].map((i) =>
        deliveredEventFixture({ id: `evt_dh${n}_${i}`, seq: 3 * n + i, resource: 'dh:0', data: { large } }),
      );
      const message = { deliveryId: `msg_dh${String(n).padStart(3, '0')}`, tenantId: tenant.id, webhookId: hook.id, events, attempt: 1 };
      expect(await holdDelivery(delivery, message, 100)).toEqual([true, true]);
    }
    const switches = new SwitchStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable });
    const switchInput = { scope: 'webhook' as const, tenant: tenant.id, target: hook.id };
    await switches.set({
      id: switchId(switchInput),
      ...switchInput,
      action: 'pause',
      reason: 'test',
      created_at: new Date().toISOString(),
    });
    // Each page of the held partition takes 700 ms to read, as a throttled one of large items does.
    const dynamo = sandbox.wiring.dynamo;
    const heldPartition = (command: unknown) =>
      command instanceof QueryCommand &&
      String(command.input.ExpressionAttributeValues?.[':pk']).endsWith(hook.id) &&
      String(command.input.ExpressionAttributeValues?.[':pk']).startsWith('held');
    const slowReads = {
      send: async (command: unknown) => {
        if (heldPartition(command)) await new Promise((resolve) => setTimeout(resolve, 700));
        return dynamo.send(command as never);
      },
    } as unknown as typeof dynamo;
    const service = webhookServiceOver(slowReads, { switches, forgetBudgetMs: 300 });
    const before = sandbox.metrics.total('EventsDiscardedByOwner', { reason: 'webhook_deleted' });

    const started = Date.now();
    await service.delete(tenant.id, hook.id);
    const took = Date.now() - started;

    // Six pages at 700 ms each took over 4 s; the first page, read in the 300 ms, is removed.
    expect(took).toBeLessThan(2_500);
    expect((await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).status).toBe(404);
    expect((await switches.list({ lifting: true })).filter((s) => s.target === hook.id)).toEqual([]);
    const discarded = sandbox.metrics.total('EventsDiscardedByOwner', { reason: 'webhook_deleted' }) - before;
    expect(discarded).toBeGreaterThan(0);
    const left = await delivery.held.count(hook.id);
    expect(left).toBeGreaterThan(0);
    expect(discarded + 3 * left).toBe(90);
  });
});

describe('a webhook deleted while a delivery to it waits for its answer', () => {
  it('counts that delivery as discarded by its owner when the answer would hold it (410), not as held overflow, which pages on-call', async () => {
    const tenant = await createTenant(sandbox, 'deleted-mid-delivery');
    let hookId = '';
    // The owner takes the endpoint down (410) and deletes the webhook while a delivery waits for that answer.
    receiver.answer('/deleted-mid-delivery', async ({ ping }) => {
      if (ping) return 200;
      expect((await call(sandbox, 'DELETE', `/v1/webhooks/${hookId}`, { key: tenant.key })).status).toBe(204);
      return 410;
    });
    hookId = (await createWebhook(sandbox, tenant.key, { resource: 'dm:0', url: `${receiver.url}/deleted-mid-delivery` })).id;
    const overflowBefore = sandbox.metrics.total('EventsHeldOverflow');
    const discardedBefore = sandbox.metrics.total('EventsDiscardedByOwner', { reason: 'webhook_deleted' });

    await publish(sandbox, tenant.key, [{ resource: 'dm:0', type: 'a.b', data: 1 }]);
    await receiver.waitFor(() => sandbox.metrics.total('EventsDiscardedByOwner', { reason: 'webhook_deleted' }) > discardedBefore, 5_000);

    expect(sandbox.metrics.total('EventsDiscardedByOwner', { reason: 'webhook_deleted' })).toBe(discardedBefore + 1);
    expect(sandbox.metrics.total('EventsHeldOverflow')).toBe(overflowBefore);
    const overflow = await sandbox.wiring.dynamo.send(
      new QueryCommand({
        TableName: sandbox.wiring.controlTable,
        KeyConditionExpression: 'pk = :pk',
        ExpressionAttributeValues: { ':pk': `overflow#${hookId}` },
      }),
    );
    expect(overflow.Items).toEqual([]);
  });
});

describe("a webhook deleted while its deliveries wait for their shares of an endpoint's pace", () => {
  it('drops them at their next look, not after going round the deliver queue until their times, days ahead', async () => {
    const tenant = await createTenant(sandbox, 'deleted-paced');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'dp:0', url: `${receiver.url}/deleted-paced` });
    const { deps, sent } = later(40_000_000);
    // A delivery given its share two days ahead, behind a backlog that had taken its
    // endpoint's time that far (as a version that held no quick endpoint's backlog gave it:
    // now one past 5 s is held, see 'holds a quick endpoint's deliveries ...').
    await deps.paces.reserve(hook.id, 2 * 86_400_000, deps.now());
    const message: DeliveryMessage = {
      deliveryId: 'msg_dp1',
      tenantId: tenant.id,
      webhookId: hook.id,
      events: [deliveredEventFixture({ id: 'evt_dp1', seq: 1, resource: 'dp:1', parents: ['dp:0'], data: 1 })],
      attempt: 1,
      sendAt: deps.now() + 2 * 86_400_000 - 1_000,
    };
    expect(await handleDeliverMessage(deps, message)).toBe('throttled');
    const [waiting] = sent.splice(0) as DeliveryMessage[];
    expect(waiting?.notBefore).toBeDefined();
    const discarded = () => sandbox.metrics.total('EventsDiscardedByOwner', { reason: 'webhook_deleted' });
    const before = discarded();

    // Its owner deletes the webhook (the endpoint will never keep up).
    expect((await call(sandbox, 'DELETE', `/v1/webhooks/${hook.id}`, { key: tenant.key })).status).toBe(204);

    // At its next look, 15 minutes on, it is dropped and counted, not sent round again.
    const { deps: look, sent: again } = later(40_000_000 + 901_000);
    expect(await handleDeliverMessage(look, waiting as DeliveryMessage)).toBe('dropped');
    expect(again).toEqual([]);
    expect(discarded() - before).toBe(1);
  });
});

describe('a webhook its owner disabled', () => {
  it('holds up to the cap and counts the rest as discarded by its owner, which pages nobody, and a gap marker stands for them', async () => {
    const tenant = await createTenant(sandbox, 'owner-disabled');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'od:0', url: `${receiver.url}/owner-disabled` });
    await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { status: 'disabled' } });
    const overflowBefore = sandbox.metrics.total('EventsHeldOverflow');
    const discardedBefore = sandbox.metrics.total('EventsDiscardedByOwner', { reason: 'disabled_overflow' });
    // One delivery at a time (a turn would merge events that wait together).
    const held = async () => (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held;
    for (const n of [1, 2]) {
      await publish(sandbox, tenant.key, [{ resource: 'od:0', type: 'a.b', data: n }]);
      for (let i = 0; i < 50 && (await held()) !== n; i++) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await publish(sandbox, tenant.key, [{ resource: 'od:0', type: 'a.b', data: 3 }]);
    await receiver.waitFor(
      () => sandbox.metrics.total('EventsDiscardedByOwner', { reason: 'disabled_overflow' }) === discardedBefore + 1,
      10_000,
    );
    expect(sandbox.metrics.total('EventsHeldOverflow')).toBe(overflowBefore);
    // Enabled again: the two held, then the marker for the third.
    await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { status: 'active' } });
    await receiver.waitFor(() => okEvents('/owner-disabled').length === 3, 10_000);
    expect(okEvents('/owner-disabled').map((e) => (e.type === 'sluice.gap' ? 'gap' : e.data))).toEqual([1, 2, 'gap']);
  });
});

describe('a gap marker held behind events of its resource', () => {
  it('is released after them, as it came: a subscriber that resyncs on the marker gets no older event after it', async () => {
    const tenant = await createTenant(sandbox, 'marker-order');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'mk:0', url: `${receiver.url}/marker-order` });
    await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { status: 'disabled' } });
    const { deps } = later(0);
    // An event of mk:1 is held; then the marker a lifted drop switch publishes for mk:1 (the events it dropped came after).
    const event = deliveredEventFixture({ id: 'evt_mk1', seq: 1, resource: 'mk:1', parents: ['mk:0'], data: 1 });
    expect(
      await handleDeliverMessage(deps, { deliveryId: 'msg_mk1', tenantId: tenant.id, webhookId: hook.id, events: [event], attempt: 1 }),
    ).toBe('held');
    const marker: DeliveryMessage = {
      deliveryId: 'msg_mkgap',
      tenantId: tenant.id,
      webhookId: hook.id,
      events: [
        {
          id: 'evt_mkgap',
          resource: 'mk:1',
          type: 'sluice.gap',
          data: { dropped: 5, reason: 'switch_drop' },
          created_at: new Date().toISOString(),
        },
      ],
      attempt: 1,
    };
    expect(await handleDeliverMessage(deps, marker)).toBe('held');

    await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { status: 'active' } });
    await receiver.waitFor(() => okEvents('/marker-order').length === 2, 10_000);
    expect(okEvents('/marker-order').map((e) => (e.type === 'sluice.gap' ? 'gap' : e.seq))).toEqual([1, 'gap']);
  });
});

describe('a delivery held behind a release chain as the chain ends', () => {
  const message = (tenantId: string, webhookId: string, n: number): DeliveryMessage => ({
    deliveryId: `msg_re${n}`,
    tenantId,
    webhookId,
    events: [deliveredEventFixture({ id: `evt_re${n}`, seq: n, resource: 're:1', data: n })],
    attempt: 1,
  });
  /** The webhook store of `deps`, with reads answered by `get`. */
  const readingWith = (deps: ReturnType<typeof deliveryDeps>, get: WebhookStore['get']) => {
    const store = deps.webhooks as WebhookStore;
    return new Proxy(store, {
      get: (target, property) => {
        if (property === 'get') return get;
        const value = Reflect.get(target, property);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  };
  /** Runs the release steps `sent` holds as the deliver queue would, until the chain asks for no more. */
  const runChain = async (deps: ReturnType<typeof deliveryDeps>, sent: unknown[]) => {
    for (let step = 0; step < 10; step++) {
      const next = sent.splice(0).filter((m) => (m as { kind?: string }).kind === 'release');
      if (next.length === 0) return;
      for (const m of next) await handleDeliverMessage(deps, m as DeliveryMessage);
    }
  };

  it('is released when it read the webhook while the chain still held deliveries and is counted after the chain ended', async () => {
    const tenant = await createTenant(sandbox, 'release-ended');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 're:1', url: `${receiver.url}/release-ended` });
    const { deps, sent } = later(0);
    expect(await holdDelivery(deps, message(tenant.id, hook.id, 1))).toEqual([true, true]);
    // What a delivery read before the chain released the first one: something held.
    const before = await deps.webhooks.get(tenant.id, hook.id);
    if (!before) throw new Error('no webhook');
    await startRelease(deps, before);
    await runChain(deps, sent);
    await receiver.waitFor(() => okEvents('/release-ended').length === 1, 5_000);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.releaseToken).toBeUndefined();

    // That delivery holds behind what it read, after the chain ended.
    const stale = { ...deps, webhooks: readingWith(deps, async () => ({ ...before, releaseAt: Date.now() })) };
    expect(await handleDeliverMessage(stale, message(tenant.id, hook.id, 2))).toBe('held');

    await runChain(deps, sent);
    await receiver.waitFor(() => okEvents('/release-ended').length === 2, 5_000);
    expect(okEvents('/release-ended').map((e) => e.data)).toEqual([1, 2]);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(0);
  });

  it('is released when another container changes the endpoint health between its count and the start of its chain', async () => {
    const tenant = await createTenant(sandbox, 'release-raced');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 're:1', url: `${receiver.url}/release-raced` });
    const { deps, sent } = later(0);
    expect(await holdDelivery(deps, message(tenant.id, hook.id, 1))).toEqual([true, true]);
    const before = await deps.webhooks.get(tenant.id, hook.id);
    if (!before) throw new Error('no webhook');
    await startRelease(deps, before);
    await runChain(deps, sent);
    await receiver.waitFor(() => okEvents('/release-raced').length === 1, 5_000);

    // A second container's delivery succeeds a minute after the last success was written:
    // its health write lands just after this container counts its delivery as held.
    const other = later(61_000).deps;
    const store = deps.webhooks as WebhookStore;
    // Its first read is from before the chain released the first delivery: something held.
    let reads = 0;
    const reading: WebhookStore['get'] = async (tenantId, id) =>
      ++reads === 1 ? { ...before, releaseAt: Date.now() } : store.get(tenantId, id);
    const racing = {
      ...deps,
      webhooks: new Proxy(readingWith(deps, reading), {
        get: (target, property) => {
          if (property !== 'countHeld') return Reflect.get(target, property);
          return async (...args: Parameters<WebhookStore['countHeld']>) => {
            const counted = await store.countHeld(...args);
            const seen = await other.webhooks.get(tenant.id, hook.id);
            if (!seen) throw new Error('no webhook');
            expect((await applyHealth(other, seen, { type: 'success', now: other.now() })).healthVersion).toBe(seen.healthVersion + 1);
            return counted;
          };
        },
      }),
    };
    expect(await handleDeliverMessage(racing, message(tenant.id, hook.id, 2))).toBe('held');

    await runChain(deps, sent);
    await receiver.waitFor(() => okEvents('/release-raced').length === 2, 5_000);
    expect(okEvents('/release-raced').map((e) => e.data)).toEqual([1, 2]);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(0);
  });

  it('keeps the chain going when a delivery is counted as held after its last step found nothing held', async () => {
    const tenant = await createTenant(sandbox, 'release-ending');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 're:1', url: `${receiver.url}/release-ending` });
    const { deps, sent } = later(0);
    expect(await holdDelivery(deps, message(tenant.id, hook.id, 1))).toEqual([true, true]);
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    await startRelease(deps, webhook);
    // The first step sends what is held and asks for the next.
    const [first] = sent.splice(0);
    expect(await handleDeliverMessage(deps, first as DeliveryMessage)).toBe('released');
    // The last step finds nothing held; right after it reads the webhook, another delivery is held.
    let reads = 0;
    const racing = {
      ...deps,
      webhooks: readingWith(deps, async (tenantId, id) => {
        const read = await deps.webhooks.get(tenantId, id);
        if (++reads === 2) await holdDelivery(deps, message(tenant.id, hook.id, 2));
        return read;
      }),
    };
    const [last] = sent.splice(0);
    expect(await handleDeliverMessage(racing, last as DeliveryMessage)).toBe('released');
    expect(reads).toBe(2);

    await runChain(deps, sent);
    await receiver.waitFor(() => okEvents('/release-ending').length === 2, 5_000);
    expect(okEvents('/release-ending').map((e) => e.data)).toEqual([1, 2]);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(0);
  });
});
