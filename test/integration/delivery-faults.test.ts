/**
 * The delivery stage under injected faults: a DynamoDB write that applies but whose
 * answer is lost (the SDK tries it again), at each step whose outcome is counted.
 * Every delivery still ends delivered, held or dead-lettered, and counted so.
 */
import { describe, expect, it } from 'vitest';
import { documentClient } from '../../functions/adapters/aws.ts';
import { GapCounts } from '../../functions/adapters/gap-counts.ts';
import { startRelease } from '../../functions/app/delivery/chains.ts';
import type { DeliveryDeps } from '../../functions/app/delivery/deps.ts';
import { applyHealth } from '../../functions/app/delivery/health.ts';
import { handleDeliverMessage } from '../../functions/app/delivery.ts';
import { deliveryDeps, deliveryStores } from '../../functions/app/runtime.ts';
import type { DeliverQueueMessage, DeliveryMessage } from '../../functions/core/model.ts';
import type { Switch } from '../../functions/core/switches.ts';
import { CONTROL_PK } from '../../functions/definitions/tables.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook } from '../support/api.ts';
import { loseFirstAnswers } from '../support/faults.ts';
import { deliveredEventFixture } from '../support/fixtures.ts';
import { holdDelivery } from '../support/held.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';
import { deliveryDepsOver } from '../support/services.ts';

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

/** Whether a write puts an item into one of a webhook's partitions of this kind. */
const putsInto = (kind: string) => (input: Record<string, unknown>) => {
  // Marshalled by the time the answer comes: `{ S: … }`.
  const pk = (input.Item as { pk?: { S?: string } } | undefined)?.pk?.S;
  return pk?.startsWith(kind) === true;
};

/**
 * The delivery function's dependencies over a client whose first try of each write
 * `matches` picks applies and loses its answer; its deliver-queue messages recorded.
 */
function lossyDeps(matches: (input: Record<string, unknown>) => boolean) {
  const lossy = documentClient(sandbox.emulators.dynamo);
  const lost = loseFirstAnswers(lossy, matches);
  return { ...deliveryDepsOver(sandbox, lossy), lost };
}

/** Handles every recorded deliver-queue message, and those they send, at once (their delays left out). */
async function drain(deps: DeliveryDeps, sent: DeliverQueueMessage[]): Promise<void> {
  for (let message = sent.shift(); message; message = sent.shift()) await handleDeliverMessage(deps, message);
}

/** A new tenant with a webhook on `resource` whose endpoint (the receiver's `/name`) answers 200. */
async function answeringWebhook(name: string, resource: string) {
  const tenant = await createTenant(sandbox, name);
  const path = `/${name}`;
  const hook = await createWebhook(sandbox, tenant.key, { resource, url: `${receiver.url}${path}` });
  receiver.answer(path, 200);
  return { tenant, path, hook };
}

/** Starts the webhook's release and runs its steps (at most 20), each 31 s after the one before. */
async function releaseAsTimePasses(deps: DeliveryDeps, sent: DeliverQueueMessage[], tenantId: string, webhookId: string) {
  let skew = 0;
  const later = { ...deps, now: () => Date.now() + skew };
  const webhook = await deps.webhooks.get(tenantId, webhookId);
  if (!webhook) throw new Error('no webhook');
  await startRelease(later, webhook);
  for (let steps = 0, message = sent.shift(); message && steps < 20; steps++, message = sent.shift()) {
    await handleDeliverMessage(later, message);
    skew += 31_000;
  }
}

/**
 * A new tenant's webhook on `resource` whose pause was just lifted: the lift's release
 * found nothing held and ended. Answers the pause too, which a stale cache still shows.
 */
async function webhookPauseLifted(name: string, resource: string, deps: DeliveryDeps, sent: DeliverQueueMessage[]) {
  const { tenant, path, hook } = await answeringWebhook(name, resource);
  const pause: Switch = {
    id: `sw_${name.replaceAll('-', '')}`,
    scope: 'webhook',
    tenant: tenant.id,
    target: hook.id,
    action: 'pause',
    reason: 'test',
    created_at: new Date().toISOString(),
  };
  const lifted = await deps.webhooks.get(tenant.id, hook.id);
  if (!lifted) throw new Error('no webhook');
  await startRelease(deps, lifted);
  await drain(deps, sent);
  return { tenant, hook, path, pause };
}

