/**
 * A recheck after a kill switch's lift (a delivery held by a worker whose switch cache
 * still showed the pause) must not start a second release chain while the lift's chain
 * is still sending a page: that page would go out twice, under two webhook-ids, which a
 * subscriber cannot tell for duplicates.
 */
import { describe, expect, it } from 'vitest';
import { SwitchStore } from '../../functions/adapters/switch-store.ts';
import { startRelease } from '../../functions/app/delivery/chains.ts';
import { handleDeliverMessage } from '../../functions/app/delivery.ts';
import { deliveryDeps } from '../../functions/app/runtime.ts';
import { switchId } from '../../functions/app/switches.ts';
import type { DeliverQueueMessage, DeliveryMessage } from '../../functions/core/model.ts';
import type { Switch } from '../../functions/core/switches.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { createTenant, createWebhook } from '../support/api.ts';
import { deliveredEventFixture } from '../support/fixtures.ts';
import { holdDelivery } from '../support/held.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;
withSandbox({ canary: false, config: { switchCacheMs: 500 } }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

describe('a recheck after a lift', () => {
  it('waits for the live release step instead of starting a second chain, and every held event goes out once', async () => {
    const tenant = await createTenant(sandbox, 'lift-recheck');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'lr:1', url: `${receiver.url}/lift-recheck` });
    const queued: Array<{ message: DeliverQueueMessage; delaySeconds: number | undefined }> = [];
    let answerSlowPost: () => void = () => undefined;
    let slow = true;
    const base = deliveryDeps(sandbox.wiring, sandbox.notifier);
    const deps: typeof base = {
      ...base,
      queue: {
        send: async (messages, delaySeconds) => {
          for (const message of messages) queued.push({ message, delaySeconds });
        },
      },
      // The endpoint is slow to take the lift's first step: its POST waits, then goes out.
      send: async (request) => {
        if (slow) await new Promise<void>((resolve) => (answerSlowPost = resolve));
        slow = false;
        return base.send(request);
      },
    };
    const delivery = (n: number): DeliveryMessage => ({
      deliveryId: `msg_lr${n}`,
      tenantId: tenant.id,
      webhookId: hook.id,
      events: [deliveredEventFixture({ id: `evt_lr${n}`, seq: n, resource: 'lr:1', data: n })],
      attempt: 1,
    });
    const nextOf = (kind: DeliverQueueMessage['kind']) => {
      const index = queued.findIndex((q) => q.message.kind === kind);
      return index < 0 ? undefined : queued.splice(index, 1)[0];
    };

    // Held under the pause: 1 and 2. The lift starts a release; its first step is slow to send them.
    await holdDelivery(deps, delivery(1));
    await holdDelivery(deps, delivery(2));
    await startRelease(deps, (await deps.webhooks.get(tenant.id, hook.id)) as NonNullable<Awaited<ReturnType<typeof deps.webhooks.get>>>);
    const firstStep = handleDeliverMessage(deps, (nextOf('release') as (typeof queued)[number]).message);
    await new Promise((resolve) => setTimeout(resolve, 100));

    // A worker whose cache still shows the pause holds 3, and asks for a recheck.
    const pause: Switch = {
      id: 'sw_lr',
      scope: 'webhook',
      tenant: tenant.id,
      target: hook.id,
      action: 'pause',
      reason: '',
      created_at: '',
    };
    const stale: typeof base = { ...deps, switches: { current: async () => [pause], refresh: async () => [pause] } };
    expect(await handleDeliverMessage(stale, delivery(3))).toBe('held');
    const recheck = nextOf('recheck') as (typeof queued)[number];
    await new Promise((resolve) => setTimeout(resolve, (recheck.delaySeconds ?? 0) * 1000));

    // SQS brings the recheck while the first step is still sending: it waits, starting no chain.
    expect(await handleDeliverMessage(deps, recheck.message)).toBe('waiting');
    const again = nextOf('recheck') as (typeof queued)[number];
    expect(again.delaySeconds).toBeGreaterThan(0);
    expect(queued.filter((q) => q.message.kind === 'release')).toEqual([]);

    // The first step ends, and its chain goes on to what was held meanwhile.
    answerSlowPost();
    expect(await firstStep).toBe('released');
    for (let step = nextOf('release'); step; step = nextOf('release')) await handleDeliverMessage(deps, step.message);
    // The recheck, looking again later, finds a step that saw the holds.
    expect(await handleDeliverMessage(deps, again.message)).toBe('stale');

    const posts = receiver.deliveries('/lift-recheck');
    const sentUnder = (event: string) => posts.filter((p) => p.json.events.some((e) => e.id === event)).map((p) => p.headers['webhook-id']);
    for (const event of ['evt_lr1', 'evt_lr2', 'evt_lr3']) expect(sentUnder(event), event).toHaveLength(1);
    // The chain ended, and said so: a later recheck need not wait for a step of it.
    expect(await deps.webhooks.get(tenant.id, hook.id)).toMatchObject({ heldCount: 0, releaseToken: undefined });
  }, 30_000);
});

