/**
 * Kill switches and the alarms that page on-call (SPEC §2, §3 Admin, §5), in the
 * sandbox: pause holds and then delivers in order, drop discards and then sends
 * one gap marker, a switch on one tenant leaves another alone, and the canary
 * alarm follows the canary's round trip.
 */
import { describe, expect, it } from 'vitest';
import { account, newCounts } from '../../bench/accounting.ts';
import { batchWrite } from '../../functions/adapters/dynamo.ts';
import { GapCounts } from '../../functions/adapters/gap-counts.ts';
import { QueueStore } from '../../functions/adapters/queue-store.ts';
import { StreamStore } from '../../functions/adapters/stream-store.ts';
import { CachedSwitches, SwitchStore } from '../../functions/adapters/switch-store.ts';
import { handleDeliverMessage } from '../../functions/app/delivery.ts';
import { MAX_DROPPED_PARENTS } from '../../functions/app/distributor.ts';
import { apiServices, deliveryDeps, deliveryStores } from '../../functions/app/runtime.ts';
import { liftSwitch, setSwitch, switchId } from '../../functions/app/switches.ts';
import { derivedId } from '../../functions/core/ids.ts';
import type { Switch } from '../../functions/core/switches.ts';
import { CONTROL_PK } from '../../functions/definitions/tables.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook, publish } from '../support/api.ts';
import { deliveredEventFixture } from '../support/fixtures.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;

// Alarm periods shrunk 100×: canary stale looks at the last 3 s instead of 5 min.
// Every AWS call the sandbox makes, by operation and target (a test counts the stream lookups of a drop).
const counts = newCounts();

withSandbox(
  { alarmTimeScale: 0.01, onCall: (c) => account(counts, c), config: { canaryIntervalSeconds: 1, switchCacheMs: 500 } },
  (s, r) => {
    [sandbox, receiver] = [s, r];
  },
);

const admin = () => ({ key: sandbox.adminKey });
const okEvents = (path: string) => receiver.acceptedEvents(path);

async function settle(ms: number) {
  await new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Waits until `count` events of the object were dropped since `before` (the metric's
 * total), and expects no more. On a timeout the error says how many were, what its
 * webhook at `path` received, and what its meta item shows.
 */
async function expectDropped(tenantId: string, resource: string, path: string, before: number, count: number, timeoutMs: number) {
  const dropped = () => sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' }) - before;
  await receiver
    .waitFor(() => dropped() >= count, timeoutMs)
    .catch(async (error: Error) => {
      const queues = new QueueStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.eventsTable, retentionDays: 7 });
      const { inline, switchDroppedParents, ...meta } = (await queues.readMeta({ tenantId, resource })) ?? {};
      throw new Error(
        `${error.message}: ${dropped()} of ${count} dropped, ${okEvents(path).length} delivered, ` +
          `meta ${JSON.stringify({ ...meta, inline: inline !== undefined, keptParents: switchDroppedParents?.length })}`,
      );
    });
  expect(dropped()).toBe(count);
}