const delivery = (tenantId: string, webhookId: string, name: string, seq: number, attempt = 1): DeliveryMessage => ({
  deliveryId: `msg_${name}${'0'.repeat(20)}`.slice(0, 26),
  tenantId,
  webhookId,
  attempt,
  events: [deliveredEventFixture({ id: `evt_${name}`, seq, resource: `${name}:1`, data: name })],
});

describe('a dead letter whose write applied but whose answer was lost', () => {
  it('is counted (DeadLetters pages on-call): the SDK’s second try, refused by the first, is not taken for an earlier run’s', async () => {
    const tenant = await createTenant(sandbox, 'dead-lost');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'deadlost:1', url: `${receiver.url}/dead-lost` });
    receiver.answer('/dead-lost', 500);
    const { deps, lost } = lossyDeps(putsInto(CONTROL_PK.dead));
    const deadBefore = sandbox.metrics.total('DeadLetters');
    const eventsBefore = sandbox.metrics.total('EventsDeadLettered');

    // Its last attempt (the schedule here gives two) fails.
    expect(await handleDeliverMessage(deps, delivery(tenant.id, hook.id, 'deadlost', 1, 2))).toBe('dead_lettered');

    expect(lost()).toBe(1);
    expect((await deps.deadLetters.page(hook.id, Date.now(), 10)).letters).toHaveLength(1);
    expect(sandbox.metrics.total('DeadLetters')).toBe(deadBefore + 1);
    expect(sandbox.metrics.total('EventsDeadLettered')).toBe(eventsBefore + 1);
  });

  it('is still counted once when SQS hands the delivery back after the letter was counted', async () => {
    const tenant = await createTenant(sandbox, 'dead-twice');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'deadtwice:1', url: `${receiver.url}/dead-twice` });
    receiver.answer('/dead-twice', 500);
    const { deps } = lossyDeps(() => false);
    const deadBefore = sandbox.metrics.total('DeadLetters');
    const message = delivery(tenant.id, hook.id, 'deadtwice', 1, 2);

    expect(await handleDeliverMessage(deps, message)).toBe('dead_lettered');
    expect(await handleDeliverMessage(deps, message)).toBe('dead_lettered');

    expect(sandbox.metrics.total('DeadLetters')).toBe(deadBefore + 1);
  });
});

describe('a hold whose write applied but whose answer was lost', () => {
  it('keeps the delivery in the held count: the count matches what is held', async () => {
    const tenant = await createTenant(sandbox, 'hold-lost');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'holdlost:1', url: `${receiver.url}/hold-lost` });
    await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { status: 'disabled' } });
    const { deps, lost } = lossyDeps(putsInto(CONTROL_PK.held));

    expect(await handleDeliverMessage(deps, delivery(tenant.id, hook.id, 'holdlost', 1))).toBe('held');

    expect(lost()).toBe(1);
    expect((await deps.held.page(hook.id, 10, Date.now())).live).toHaveLength(1);
    expect((await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held).toBe(1);
  });

  it('is released when its release chain ended meanwhile, not left held with no chain and no count until it expires', async () => {
    const { tenant, path, hook } = await answeringWebhook('hold-lost-ended', 'holdended:1');
    const { deps, sent } = lossyDeps(putsInto(CONTROL_PK.held));
    // A delivery held behind a release under way (an endpoint that recovered, say).
    const earlier = delivery(tenant.id, hook.id, 'holdended', 1);
    expect(await holdDelivery(deliveryDeps(sandbox.wiring, sandbox.notifier), earlier)).toEqual([true, true]);
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    await startRelease(deps, webhook);
    // The next delivery reads the webhook while that one is held, so it is held behind it;
    // the chain sends the earlier one and ends before this one is counted.
    const later = { ...delivery(tenant.id, hook.id, 'holdended', 2), events: [{ ...earlier.events[0], id: 'evt_holdended2', seq: 2 }] };
    const racing: DeliveryDeps = {
      ...deps,
      webhooks: new Proxy(deps.webhooks, {
        get(target, property) {
          const value = Reflect.get(target, property);
          if (property !== 'countHeld') return typeof value === 'function' ? value.bind(target) : value;
          const countHeld: DeliveryDeps['webhooks']['countHeld'] = async (...args) => {
            await drain(deps, sent);
            return target.countHeld(...args);
          };
          return countHeld;
        },
      }),
    };
    expect(await handleDeliverMessage(racing, later as DeliveryMessage)).toBe('held');
    await drain(deps, sent);

    expect(receiver.acceptedEvents(path).map((e) => e.id)).toEqual(['evt_holdended', 'evt_holdended2']);
    expect((await deps.held.page(hook.id, 10, Date.now())).live).toEqual([]);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(0);
  });
});