describe('a lift that dies after marking its switch lifted', () => {
  for (const action of ['pause', 'drop'] as const) {
    it(`leaves no quiet webhook's ${action === 'pause' ? 'held deliveries' : 'gap marker'} waiting for the DELETE to be sent again`, async () => {
      // Arrange: a webhook switch; one delivery held (or dropped and counted) under it, the
      // recheck it asked for made while the switch is still in force; no more deliveries come.
      const name = `lift-dies-${action}`;
      const tenant = await createTenant(sandbox, name);
      const hook = await createWebhook(sandbox, tenant.key, { resource: `${name}:0`, url: `${receiver.url}/${name}` });
      receiver.answer(`/${name}`, 200);
      const switches = new SwitchStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable });
      const input = { scope: 'webhook' as const, tenant: tenant.id, target: hook.id, action, reason: 'incident' };
      await switches.set({ id: switchId(input), ...input, created_at: new Date().toISOString() });
      const queued: DeliverQueueMessage[] = [];
      let skew = 0;
      const base = deliveryDeps(sandbox.wiring, sandbox.notifier);
      const deps: typeof base = {
        ...base,
        now: () => Date.now() + skew,
        switches: { current: () => switches.list(), refresh: () => switches.list() },
        queue: { send: async (messages) => void queued.push(...messages) },
      };
      const delivery: DeliveryMessage = {
        deliveryId: `msg_${name}`,
        tenantId: tenant.id,
        webhookId: hook.id,
        events: [deliveredEventFixture({ id: `evt_${name}`, seq: 1, resource: `${name}:1` })],
        attempt: 1,
      };
      expect(await handleDeliverMessage(deps, delivery)).toBe(action === 'pause' ? 'held' : 'dropped');
      skew += 5_000;
      for (const message of queued.splice(0)) expect(await handleDeliverMessage(deps, message)).toBe('stale');

      // Act: the lift marks the switch lifted and dies (its Lambda killed) before it starts
      // the webhook's release. Then the deliver queue hands out what it holds, as time passes.
      await switches.beginLift(switchId(input), deps.now());
      for (let steps = 0; steps < 20 && queued.length > 0; steps++) {
        skew += 15 * 60_000;
        await handleDeliverMessage(deps, queued.shift() as DeliverQueueMessage);
      }

      // Assert: the held event went out (the drop's gap marker), and nothing is held.
      const events = receiver.acceptedEvents(`/${name}`);
      if (action === 'pause') expect(events.map((e) => e.id)).toEqual([`evt_${name}`]);
      else expect(events).toMatchObject([{ type: 'sluice.gap', data: { dropped: 1, reason: 'switch_drop' } }]);
      expect((await deps.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(0);
    });
  }
});