describe('kill switches', () => {
  it('pause on a resource holds its events, and lifting delivers them all in order', async () => {
    const tenant = await createTenant(sandbox, 'paused');
    await createWebhook(sandbox, tenant.key, { resource: 'doc:1', url: `${receiver.url}/paused` });
    const set = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'resource', tenant: tenant.id, target: 'doc:1', action: 'pause', reason: 'test' },
    });
    expect(set.status).toBe(200);
    expect(set.body).toMatchObject({ id: expect.stringMatching(/^sw_/), scope: 'resource', action: 'pause' });
    await settle(700);
    for (let i = 0; i < 5; i++) await publish(sandbox, tenant.key, [{ resource: 'doc:1', type: 'doc.edited', data: i }]);
    await settle(800);
    expect(okEvents('/paused')).toHaveLength(0);
    expect((await call(sandbox, 'GET', '/v1/admin/switches', admin())).body.data.map((s: { id: string }) => s.id)).toContain(set.body.id);

    expect((await call(sandbox, 'DELETE', `/v1/admin/switches/${set.body.id}`, admin())).status).toBe(204);
    await receiver.waitFor(() => okEvents('/paused').length === 5, 10_000);
    expect(okEvents('/paused').map((e) => e.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(okEvents('/paused').map((e) => e.data)).toEqual([0, 1, 2, 3, 4]);
  });

  it('drop on a resource discards and counts, and lifting sends one gap marker with the count', async () => {
    const tenant = await createTenant(sandbox, 'dropped');
    await createWebhook(sandbox, tenant.key, { resource: 'feed:1', url: `${receiver.url}/dropped`, types: ['feed.*'] });
    await publish(sandbox, tenant.key, [{ resource: 'feed:1', type: 'feed.item', data: 'before' }]);
    await receiver.waitFor(() => okEvents('/dropped').length === 1);
    const set = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'resource', tenant: tenant.id, target: 'feed:1', action: 'drop', reason: 'flood' },
    });
    await settle(700);
    const droppedBefore = sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' });
    for (let i = 0; i < 4; i++) await publish(sandbox, tenant.key, [{ resource: 'feed:1', type: 'feed.item', data: `dropped ${i}` }]);
    await receiver.waitFor(() => sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' }) === droppedBefore + 4, 10_000);
    await call(sandbox, 'DELETE', `/v1/admin/switches/${set.body.id}`, admin());
    await receiver.waitFor(() => okEvents('/dropped').some((e) => e.type === 'sluice.gap'), 10_000);
    await publish(sandbox, tenant.key, [{ resource: 'feed:1', type: 'feed.item', data: 'after' }]);
    await receiver.waitFor(() => okEvents('/dropped').length === 3, 10_000);
    const events = okEvents('/dropped');
    expect(events.map((e) => e.type)).toEqual(['feed.item', 'sluice.gap', 'feed.item']);
    expect(events[1]).toMatchObject({ resource: 'feed:1', data: { dropped: 4, reason: 'switch_drop' } });
    // The dropped events used seqs 2-5: the consumer sees the gap in seq, and the marker explains it.
    expect(events[2]?.seq).toBe(6);
  });

  it('drops events that name many parents nobody subscribes to, without growing the object past what DynamoDB stores (400 KB)', async () => {
    const tenant = await createTenant(sandbox, 'many-parents');
    await createWebhook(sandbox, tenant.key, { resource: 'mp:1', url: `${receiver.url}/many-parents` });
    await createWebhook(sandbox, tenant.key, { resource: 'mp:parent', url: `${receiver.url}/many-parents-parent` });
    const drop = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'resource', tenant: tenant.id, target: 'mp:1', action: 'drop' },
    });
    await settle(700);
    const droppedBefore = sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' });
    // 200 events naming 20 parents each, all different and long (800 KB of names), one of
    // them subscribed. Each parent is looked up once (a webhook or a stream on it?), and a
    // chunk's lookups are made before its commit: sent 25 events at a time, each dropped
    // before the next are sent, so that no chunk looks up more than 500 parents. All 4,000
    // in two chunks took seconds each, more beside other test files (the whole test took
    // 30 s beside five busy loops on a 2-core machine), and a chunk past the distributor's
    // 20 s timeout holds the object for 120 s (see the test below). The switch is lifted
    // whatever happens, so that a failure here does not leave it on for the tests after.
    try {
      for (let r = 0; r < 8; r++) {
        const events = Array.from({ length: 25 }, (_, i) => ({
          resource: 'mp:1',
          parents: Array.from({ length: 20 }, (_, p) =>
            r === 0 && i === 0 && p === 0 ? 'mp:parent' : `mp:${r}:${i}:${p}:`.padEnd(200, 'x'),
          ),
          type: 'a.b',
          data: i,
        }));
        expect((await publish(sandbox, tenant.key, events)).status).toBe(202);
        await expectDropped(tenant.id, 'mp:1', '/many-parents', droppedBefore, 25 * (r + 1), 30_000);
      }
    } finally {
      await call(sandbox, 'DELETE', `/v1/admin/switches/${drop.body.id}`, admin());
    }
    await receiver.waitFor(() => okEvents('/many-parents').length === 1 && okEvents('/many-parents-parent').length === 1, 10_000);
    for (const path of ['/many-parents', '/many-parents-parent']) {
      expect(okEvents(path)).toMatchObject([{ type: 'sluice.gap', resource: 'mp:1', data: { dropped: 200, reason: 'switch_drop' } }]);
    }
  }, 180_000);

  it('drops events that name more parents with a stream than the object can keep for its gap marker, and goes on dropping', async () => {
    const tenant = await createTenant(sandbox, 'streamed-parents');
    await createWebhook(sandbox, tenant.key, { resource: 'sp:1', url: `${receiver.url}/streamed-parents` });
    // 2,400 parents, each with an active stream (polled once), 200 characters long: some 480 KB of names.
    const parents = Array.from({ length: 2_400 }, (_, i) => `sp:${i}:`.padEnd(200, 'x'));
    const streams = new StreamStore({
      client: sandbox.wiring.dynamo,
      controlTable: sandbox.wiring.controlTable,
      eventsTable: sandbox.wiring.eventsTable,
      retentionDays: sandbox.wiring.config.retentionDays,
    });
    for (let at = 0; at < parents.length; at += 100) {
      await Promise.all(parents.slice(at, at + 100).map((parent) => streams.touch(tenant.id, parent, Date.now())));
    }
    const drop = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'resource', tenant: tenant.id, target: 'sp:1', action: 'drop' },
    });
    expect(drop.body).toMatchObject({ action: 'drop' });
    await settle(700);
    const droppedBefore = sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' });
    const streamReads = () => counts.dynamoTargets['GetItem stream/stream'] ?? 0;
    const streamReadsBefore = streamReads();
    try {
      for (let r = 0; r < 2; r++) {
        const events = Array.from({ length: 60 }, (_, i) => ({
          resource: 'sp:1',
          parents: parents.slice((r * 60 + i) * 20, (r * 60 + i + 1) * 20),
          type: 'a.b',
          data: i,
        }));
        const published = await publish(sandbox, tenant.key, events);
        expect(published.status).toBe(202);
        expect(published.body.events.filter((e: { status: string }) => e.status === 'accepted')).toHaveLength(60);
      }
      // The parents are looked up until the object keeps its most: seconds at most. (The
      // test timed out twice in CI when all 2,400 were: the first chunk's 4,000 lookups
      // could outlast the distributor's 20 s timeout on a busy machine, and a timed-out
      // doorbell holds its FIFO group for its visibility timeout, 120 s. A 21 s wait
      // planted there fails the same way: 100 of 120 dropped.)
      await expectDropped(tenant.id, 'sp:1', '/streamed-parents', droppedBefore, 120, 90_000);
      // Looked up only until the object kept its most (200, in slices of 100), not all 2,400.
      expect(streamReads() - streamReadsBefore).toBeLessThanOrEqual(MAX_DROPPED_PARENTS + 100);
    } finally {
      await call(sandbox, 'DELETE', `/v1/admin/switches/${drop.body.id}`, admin());
    }
    await receiver.waitFor(() => okEvents('/streamed-parents').length === 1, 10_000);
    expect(okEvents('/streamed-parents')).toMatchObject([
      { type: 'sluice.gap', resource: 'sp:1', data: { dropped: 120, reason: 'switch_drop' } },
    ]);
  }, 120_000);

  it("drop on a tenant: lifting it sends each dropped-on object's gap marker, though those objects went idle meanwhile", async () => {
    const tenant = await createTenant(sandbox, 'tenant-dropped');
    await createWebhook(sandbox, tenant.key, { resource: 'group:1', url: `${receiver.url}/tenant-dropped` });
    const set = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'tenant', tenant: tenant.id, action: 'drop', reason: 'flood' },
    });
    await settle(700);
    const droppedBefore = sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' });
    await publish(sandbox, tenant.key, [
      { resource: 'item:1', parents: ['group:1'], type: 'a.b', data: 1 },
      { resource: 'item:2', parents: ['group:1'], type: 'a.b', data: 2 },
      { resource: 'item:2', parents: ['group:1'], type: 'a.b', data: 3 },
    ]);
    // Both objects' turns dropped their events and went idle.
    await receiver.waitFor(() => sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' }) === droppedBefore + 3, 10_000);
    await call(sandbox, 'DELETE', `/v1/admin/switches/${set.body.id}`, admin());
    await receiver.waitFor(() => okEvents('/tenant-dropped').length === 2, 10_000);
    const markers = okEvents('/tenant-dropped').map((e) => `${e.type} ${e.resource} ${(e.data as { dropped: number }).dropped}`);
    expect(markers.sort()).toEqual(['sluice.gap item:1 1', 'sluice.gap item:2 2']);
  });

  it('a drop set over a pause discards what the pause held, at once: nothing of it is delivered, and lifting sends one gap marker', async () => {
    const tenant = await createTenant(sandbox, 'pause-then-drop');
    await createWebhook(sandbox, tenant.key, { resource: 'pd:1', url: `${receiver.url}/pause-then-drop` });
    const scope = { scope: 'resource', tenant: tenant.id, target: 'pd:1' };
    await call(sandbox, 'PUT', '/v1/admin/switches', { ...admin(), body: { ...scope, action: 'pause' } });
    await settle(700);
    for (let i = 0; i < 3; i++) await publish(sandbox, tenant.key, [{ resource: 'pd:1', type: 'a.b', data: `paused ${i}` }]);
    await settle(500);
    const droppedBefore = sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' });

    // The same scope again, now drop: it replaces the pause, and the held events go with it.
    const drop = await call(sandbox, 'PUT', '/v1/admin/switches', { ...admin(), body: { ...scope, action: 'drop' } });
    expect(drop.body).toMatchObject({ action: 'drop' });
    // (Within seconds: the first one, kept on its object's meta item, is dropped 6 s after it came.)
    await receiver.waitFor(() => sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' }) === droppedBefore + 3, 10_000);
    for (let i = 0; i < 2; i++) await publish(sandbox, tenant.key, [{ resource: 'pd:1', type: 'a.b', data: `dropped ${i}` }]);
    await receiver.waitFor(() => sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' }) === droppedBefore + 5, 10_000);

    await call(sandbox, 'DELETE', `/v1/admin/switches/${drop.body.id}`, admin());
    await receiver.waitFor(() => okEvents('/pause-then-drop').length > 0, 10_000);
    await settle(1_000);
    expect(okEvents('/pause-then-drop')).toMatchObject([{ type: 'sluice.gap', data: { dropped: 5, reason: 'switch_drop' } }]);
  });

  it("a resource drop set while its tenant is paused discards the resource's held events at once, and only those", async () => {
    const tenant = await createTenant(sandbox, 'paused-tenant-drop');
    await createWebhook(sandbox, tenant.key, { resource: 'ptd:group', url: `${receiver.url}/paused-tenant-drop` });
    const pause = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'tenant', tenant: tenant.id, action: 'pause' },
    });
    await settle(700);
    await publish(sandbox, tenant.key, [
      { resource: 'ptd:1', parents: ['ptd:group'], type: 'a.b', data: 'dropped' },
      { resource: 'ptd:2', parents: ['ptd:group'], type: 'a.b', data: 'kept' },
    ]);
    await settle(500);
    const droppedBefore = sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' });
    const drop = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'resource', tenant: tenant.id, target: 'ptd:1', action: 'drop' },
    });
    await receiver.waitFor(() => sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' }) === droppedBefore + 1, 10_000);
    expect(okEvents('/paused-tenant-drop')).toHaveLength(0);

    await call(sandbox, 'DELETE', `/v1/admin/switches/${drop.body.id}`, admin());
    await call(sandbox, 'DELETE', `/v1/admin/switches/${pause.body.id}`, admin());
    await receiver.waitFor(() => okEvents('/paused-tenant-drop').length === 2, 10_000);
    const seen = okEvents('/paused-tenant-drop').map((e) => `${e.type} ${e.resource} ${JSON.stringify(e.data)}`);
    expect(seen.sort()).toEqual(['a.b ptd:2 "kept"', 'sluice.gap ptd:1 {"dropped":1,"reason":"switch_drop"}']);
  });

  it("a resource switch stops that resource's own events, not those of its children that reach its webhooks (as the README says)", async () => {
    const tenant = await createTenant(sandbox, 'parent-switch');
    await createWebhook(sandbox, tenant.key, { resource: 'ps:parent', url: `${receiver.url}/parent-switch` });
    const pause = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'resource', tenant: tenant.id, target: 'ps:parent', action: 'pause' },
    });
    await settle(700);
    await publish(sandbox, tenant.key, [
      { resource: 'ps:parent', type: 'a.b', data: 'own' },
      { resource: 'ps:child', parents: ['ps:parent'], type: 'a.b', data: 'child' },
    ]);
    await receiver.waitFor(() => okEvents('/parent-switch').length === 1, 5_000);
    await settle(500);
    expect(okEvents('/parent-switch').map((e) => e.data)).toEqual(['child']);
    await call(sandbox, 'DELETE', `/v1/admin/switches/${pause.body.id}`, admin());
    await receiver.waitFor(() => okEvents('/parent-switch').length === 2, 10_000);
  });

  it('pause on a webhook holds its deliveries until lifted; a tenant switch leaves other tenants alone', async () => {
    const a = await createTenant(sandbox, 'switched');
    const b = await createTenant(sandbox, 'bystander');
    const hookA = await createWebhook(sandbox, a.key, { resource: 'w:1', url: `${receiver.url}/switched` });
    await createWebhook(sandbox, b.key, { resource: 'w:1', url: `${receiver.url}/bystander` });
    const webhookSwitch = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'webhook', tenant: a.id, target: hookA.id, action: 'pause' },
    });
    const tenantSwitch = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'tenant', tenant: a.id, action: 'pause' },
    });
    await settle(700);
    const started = Date.now();
    await publish(sandbox, a.key, [{ resource: 'w:1', type: 'a.b', data: 'a' }]);
    await publish(sandbox, b.key, [{ resource: 'w:1', type: 'a.b', data: 'b' }]);
    await receiver.waitFor(() => okEvents('/bystander').length === 1, 5_000);
    expect(Date.now() - started).toBeLessThan(3_000);
    await settle(500);
    expect(okEvents('/switched')).toHaveLength(0);
    await call(sandbox, 'DELETE', `/v1/admin/switches/${tenantSwitch.body.id}`, admin());
    await settle(1_000);
    // Still held by the webhook switch.
    expect(okEvents('/switched')).toHaveLength(0);
    expect((await call(sandbox, 'GET', `/v1/webhooks/${hookA.id}`, { key: a.key })).body.health.held).toBe(1);
    await call(sandbox, 'DELETE', `/v1/admin/switches/${webhookSwitch.body.id}`, admin());
    await receiver.waitFor(() => okEvents('/switched').length === 1, 10_000);
  });

  it('keeps holding under a tenant drop what a lifted webhook pause held, and sends no gap marker before the drop is lifted', async () => {
    const tenant = await createTenant(sandbox, 'held-under-drop');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'hud:1', url: `${receiver.url}/held-under-drop` });
    const pause = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'webhook', tenant: tenant.id, target: hook.id, action: 'pause' },
    });
    await settle(700);
    await publish(sandbox, tenant.key, [{ resource: 'hud:1', type: 'a.b', data: 'held' }]);
    const held = async () => (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held;
    for (let i = 0; i < 50 && (await held()) !== 1; i++) await settle(100);
    const drop = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'tenant', tenant: tenant.id, action: 'drop' },
    });
    await settle(700);
    await publish(sandbox, tenant.key, [{ resource: 'hud:2', parents: ['hud:1'], type: 'a.b', data: 'dropped' }]);
    await settle(1_000);

    // The webhook's pause is lifted, but the tenant's drop still stops it: nothing goes out.
    await call(sandbox, 'DELETE', `/v1/admin/switches/${pause.body.id}`, admin());
    await settle(2_500);
    expect(receiver.deliveries('/held-under-drop')).toHaveLength(0);
    expect(await held()).toBe(1);

    // Lifted: what was held, then the marker for what was dropped.
    await call(sandbox, 'DELETE', `/v1/admin/switches/${drop.body.id}`, admin());
    await receiver.waitFor(() => okEvents('/held-under-drop').length === 2, 10_000);
    expect(okEvents('/held-under-drop').map((e) => `${e.type} ${e.resource} ${JSON.stringify(e.data)}`)).toEqual([
      'a.b hud:1 "held"',
      'sluice.gap hud:2 {"dropped":1,"reason":"switch_drop"}',
    ]);
  });

  it('sends the gap marker of a webhook drop once, at its lift, even when a release ran while the drop was in force', async () => {
    const tenant = await createTenant(sandbox, 'one-marker');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'om:1', url: `${receiver.url}/one-marker` });
    const drop = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'webhook', tenant: tenant.id, target: hook.id, action: 'drop' },
    });
    await settle(700);
    const droppedBefore = sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' });
    await publish(sandbox, tenant.key, [{ resource: 'om:1', type: 'a.b', data: 1 }]);
    await receiver.waitFor(() => sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' }) === droppedBefore + 1, 10_000);
    // A tenant pause set and lifted meanwhile starts a release for each of the tenant's webhooks.
    const pause = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'tenant', tenant: tenant.id, action: 'pause' },
    });
    await call(sandbox, 'DELETE', `/v1/admin/switches/${pause.body.id}`, admin());
    await settle(2_500);
    expect(receiver.deliveries('/one-marker')).toHaveLength(0);
    await publish(sandbox, tenant.key, [{ resource: 'om:1', type: 'a.b', data: 2 }]);
    await receiver.waitFor(() => sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' }) >= droppedBefore + 2, 10_000);

    await call(sandbox, 'DELETE', `/v1/admin/switches/${drop.body.id}`, admin());
    await receiver.waitFor(() => okEvents('/one-marker').length > 0, 10_000);
    await settle(1_500);
    // Two events dropped, and only they: no marker was sent (and dropped) under the switch.
    expect(okEvents('/one-marker')).toMatchObject([{ type: 'sluice.gap', resource: 'om:1', data: { dropped: 2, reason: 'switch_drop' } }]);
    expect(sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' })).toBe(droppedBefore + 2);
  });

  it('releases a delivery held under a pause by a worker whose cache still showed it after the lift, and what is held behind it, within seconds', async () => {
    const tenant = await createTenant(sandbox, 'stale-pause');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'sp:1', url: `${receiver.url}/stale-pause` });
    const held = async () => (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held;
    const pause = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'webhook', tenant: tenant.id, target: hook.id, action: 'pause' },
    });
    // A delivery worker that read the switches now, and keeps them for 10 s (the longest a cache may).
    const stale = new CachedSwitches(new SwitchStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable }), 10_000);
    expect(await stale.current()).toMatchObject([{ id: pause.body.id, action: 'pause' }]);
    await settle(700);
    await publish(sandbox, tenant.key, [{ resource: 'sp:1', type: 'a.b', data: 'paused' }]);
    for (let i = 0; i < 50 && (await held()) !== 1; i++) await settle(100);
    // Lifted: its release delivers what was held, and ends.
    await call(sandbox, 'DELETE', `/v1/admin/switches/${pause.body.id}`, admin());
    await receiver.waitFor(() => okEvents('/stale-pause').length === 1, 10_000);
    // Its chain has ended once no step came for 2 s (steps come a second apart).
    const webhooks = deliveryDeps(sandbox.wiring, sandbox.notifier).webhooks;
    const quietFor = async () => Date.now() - ((await webhooks.get(tenant.id, hook.id))?.releaseAt ?? 0);
    for (let i = 0; i < 100 && (await quietFor()) < 2_000; i++) await settle(100);
    expect(await held()).toBe(0);

    // The stale worker holds a delivery under the pause it still sees; the next one, read afresh, is held behind it.
    const late = deliveredEventFixture({ id: 'evt_stalepause', seq: 1, resource: 'sp:2', parents: ['sp:1'], data: 'held late' });
    const deps = { ...deliveryDeps(sandbox.wiring, sandbox.notifier), switches: stale };
    const message = { deliveryId: 'msg_stalepause', tenantId: tenant.id, webhookId: hook.id, events: [late], attempt: 1 };
    expect(await handleDeliverMessage(deps, message)).toBe('held');
    await publish(sandbox, tenant.key, [{ resource: 'sp:1', type: 'a.b', data: 'after' }]);

    // Both go out within seconds (the switch cache's window and a margin), with no other event published.
    await receiver.waitFor(() => okEvents('/stale-pause').length === 3, 8_000);
    expect(new Set(okEvents('/stale-pause').map((e) => e.data))).toEqual(new Set(['paused', 'held late', 'after']));
    for (let i = 0; i < 50 && (await held()) !== 0; i++) await settle(100);
    expect(await held()).toBe(0);
  });

  it('sends the gap marker for a delivery dropped by a worker whose cache still showed the drop switch after the lift', async () => {
    const tenant = await createTenant(sandbox, 'stale-drop');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'sd:1', url: `${receiver.url}/stale-drop` });
    const drop = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'webhook', tenant: tenant.id, target: hook.id, action: 'drop' },
    });
    const stale = new CachedSwitches(new SwitchStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable }), 10_000);
    expect(await stale.current()).toMatchObject([{ id: drop.body.id, action: 'drop' }]);
    await call(sandbox, 'DELETE', `/v1/admin/switches/${drop.body.id}`, admin());
    // The lift's release found nothing to send, and ended (no step came for 2 s).
    const webhooks = deliveryDeps(sandbox.wiring, sandbox.notifier).webhooks;
    const quietFor = async () => Date.now() - ((await webhooks.get(tenant.id, hook.id))?.releaseAt ?? 0);
    for (let i = 0; i < 100 && (await quietFor()) < 2_000; i++) await settle(100);
    const droppedBefore = sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' });

    const event = deliveredEventFixture({ id: 'evt_staledrop', seq: 1, resource: 'sd:1', data: 'dropped late' });
    const deps = { ...deliveryDeps(sandbox.wiring, sandbox.notifier), switches: stale };
    const message = { deliveryId: 'msg_staledrop', tenantId: tenant.id, webhookId: hook.id, events: [event], attempt: 1 };
    expect(await handleDeliverMessage(deps, message)).toBe('dropped');
    expect(sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' })).toBe(droppedBefore + 1);

    await receiver.waitFor(() => okEvents('/stale-drop').length === 1, 8_000);
    expect(okEvents('/stale-drop')).toMatchObject([{ type: 'sluice.gap', resource: 'sd:1', data: { dropped: 1, reason: 'switch_drop' } }]);
  });

  it('counts a dropped delivery once though SQS delivers it again: its recheck could not be sent after the count', async () => {
    const tenant = await createTenant(sandbox, 'drop-again');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'da:1', url: `${receiver.url}/drop-again` });
    const drop = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'webhook', tenant: tenant.id, target: hook.id, action: 'drop' },
    });
    const droppedBefore = sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' });
    const deps = deliveryDeps(sandbox.wiring, sandbox.notifier);
    const message = {
      deliveryId: 'msg_dropagain',
      tenantId: tenant.id,
      webhookId: hook.id,
      events: [deliveredEventFixture({ id: 'evt_dropagain', seq: 1, resource: 'da:1', data: 'dropped' })],
      attempt: 1,
    };
    // The deliver queue refuses the recheck (throttled, the network): the record fails, and SQS delivers it again.
    const refused = {
      ...deps,
      queue: {
        send: async () => {
          throw new Error('SQS unavailable');
        },
      },
    };
    await expect(handleDeliverMessage(refused, message)).rejects.toThrow('SQS unavailable');
    expect(await handleDeliverMessage(deps, message)).toBe('dropped');
    expect(sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' })).toBe(droppedBefore + 1);

    await call(sandbox, 'DELETE', `/v1/admin/switches/${drop.body.id}`, admin());
    await receiver.waitFor(() => okEvents('/drop-again').length > 0, 10_000);
    await settle(500);
    expect(okEvents('/drop-again')).toMatchObject([{ type: 'sluice.gap', resource: 'da:1', data: { dropped: 1, reason: 'switch_drop' } }]);
  });

  it("counts each resource of a dropped delivery once though SQS delivers it again: one resource's count was refused after another's", async () => {
    const tenant = await createTenant(sandbox, 'drop-parts');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'dp:0', url: `${receiver.url}/drop-parts` });
    const drop = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'webhook', tenant: tenant.id, target: hook.id, action: 'drop' },
    });
    const deps = deliveryDeps(sandbox.wiring, sandbox.notifier);
    const event = (n: number, resource: string) =>
      deliveredEventFixture({ id: `evt_dropparts${n}`, seq: n, resource, parents: ['dp:0'], data: n });
    const message = {
      deliveryId: 'msg_dropparts',
      tenantId: tenant.id,
      webhookId: hook.id,
      events: [event(1, 'dp:1'), event(2, 'dp:1'), event(1, 'dp:2')],
      attempt: 1,
    };
    // DynamoDB refuses the second resource's count once, after the first's applied.
    class RefusingDp2Once extends GapCounts {
      refused = false;
      override async count(...args: Parameters<GapCounts['count']>): Promise<void> {
        if (args[1] === 'dp:2' && !this.refused) {
          this.refused = true;
          throw new Error('ProvisionedThroughputExceededException');
        }
        return super.count(...args);
      }
    }
    const options = { client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable, retentionDays: 7 };
    const stores = { ...deliveryStores(options), gaps: new RefusingDp2Once(options) };
    await expect(handleDeliverMessage({ ...deps, ...stores }, message)).rejects.toThrow('ProvisionedThroughputExceededException');
    expect(await handleDeliverMessage(deps, message)).toBe('dropped');

    await call(sandbox, 'DELETE', `/v1/admin/switches/${drop.body.id}`, admin());
    await receiver.waitFor(() => okEvents('/drop-parts').length === 2, 10_000);
    await settle(500);
    const seen = okEvents('/drop-parts').map((e) => `${e.resource} ${JSON.stringify(e.data)}`);
    expect(seen.sort()).toEqual(['dp:1 {"dropped":2,"reason":"switch_drop"}', 'dp:2 {"dropped":1,"reason":"switch_drop"}']);
  });

  it('a gap marker that a webhook drop discards is counted for the events it stood for, and its own reason', async () => {
    const tenant = await createTenant(sandbox, 'marker-dropped');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'md:1', url: `${receiver.url}/marker-dropped` });
    const drop = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'webhook', tenant: tenant.id, target: hook.id, action: 'drop' },
    });
    const droppedBefore = sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' });
    // Markers an object's turns sent (a resource drop lifted, events past the retention period) reach the dropped webhook.
    const marker = (id: string, dropped: number, reason: 'switch_drop' | 'retention') => ({
      id,
      resource: 'md:2',
      type: 'sluice.gap' as const,
      data: { dropped, reason },
      created_at: new Date().toISOString(),
    });
    const deps = deliveryDeps(sandbox.wiring, sandbox.notifier);
    const message = {
      deliveryId: 'msg_markerdropped',
      tenantId: tenant.id,
      webhookId: hook.id,
      events: [marker('evt_md1', 7, 'switch_drop'), marker('evt_md2', 3, 'retention')],
      attempt: 1,
    };
    expect(await handleDeliverMessage(deps, message)).toBe('dropped');
    // Their events were counted when they were dropped; a marker is not an event.
    expect(sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' })).toBe(droppedBefore);

    await call(sandbox, 'DELETE', `/v1/admin/switches/${drop.body.id}`, admin());
    await receiver.waitFor(() => okEvents('/marker-dropped').length === 2, 10_000);
    const seen = okEvents('/marker-dropped').map((e) => `${e.resource} ${JSON.stringify(e.data)}`);
    expect(seen.sort()).toEqual(['md:2 {"dropped":3,"reason":"retention"}', 'md:2 {"dropped":7,"reason":"switch_drop"}']);
  });

  it('answers a PUT repeated on the same scope with the switch as it stands, and a new action with a new since', async () => {
    const tenant = await createTenant(sandbox, 'put-again');
    const put = (action: string, reason: string) =>
      call(sandbox, 'PUT', '/v1/admin/switches', {
        ...admin(),
        body: { scope: 'resource', tenant: tenant.id, target: 'pa:1', action, reason },
      });
    const first = await put('pause', 'runaway writer');
    expect(first.status).toBe(200);
    await settle(20);
    // A retried PUT (or another on-call setting the same) keeps when the pause began.
    const again = await put('pause', 'runaway writer');
    expect(again.body).toEqual(first.body);
    await settle(20);
    const reworded = await put('pause', 'still running away');
    expect(reworded.body).toEqual({ ...first.body, reason: 'still running away' });
    await settle(20);
    // Another action replaces it: same switch, in force as a drop since now.
    const drop = await put('drop', 'flood');
    expect(drop.body).toMatchObject({ id: first.body.id, action: 'drop', reason: 'flood' });
    expect(Date.parse(drop.body.created_at)).toBeGreaterThan(Date.parse(first.body.created_at));
    const listed = (await call(sandbox, 'GET', '/v1/admin/switches', admin())).body.data.filter(
      (s: { id: string }) => s.id === first.body.id,
    );
    expect(listed).toEqual([drop.body]);
    await call(sandbox, 'DELETE', `/v1/admin/switches/${first.body.id}`, admin());
  });

  it('a lift that failed halfway (its ring refused) is finished by the DELETE sent again, not answered 404 with its objects left paused', async () => {
    const tenant = await createTenant(sandbox, 'half-lifted');
    await createWebhook(sandbox, tenant.key, { resource: 'hl:1', url: `${receiver.url}/half-lifted` });
    const pause = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'resource', tenant: tenant.id, target: 'hl:1', action: 'pause' },
    });
    await settle(700);
    await publish(sandbox, tenant.key, [{ resource: 'hl:1', type: 'a.b', data: 'waiting' }]);
    await settle(800);
    // The API function's lift, with SQS refusing its ring: the request fails (500).
    const services = apiServices(sandbox.wiring, {} as never, sandbox.notifier).switches;
    const refusing = {
      ...services,
      doorbell: {
        ring: async () => {
          throw new Error('SQS is unavailable');
        },
      },
    };
    await expect(liftSwitch(refusing, pause.body.id)).rejects.toThrow('SQS is unavailable');
    // On-call's list still shows it, as a lift begun and not ended.
    const halfway = (await call(sandbox, 'GET', '/v1/admin/switches', admin())).body.data.find(
      (s: { id: string }) => s.id === pause.body.id,
    );
    expect(halfway).toMatchObject({ ...pause.body, lift_started_at: expect.any(String) });
    // On-call sends the DELETE again: it finishes the lift.
    expect((await call(sandbox, 'DELETE', `/v1/admin/switches/${pause.body.id}`, admin())).status).toBe(204);
    await receiver.waitFor(() => okEvents('/half-lifted').length === 1, 10_000);
    expect((await call(sandbox, 'DELETE', `/v1/admin/switches/${pause.body.id}`, admin())).status).toBe(404);
    const listed = (await call(sandbox, 'GET', '/v1/admin/switches', admin())).body.data;
    expect(listed.map((s: { id: string }) => s.id)).not.toContain(pause.body.id);
  });

  it("holds a paused webhook's deliveries up to the held cap, and at the lift sends them, then a held_overflow marker for the rest (as the README says)", async () => {
    const tenant = await createTenant(sandbox, 'paused-cap');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'pc:1', url: `${receiver.url}/paused-cap` });
    const pause = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'webhook', tenant: tenant.id, target: hook.id, action: 'pause' },
    });
    const base = deliveryDeps(sandbox.wiring, sandbox.notifier);
    const deps = { ...base, config: { ...base.config, heldPerWebhook: 1 } };
    for (const n of [1, 2]) {
      const event = deliveredEventFixture({ id: `evt_pc${n}`, seq: n, resource: 'pc:1', data: n });
      const message = { deliveryId: `msg_pc${n}`, tenantId: tenant.id, webhookId: hook.id, events: [event], attempt: 1 };
      expect(await handleDeliverMessage(deps, message)).toBe('held');
    }
    await call(sandbox, 'DELETE', `/v1/admin/switches/${pause.body.id}`, admin());
    await receiver.waitFor(() => okEvents('/paused-cap').length === 2, 10_000);
    expect(okEvents('/paused-cap').map((e) => `${e.type} ${JSON.stringify(e.data)}`)).toEqual([
      'a.b 1',
      'sluice.gap {"dropped":1,"reason":"held_overflow"}',
    ]);
  });

  it('obeys and lists every switch, though they take more than one page of a DynamoDB query (1 MB)', async () => {
    const tenant = await createTenant(sandbox, 'many-switches');
    // A resource whose switch id sorts late, after 1.2 MB of other switches (the longest
    // targets and reasons) whose ids sort before it: a read of a query's first page leaves it out.
    let resource = 'ms:0';
    for (let n = 1; derivedId('sw', 'resource', tenant.id, resource) < 'sw_u'; n++) resource = `ms:${n}`;
    const ours = derivedId('sw', 'resource', tenant.id, resource);
    await createWebhook(sandbox, tenant.key, { resource, url: `${receiver.url}/many-switches` });
    const other = 'ten_0000000000000000000';
    const others: Switch[] = [];
    for (let n = 0; others.length < 1_400; n++) {
      const target = `flood:${n}:`.padEnd(200, 'x');
      const id = derivedId('sw', 'resource', other, target);
      if (id < ours)
        others.push({ id, scope: 'resource', tenant: other, target, action: 'pause', reason: 'r'.repeat(500), created_at: '' });
    }
    const { dynamo, controlTable } = sandbox.wiring;
    const key = (id: string) => ({ pk: CONTROL_PK.switches, sk: id });
    await batchWrite(
      dynamo,
      controlTable,
      others.map((s) => ({ PutRequest: { Item: { ...key(s.id), ...s } } })),
    );
    try {
      const pause = await call(sandbox, 'PUT', '/v1/admin/switches', {
        ...admin(),
        body: { scope: 'resource', tenant: tenant.id, target: resource, action: 'pause' },
      });
      expect(pause.body.id).toBe(ours);
      const listed = (await call(sandbox, 'GET', '/v1/admin/switches', admin())).body.data.map((s: { id: string }) => s.id);
      expect(listed).toHaveLength(others.length + 1);
      expect(listed).toContain(ours);
      await settle(700);
      await publish(sandbox, tenant.key, [{ resource, type: 'a.b', data: 'paused' }]);
      await settle(1_000);
      expect(okEvents('/many-switches')).toHaveLength(0);
      await call(sandbox, 'DELETE', `/v1/admin/switches/${ours}`, admin());
      await receiver.waitFor(() => okEvents('/many-switches').length === 1, 10_000);
    } finally {
      await batchWrite(
        dynamo,
        controlTable,
        others.map((s) => ({ DeleteRequest: { Key: key(s.id) } })),
      );
    }
  });

  it("goes with the webhook it names: a deleted webhook's switch is neither listed in force nor read by every stage for good", async () => {
    const tenant = await createTenant(sandbox, 'switched-deleted');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'sd:1', url: `${receiver.url}/switched-deleted` });
    const other = await createWebhook(sandbox, tenant.key, { resource: 'sd:2', url: `${receiver.url}/switched-deleted` });
    const set = async (target: string) =>
      (
        await call(sandbox, 'PUT', '/v1/admin/switches', {
          ...admin(),
          body: { scope: 'webhook', tenant: tenant.id, target, action: 'pause', reason: 'test' },
        })
      ).body.id as string;
    const [gone, kept] = [await set(hook.id), await set(other.id)];

    expect((await call(sandbox, 'DELETE', `/v1/webhooks/${hook.id}`, { key: tenant.key })).status).toBe(204);

    const listed = (await call(sandbox, 'GET', '/v1/admin/switches', admin())).body.data.map((s: { id: string }) => s.id);
    expect(listed).not.toContain(gone);
    expect(listed).toContain(kept);
    expect((await call(sandbox, 'DELETE', `/v1/admin/switches/${kept}`, admin())).status).toBe(204);
  });

  it('keeps no switch set on a webhook or tenant deleted between its look and its write: answered 404, and not listed in force', async () => {
    const services = apiServices(sandbox.wiring, {} as never, sandbox.notifier).switches;
    const listed = async () => (await call(sandbox, 'GET', '/v1/admin/switches', admin())).body.data.map((s: { id: string }) => s.id);

    // The webhook is found, then its owner deletes it (and its switches) before the switch is written.
    const tenant = await createTenant(sandbox, 'deleted-as-switched');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'das:1', url: `${receiver.url}/deleted-as-switched` });
    const webhookDeleted = {
      ...services,
      webhooks: {
        list: (tenantId: string) => services.webhooks.list(tenantId),
        get: async (tenantId: string, id: string) => {
          const found = await services.webhooks.get(tenantId, id);
          if (found) expect((await call(sandbox, 'DELETE', `/v1/webhooks/${id}`, { key: tenant.key })).status).toBe(204);
          return found;
        },
      },
    };
    const onWebhook = { scope: 'webhook', tenant: tenant.id, target: hook.id, action: 'pause', reason: '' } as const;
    await expect(setSwitch(webhookDeleted, onWebhook)).rejects.toMatchObject({ code: 'not_found' });
    expect(await listed()).not.toContain(switchId(onWebhook));

    // The tenant is found, then deleted (its switches lifted) before the switch is written.
    const doomed = await createTenant(sandbox, 'deleted-as-switched-tenant');
    const tenantDeleted = {
      ...services,
      tenants: {
        get: async (id: string) => {
          const found = await services.tenants.get(id);
          if (found) expect((await call(sandbox, 'DELETE', `/v1/admin/tenants/${id}`, admin())).status).toBe(204);
          return found;
        },
      },
    };
    const onTenant = { scope: 'tenant', tenant: doomed.id, target: undefined, action: 'pause', reason: '' } as const;
    await expect(setSwitch(tenantDeleted, onTenant)).rejects.toMatchObject({ code: 'not_found' });
    expect(await listed()).not.toContain(switchId(onTenant));
  });

  it('validates switches and answers 404 for unknown ones', async () => {
    const bad = await call(sandbox, 'PUT', '/v1/admin/switches', { ...admin(), body: { scope: 'galaxy', tenant: 'x', action: 'nap' } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.message).toMatch(/scope/);
    expect(bad.body.error.message).toMatch(/action/);
    const unknownTenant = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'tenant', tenant: 'ten_0000000000000000000', action: 'pause' },
    });
    expect(unknownTenant.status).toBe(404);
    expect((await call(sandbox, 'DELETE', '/v1/admin/switches/sw_0000000000000000000', admin())).status).toBe(404);
  });
});