/** Whether a write moves a webhook's held count by a delta of this sign (marshalled by the time the answer comes). */
const movesHeldCount = (sign: 1 | -1) => (input: Record<string, unknown>) => {
  if (typeof input.UpdateExpression !== 'string' || !input.UpdateExpression.endsWith('ADD #held_count :delta')) return false;
  const delta = Number((input.ExpressionAttributeValues as Record<string, { N?: string }> | undefined)?.[':delta']?.N);
  return Math.sign(delta) === sign;
};

describe('a held count whose write applied but whose answer was lost', () => {
  it('counts a hold once: the count does not outlast what is held, and no gap marker says a delivery was lost', async () => {
    const { tenant, path, hook } = await answeringWebhook('count-lost', 'countlost:1');
    await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { status: 'disabled' } });
    const { deps, lost, sent } = lossyDeps(movesHeldCount(1));
    const droppedBefore = sandbox.metrics.total('EventsDropped', { reason: 'retention' });

    expect(await handleDeliverMessage(deps, delivery(tenant.id, hook.id, 'countlost', 1))).toBe('held');
    expect(lost()).toBe(1);
    expect((await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held).toBe(1);

    // Re-enabled: the release sends it, and its steps go on while anything is counted as
    // held (a clock that moves on past the count's settling time at each step).
    let skew = 0;
    const later = { ...deps, now: () => Date.now() + skew };
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    await applyHealth(later, webhook, { type: 'reenabled', now: Date.now() });
    for (let steps = 0, message = sent.shift(); message && steps < 20; steps++, message = sent.shift()) {
      await handleDeliverMessage(later, message);
      skew += 31_000;
    }

    expect(receiver.acceptedEvents(path).map((e) => e.type)).toEqual(['a.b']);
    expect(sandbox.metrics.total('EventsDropped', { reason: 'retention' })).toBe(droppedBefore);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(0);
  });

  it('takes released deliveries out of the count once: the count does not go below what is held', async () => {
    const { tenant, path, hook } = await answeringWebhook('uncount-lost', 'uncountlost:1');
    const real = deliveryDeps(sandbox.wiring, sandbox.notifier);
    for (const seq of [1, 2]) {
      const held = { ...delivery(tenant.id, hook.id, 'uncountlost', seq), deliveryId: `msg_uncountlost${seq}000000000000` };
      expect(await holdDelivery(real, { ...held, events: [{ ...held.events[0], id: `evt_uncountlost${seq}` } as never] })).toEqual([
        true,
        true,
      ]);
    }
    const { deps, lost, sent } = lossyDeps(movesHeldCount(-1));
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');

    await startRelease(deps, webhook);
    await drain(deps, sent);

    expect(lost()).toBeGreaterThan(0);
    expect(receiver.acceptedEvents(path).map((e) => e.id)).toEqual(['evt_uncountlost1', 'evt_uncountlost2']);
    expect((await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.held).toBe(0);
  });
});

/** Whether a write deletes a held delivery (marshalled by the time the answer comes). */
const removesHeld = (input: Record<string, unknown>) =>
  input.UpdateExpression === undefined &&
  input.Item === undefined &&
  String((input.Key as { pk?: { S?: string } } | undefined)?.pk?.S ?? '').startsWith(CONTROL_PK.held);

describe('a held delivery whose removal applied but whose answer was lost', () => {
  it('leaves the count when released, so no gap marker tells the subscriber of a loss that never was', async () => {
    const { tenant, path, hook } = await answeringWebhook('remove-lost', 'removelost:1');
    expect(await holdDelivery(deliveryDeps(sandbox.wiring, sandbox.notifier), delivery(tenant.id, hook.id, 'removelost', 1))).toEqual([
      true,
      true,
    ]);
    const { deps, lost, sent } = lossyDeps(removesHeld);
    const droppedBefore = sandbox.metrics.total('EventsDropped', { reason: 'retention' });
    await releaseAsTimePasses(deps, sent, tenant.id, hook.id);

    expect(lost()).toBe(1);
    expect(receiver.acceptedEvents(path).map((e) => e.type)).toEqual(['a.b']);
    expect(sandbox.metrics.total('EventsDropped', { reason: 'retention' })).toBe(droppedBefore);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(0);
  });

  it('is counted as a dead letter at its last attempt (DeadLetters pages on-call), and leaves the count', async () => {
    const tenant = await createTenant(sandbox, 'remove-lost-dead');
    const path = '/remove-lost-dead';
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'removedead:1', url: `${receiver.url}${path}` });
    receiver.answer(path, 500);
    // Held at its last attempt (the schedule here gives two).
    const message = delivery(tenant.id, hook.id, 'removedead', 1, 2);
    expect(await holdDelivery(deliveryDeps(sandbox.wiring, sandbox.notifier), message)).toEqual([true, true]);
    const { deps, lost, sent } = lossyDeps(removesHeld);
    const deadBefore = sandbox.metrics.total('DeadLetters');
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');

    await startRelease(deps, webhook);
    const step = sent.shift();
    if (!step) throw new Error('no release step');
    expect(await handleDeliverMessage(deps, step)).toBe('released');

    expect(lost()).toBe(1);
    expect((await deps.deadLetters.page(hook.id, Date.now(), 10)).letters).toHaveLength(1);
    expect(sandbox.metrics.total('DeadLetters')).toBe(deadBefore + 1);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(0);
  });
});

describe('a delivery of several resources dropped by a switch, whose record fails after a first resource was counted', () => {
  it('counts every dropped event in EventsDropped once, though SQS hands it back and the first count’s receipt is found', async () => {
    const tenant = await createTenant(sandbox, 'drop-parts');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'dropparts', url: `${receiver.url}/drop-parts` });
    const drop: Switch = {
      id: 'sw_dropparts',
      scope: 'webhook',
      tenant: tenant.id,
      target: hook.id,
      action: 'drop',
      reason: 'test',
      created_at: new Date().toISOString(),
    };
    const { deps } = lossyDeps(() => false);
    // DynamoDB refuses the second resource's count once (throttled, past the SDK's tries).
    class Failing extends GapCounts {
      counts = 0;
      override async countOnce(...args: Parameters<GapCounts['countOnce']>): Promise<boolean> {
        if (++this.counts === 2) throw new Error('ProvisionedThroughputExceededException');
        return super.countOnce(...args);
      }
    }
    const options = { client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable, retentionDays: 7 };
    const dropping: DeliveryDeps = {
      ...deps,
      ...deliveryStores(options),
      gaps: new Failing(options),
      switches: { current: async () => [drop], refresh: async () => [drop] },
    };
    const merged: DeliveryMessage = {
      ...delivery(tenant.id, hook.id, 'dropparts', 1),
      events: [
        deliveredEventFixture({ id: 'evt_droppartsa', seq: 1, resource: 'dropparts:a', parents: ['dropparts'] }),
        deliveredEventFixture({ id: 'evt_droppartsb', seq: 1, resource: 'dropparts:b', parents: ['dropparts'] }),
      ],
    };
    const before = sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' });

    await expect(handleDeliverMessage(dropping, merged)).rejects.toThrow('ProvisionedThroughputExceededException');
    expect(await handleDeliverMessage(dropping, merged)).toBe('dropped');

    expect(sandbox.metrics.total('EventsDropped', { reason: 'switch_drop' })).toBe(before + 2);
  });
});

describe('a delivery held under a pause already lifted (a stale switch cache), whose recheck could not be sent', () => {
  it('is released when SQS hands it back, not left held with no chain to send it', async () => {
    const { deps, sent } = lossyDeps(() => false);
    const { tenant, hook, path, pause } = await webhookPauseLifted('recheck-lost', 'rechecklost:1', deps, sent);
    // The worker's cache still shows the pause, and SQS refuses the recheck that would have found it lifted.
    const stale: DeliveryDeps = {
      ...deps,
      switches: { current: async () => [pause], refresh: async () => [] },
      queue: {
        send: async (messages, delaySeconds) => {
          if (messages.some((m) => m.kind === 'recheck')) throw new Error('SQS unavailable');
          return deps.queue.send(messages, delaySeconds);
        },
      },
    };
    const message = delivery(tenant.id, hook.id, 'rechecklost', 1);
    await expect(handleDeliverMessage(stale, message)).rejects.toThrow('SQS unavailable');

    // SQS hands the record back after its visibility timeout; the cache is fresh by then.
    await handleDeliverMessage(deps, message);
    await drain(deps, sent);

    expect(receiver.acceptedEvents(path).map((e) => e.id)).toEqual(['evt_rechecklost']);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(0);
  });
});