describe('alarms and the canary', () => {
  const alarm = async (name: string) =>
    (await call(sandbox, 'GET', '/v1/admin/alarms', admin())).body.data.find((a: { name: string }) => a.name === name);

  it('serves every alarm definition’s state to the admin only', async () => {
    const response = await call(sandbox, 'GET', '/v1/admin/alarms', admin());
    expect(response.status).toBe(200);
    const names = response.body.data.map((a: { name: string }) => a.name);
    expect(names).toEqual(
      expect.arrayContaining(['canary-stale', 'distributor-backlog-age', 'dead-letters', 'ingest-5xx', 'delivery-errors']),
    );
    for (const a of response.body.data) {
      expect(Object.keys(a).sort()).toEqual(['name', 'runbook', 'severity', 'since', 'state', 'threshold', 'title', 'value']);
    }
    const tenant = await createTenant(sandbox, 'nosy');
    expect((await call(sandbox, 'GET', '/v1/admin/alarms', { key: tenant.key })).status).toBe(403);
  });

  it('sees the canary round trip, turns canary-stale to ALARM while the canary tenant is paused, and back to OK when lifted', async () => {
    await receiver.waitFor(() => sandbox.metrics.total('CanaryDelivered') >= 2, 15_000);
    for (let i = 0; i < 40 && (await alarm('canary-stale')).state !== 'OK'; i++) await settle(250);
    expect((await alarm('canary-stale')).state).toBe('OK');

    const { CanaryStore } = await import('../../functions/adapters/canary-store.ts');
    const state = await new CanaryStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable }).get();
    if (!state) throw new Error('the canary has no state');
    const paused = await call(sandbox, 'PUT', '/v1/admin/switches', {
      ...admin(),
      body: { scope: 'tenant', tenant: state.tenantId, action: 'pause' },
    });
    let seen = '';
    for (let i = 0; i < 60 && seen !== 'ALARM'; i++) {
      await settle(250);
      seen = (await alarm('canary-stale')).state;
    }
    expect(seen).toBe('ALARM');
    const alarmed = await alarm('canary-stale');
    expect(alarmed).toMatchObject({ value: null, threshold: 1, runbook: 'docs/runbooks.md#canary-stale' });

    await call(sandbox, 'DELETE', `/v1/admin/switches/${paused.body.id}`, admin());
    for (let i = 0; i < 60 && seen !== 'OK'; i++) {
      await settle(250);
      seen = (await alarm('canary-stale')).state;
    }
    expect(seen).toBe('OK');
  }, 60_000);

  it('counts a canary tick that arrives more than 5 minutes after it was sent as late, not as delivered', async () => {
    const { CanaryStore } = await import('../../functions/adapters/canary-store.ts');
    const { deliveryBody } = await import('../../functions/core/deliveries.ts');
    const { deliveryHeaders } = await import('../../functions/core/signing.ts');
    const { CANARY_TYPE } = await import('../../functions/app/canary.ts');
    const state = await new CanaryStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable }).get();
    if (!state || !('secret' in state)) throw new Error('the canary has no webhook');
    const post = async (sentAt: number) => {
      const body = deliveryBody(state.webhookId, [
        {
          id: `evt_late${sentAt}`,
          seq: 1,
          resource: 'sluice-canary',
          parents: [],
          type: CANARY_TYPE,
          data: { sent_at: sentAt },
          created_at: '',
        },
      ]);
      const headers = deliveryHeaders([state.secret], `msg_late${sentAt}`, Math.floor(Date.now() / 1000), body, 'test');
      return fetch(`${sandbox.url}/sandbox/canary`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body });
    };
    // (The sandbox's own canary ticks every second here, on time: only this one is late.)
    const late = sandbox.metrics.total('CanaryLate');
    expect((await post(Date.now() - 6 * 60_000)).status).toBe(204);
    expect(sandbox.metrics.total('CanaryLate')).toBe(late + 1);
    expect((await post(Date.now() - 1_000)).status).toBe(204);
    expect(sandbox.metrics.total('CanaryLate')).toBe(late + 1);
  });
});