/** Picks only the first write `matches` picks. */
const firstOnly = (matches: (input: Record<string, unknown>) => boolean) => {
  let picked = false;
  return (input: Record<string, unknown>) => {
    if (picked || !matches(input)) return false;
    picked = true;
    return true;
  };
};

/** Whether a write saves a webhook's health. */
const savesHealth = (input: Record<string, unknown>) =>
  typeof input.UpdateExpression === 'string' && input.UpdateExpression.startsWith('SET #health = :health');

describe('a health change whose write applied but whose answer was lost', () => {
  it('acts on its transition: a probe that succeeded starts the release of what the endpoint held', async () => {
    const { tenant, path, hook } = await answeringWebhook('health-lost', 'healthlost:1');
    const real = deliveryDeps(sandbox.wiring, sandbox.notifier);
    // Quarantined, with a delivery held and a probe due.
    const webhook = await real.webhooks.get(tenant.id, hook.id);
    if (!webhook) throw new Error('no webhook');
    const now = Date.now();
    const quarantined = {
      ...webhook.health,
      state: 'quarantined' as const,
      consecutiveFailures: 5,
      quarantinedAt: now,
      probeIntervalSeconds: 60,
      nextProbeAt: now,
    };
    expect(await real.webhooks.saveHealth(webhook, quarantined, { probeToken: 'msg_healthlostprobe' })).toBe(true);
    expect(await holdDelivery(real, delivery(tenant.id, hook.id, 'healthlost', 1))).toEqual([true, true]);
    const { deps, lost, sent } = lossyDeps(firstOnly(savesHealth));

    expect(await handleDeliverMessage(deps, { kind: 'probe', tenantId: tenant.id, webhookId: hook.id, token: 'msg_healthlostprobe' })).toBe(
      'probed',
    );
    await drain(deps, sent);

    expect(lost()).toBe(1);
    expect(receiver.acceptedEvents(path).map((e) => e.id)).toEqual(['evt_healthlost']);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.heldCount).toBe(0);
  });

  it('counts a failure once: a failing endpoint is not moved towards quarantine twice for one attempt', async () => {
    const tenant = await createTenant(sandbox, 'failure-lost');
    const path = '/failure-lost';
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'failurelost:1', url: `${receiver.url}${path}` });
    receiver.answer(path, 500);
    const { deps, lost } = lossyDeps(firstOnly(savesHealth));

    expect(await handleDeliverMessage(deps, delivery(tenant.id, hook.id, 'failurelost', 1))).toBe('retrying');

    expect(lost()).toBe(1);
    expect((await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health.consecutive_failures).toBe(1);
  });
});

describe('a disable notice whose claim applied but whose answer was lost', () => {
  it('is sent: the claim refused on the SDK’s second try is taken as the first try’s, not as another sender’s', async () => {
    const tenant = await createTenant(sandbox, 'claim-lost');
    const path = '/claim-lost';
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'claimlost:1', url: `${receiver.url}${path}` });
    receiver.answer(path, 410);
    const claims = (input: Record<string, unknown>) =>
      typeof input.UpdateExpression === 'string' && input.UpdateExpression.includes('#notice_claim = :claim');
    const { deps, lost, sent } = lossyDeps(firstOnly(claims));

    expect(await handleDeliverMessage(deps, delivery(tenant.id, hook.id, 'claimlost', 1))).toBe('disabled');
    // Nothing more comes to the disabled webhook: what was sent meanwhile is all there is.
    await drain(deps, sent);

    expect(lost()).toBe(1);
    expect(sandbox.notifier.notices.filter((n) => n.webhook === hook.id)).toHaveLength(1);
  });
});

describe('a drifted held count whose reset applied but whose answer was lost', () => {
  it('counts what it found gone in EventsDropped, as the gap marker it owes says', async () => {
    const { tenant, path, hook } = await answeringWebhook('reset-lost', 'resetlost:1');
    // Counted as held, but the delivery is gone (DynamoDB's TTL took it past the retention period).
    const real = deliveryDeps(sandbox.wiring, sandbox.notifier);
    expect(await real.webhooks.countHeld(tenant.id, hook.id, 1, 10)).toBeDefined();
    const resets = (input: Record<string, unknown>) =>
      typeof input.UpdateExpression === 'string' && input.UpdateExpression.includes('#held_count = :actual');
    const { deps, lost, sent } = lossyDeps(firstOnly(resets));
    const droppedBefore = sandbox.metrics.total('EventsDropped', { reason: 'retention' });
    await releaseAsTimePasses(deps, sent, tenant.id, hook.id);

    expect(lost()).toBe(1);
    expect(receiver.acceptedEvents(path).map((e) => e.type)).toEqual(['sluice.gap']);
    expect(sandbox.metrics.total('EventsDropped', { reason: 'retention' })).toBe(droppedBefore + 1);
  });
});

describe('a recheck whose window was taken by a write that applied but whose answer was lost', () => {
  it('is sent: a delivery held under a pause already lifted (a stale switch cache) is released', async () => {
    const takes = (input: Record<string, unknown>) =>
      String((input.Key as { pk?: { S?: string } } | undefined)?.pk?.S ?? '').startsWith(`${CONTROL_PK.rate}recheck:`);
    const { deps, lost, sent } = lossyDeps(firstOnly(takes));
    const { tenant, hook, path, pause } = await webhookPauseLifted('take-lost', 'takelost:1', deps, sent);
    // The worker's cache still shows the pause.
    const stale: DeliveryDeps = { ...deps, switches: { current: async () => [pause], refresh: async () => [] } };

    expect(await handleDeliverMessage(stale, delivery(tenant.id, hook.id, 'takelost', 1))).toBe('held');
    await drain(deps, sent);

    expect(lost()).toBe(1);
    expect(receiver.acceptedEvents(path).map((e) => e.id)).toEqual(['evt_takelost']);
  });
});

/**
 * A client whose writes into a webhook's partitions of `kind` DynamoDB throttles (the
 * SDK's own tries spent), as it does a partition past its 1,000 write units a second.
 */
function throttledDeps(kind: string) {
  const client = documentClient(sandbox.emulators.dynamo);
  let throttled = 0;
  client.middlewareStack.add(
    (next) => async (args) => {
      const pk = (args.input as { Item?: { pk?: string } }).Item?.pk;
      if (typeof pk === 'string' && pk.startsWith(kind)) {
        throttled++;
        throw Object.assign(new Error('The level of configured provisioned throughput for the table was exceeded.'), {
          name: 'ProvisionedThroughputExceededException',
          $metadata: { attempts: 3 },
        });
      }
      return next(args);
    },
    { step: 'initialize', name: 'partitionThrottled' },
  );
  return { ...deliveryDepsOver(sandbox, client), throttled: () => throttled };
}

describe("an attempt whose log write DynamoDB throttles (the webhook's log partition past its write units)", () => {
  it('is delivered once and counted, not failed for SQS to hand back and POST again', async () => {
    const { tenant, path, hook } = await answeringWebhook('log-throttled', 'logthrottled:1');
    const { deps, throttled } = throttledDeps(CONTROL_PK.deliveries);
    const failedBefore = sandbox.metrics.total('AttemptLogsFailed');

    expect(await handleDeliverMessage(deps, delivery(tenant.id, hook.id, 'logthrottled', 1))).toBe('delivered');

    expect(throttled()).toBe(1);
    expect(receiver.acceptedEvents(path).map((e) => e.id)).toEqual(['evt_logthrottled']);
    expect(sandbox.metrics.total('AttemptLogsFailed')).toBe(failedBefore + 1);
  });

  it('is delivered once when it is a later attempt, whose own item is throttled', async () => {
    const { tenant, path, hook } = await answeringWebhook('attempt-throttled', 'attemptthrottled:1');
    const { deps, throttled } = throttledDeps(CONTROL_PK.attempts);

    // Its second attempt: logged in an item of its own, not on the delivery's log item.
    expect(await handleDeliverMessage(deps, delivery(tenant.id, hook.id, 'attemptthrottled', 1, 2))).toBe('delivered');

    expect(throttled()).toBe(1);
    expect(receiver.acceptedEvents(path).map((e) => e.id)).toEqual(['evt_attemptthrottled']);
  });
});
