/**
 * The delivery stage with a crash at every step: a scenario (deliveries held while the
 * webhook is disabled, one of two resources; the owner's re-enable; the release) is run
 * once to count its calls out (DynamoDB requests and deliver-queue sends), then once per
 * call with the function dying there, before the call is sent or
 * after it applied. The message it was handling comes back (SQS hands it out again after
 * its visibility timeout), a re-enable that failed is sent again (its owner got a 500),
 * and the scenario runs to its end. Every event is then received by the endpoint, no gap
 * marker tells of a loss that never was, and nothing is left counted as held.
 */
import { describe, expect, it } from 'vitest';
import { documentClient } from '../../functions/adapters/aws.ts';
import { WatchedWebhooks } from '../../functions/adapters/webhook-store.ts';
import { CHAIN_LOST_AFTER_MS, startRelease } from '../../functions/app/delivery/chains.ts';
import type { DeliveryDeps } from '../../functions/app/delivery/deps.ts';
import { handleDeliverMessage } from '../../functions/app/delivery.ts';
import type { DeliverQueueMessage, DeliveryMessage, Webhook } from '../../functions/core/model.ts';
import type { Switch } from '../../functions/core/switches.ts';
import { CHAIN_SHARDS } from '../../functions/definitions/tables.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook } from '../support/api.ts';
import { deliveredEventFixture } from '../support/fixtures.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';
import { deliveryDepsOver, webhookService } from '../support/services.ts';

let sandbox: Sandbox;
let receiver: Receiver;
withSandbox({ canary: false }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

type Mode = 'dieBefore' | 'dieAfter';

/** Counts calls out; dies at the armed one (and fails every later call of the same handling). */
class CrashPoint {
  calls = 0;
  #at: number | undefined;
  #mode: Mode = 'dieBefore';
  #dead = false;
  fired = false;

  constructor(at?: number, mode: Mode = 'dieBefore') {
    this.#at = at;
    this.#mode = mode;
  }

  /** A new handling: a dead function's message runs on a live one. */
  revive(): void {
    this.#dead = false;
  }

  /** No crash from here on (the scenario's own reads, after it). */
  disarm(): void {
    this.#at = undefined;
    this.#dead = false;
  }

  async around<T>(call: () => Promise<T>): Promise<T> {
    if (this.#dead) throw new Error('the function died');
    this.calls += 1;
    const here = this.#at === this.calls;
    if (here && this.#mode === 'dieBefore') {
      this.#dead = this.fired = true;
      throw new Error('the function died');
    }
    const result = await call();
    if (here) {
      this.#dead = this.fired = true;
      throw new Error('the function died after the call applied');
    }
    return result;
  }
}

function delivery(tenantId: string, webhookId: string, name: string, resources: readonly string[]): DeliveryMessage {
  return {
    deliveryId: `msg_${name}`,
    tenantId,
    webhookId,
    attempt: 1,
    events: resources.map((resource, i) => deliveredEventFixture({ id: `evt_${name}_${i}`, seq: 1, resource, data: name })),
  };
}

let runs = 0;

/**
 * A tenant and a webhook on the receiver, and the delivery function over a client whose
 * calls out pass `point`: its deliver-queue sends kept in a queue that `drain` hands out
 * in order (a message whose handling died comes back after the others, as SQS hands it
 * out again after its visibility timeout), the clock moving on 31 s a message.
 */
async function rig(point: CrashPoint, config: Partial<DeliveryDeps['config']> = {}) {
  const name = `crashpt${++runs}`;
  const tenant = await createTenant(sandbox, name);
  const hook = await createWebhook(sandbox, tenant.key, { resource: `${name}:0`, url: `${receiver.url}/${name}` });
  receiver.answer(`/${name}`, 200);
  const client = documentClient(sandbox.emulators.dynamo);
  client.middlewareStack.add((next) => (args) => point.around(() => next(args)), { step: 'initialize', name: 'crashPoint' });
  const over = deliveryDepsOver(sandbox, client);
  const queue: DeliverQueueMessage[] = [];
  let skew = 0;
  const switches: Switch[] = [];
  const deps: DeliveryDeps = {
    ...over.deps,
    config: { ...over.deps.config, ...config },
    now: () => Date.now() + skew,
    switches: { current: async () => [...switches], refresh: async () => [...switches] },
    queue: { send: (messages, delaySeconds) => point.around(() => over.deps.queue.send(messages, delaySeconds)) },
    notifier: { webhookDisabled: (notice) => point.around(() => over.deps.notifier.webhookDisabled(notice)) },
  };
  const deliveries = [
    delivery(tenant.id, hook.id, `${name}a`, [`${name}:1`]),
    delivery(tenant.id, hook.id, `${name}b`, [`${name}:1`, `${name}:2`]),
    delivery(tenant.id, hook.id, `${name}c`, [`${name}:2`]),
  ];
  /** Hands out the queue's messages until it is empty, or until `until` says to stop. */
  const drain = async (until: (queued: readonly DeliverQueueMessage[]) => boolean = () => false) => {
    for (let steps = 0; steps < 300; steps++) {
      queue.push(...over.sent.splice(0));
      if (queue.length > 0 && until(queue)) return;
      const message = queue.shift();
      if (!message) return;
      point.revive();
      try {
        await handleDeliverMessage(deps, message);
      } catch {
        queue.push(message);
        skew += 180_000;
        continue;
      }
      skew += 31_000;
    }
    throw new Error('the scenario did not end');
  };
  /**
   * The reconciler's runs once a lost chain is overdue: each sends a check of every webhook
   * one shard of `by_chain` lists (here every shard, as five runs do), and the checks are handed out.
   */
  const reconcilerChecks = async () => {
    skew += CHAIN_LOST_AFTER_MS + 60_000;
    const watched = new WatchedWebhooks({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable });
    for (let shard = 0; shard < CHAIN_SHARDS; shard++) {
      for (const { tenantId, webhookId } of await watched.list(shard)) {
        if (webhookId === hook.id) queue.push({ kind: 'check', tenantId, webhookId, sentAt: deps.now() });
      }
    }
    await drain();
  };
  /** Runs `act` (an API request) until it is answered, as its caller sends a request answered 500 again. */
  const untilAnswered = async (act: () => Promise<unknown>) => {
    for (let tries = 0; ; tries++) {
      point.revive();
      try {
        return await act();
      } catch (error) {
        if (tries > 3) throw error;
      }
    }
  };
  /** What the endpoint and the stores hold at the end, with no more crashes. */
  const outcome = async () => {
    point.disarm();
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    const accepted = receiver.acceptedEvents(`/${name}`);
    return {
      calls: point.calls,
      webhook,
      held: await deps.held.count(hook.id),
      received: new Set(accepted.filter((e) => e.type !== 'sluice.gap').map((e) => e.id)),
      sentIds: deliveries.flatMap((d) => d.events.map((e) => e.id)),
      markers: [...new Map(accepted.filter((e) => e.type === 'sluice.gap').map((e) => [e.id, e])).values()],
      notified: sandbox.notifier.notices.some((notice) => notice.webhook === hook.id),
      deadLetters: (await deps.deadLetters.page(hook.id, deps.now(), 100)).letters.flatMap((l) => l.message.events.map((e) => e.id)),
    };
  };
  return {
    name,
    tenant,
    hook,
    deps,
    queue,
    switches,
    deliveries,
    drain,
    reconcilerChecks,
    untilAnswered,
    outcome,
    service: webhookService(sandbox, { delivery: deps, service: { now: deps.now } }),
  };
}

/**
 * Deliveries held while the webhook is disabled by its owner, then its re-enable (the
 * API's PATCH) and the release, with the function dying at call `at`.
 */
async function heldThenReleased(at?: number, mode: Mode = 'dieBefore') {
  const point = new CrashPoint(at, mode);
  const r = await rig(point);
  await call(sandbox, 'PATCH', `/v1/webhooks/${r.hook.id}`, { key: r.tenant.key, body: { status: 'disabled' } });
  r.queue.push(...r.deliveries);
  await r.drain();
  await r.untilAnswered(() => r.service.update(r.tenant.id, r.hook.id, { status: 'active' }));
  await r.drain();
  await r.reconcilerChecks();
  return r.outcome();
}

/**
 * An endpoint failing until it is quarantined (after one failure), its deliveries held,
 * then answering again: its next probe succeeds and the release sends what was held.
 */
async function quarantinedThenRecovered(at?: number, mode: Mode = 'dieBefore') {
  const point = new CrashPoint(at, mode);
  const r = await rig(point, {
    quarantineAfterFailures: 1,
    probeIntervalMinSeconds: 1,
    probeIntervalMaxSeconds: 1,
    retryScheduleSeconds: [0, 1, 1, 1, 1, 1, 1, 1],
    retryJitter: 0,
  });
  let recovered = false;
  receiver.answer(`/${r.name}`, async () => (recovered ? 200 : 500));
  r.queue.push(...r.deliveries);
  // Until only probes are left: the endpoint is quarantined and everything else held.
  await r.drain((queued) => queued.every((m) => m.kind === 'probe'));
  recovered = true;
  await r.drain();
  await r.reconcilerChecks();
  return r.outcome();
}

/**
 * An endpoint answering 410: the webhook disabled (its owner told), its deliveries held;
 * then the owner fixes the endpoint and re-enables it (the API's PATCH): the release.
 */
async function goneThenReenabled(at?: number, mode: Mode = 'dieBefore') {
  const point = new CrashPoint(at, mode);
  const r = await rig(point);
  let fixed = false;
  receiver.answer(`/${r.name}`, async () => (fixed ? 200 : 410));
  r.queue.push(...r.deliveries);
  await r.drain();
  fixed = true;
  await r.untilAnswered(() => r.service.update(r.tenant.id, r.hook.id, { status: 'active' }));
  await r.drain();
  await r.reconcilerChecks();
  return r.outcome();
}

/** Deliveries held, or dropped, under a webhook switch, then its lift (which starts a release, as the API's lift does). */
async function switchedThenLifted(action: 'pause' | 'drop', at?: number, mode: Mode = 'dieBefore') {
  const point = new CrashPoint(at, mode);
  const r = await rig(point);
  r.switches.push({
    id: `sw_${r.hook.id}`,
    scope: 'webhook',
    tenant: r.tenant.id,
    target: r.hook.id,
    action,
    reason: 'test',
    created_at: new Date().toISOString(),
  });
  r.queue.push(...r.deliveries);
  await r.drain((queued) => queued.every((m) => m.kind === 'recheck'));
  r.switches.splice(0);
  const webhook = await r.untilAnswered(() => r.deps.webhooks.get(r.tenant.id, r.hook.id));
  await r.untilAnswered(() => startRelease(r.deps, webhook as Webhook));
  await r.drain();
  await r.reconcilerChecks();
  return r.outcome();
}

/** Deliveries retried to their last attempt on an endpoint that always fails: each a dead letter. */
async function retriedToDeadLetters(at?: number, mode: Mode = 'dieBefore') {
  const point = new CrashPoint(at, mode);
  const r = await rig(point, { quarantineAfterFailures: 1000, retryScheduleSeconds: [0, 1], retryJitter: 0 });
  receiver.answer(`/${r.name}`, 500);
  r.queue.push(...r.deliveries);
  await r.drain();
  return r.outcome();
}

type Outcome = Awaited<ReturnType<typeof heldThenReleased>>;

/** Runs `scenario` once clean and once per call out, dying there before or after it; answers what went wrong. */
async function sweep(scenario: (at?: number, mode?: Mode) => Promise<Outcome>, wrong: (run: Outcome) => string | undefined) {
  const clean = await scenario();
  const failures: string[] = [];
  const first = wrong(clean);
  if (first) failures.push(`clean: ${first}`);
  for (const mode of ['dieBefore', 'dieAfter'] as const) {
    for (let at = 1; at <= clean.calls; at++) {
      const problem = wrong(await scenario(at, mode));
      if (problem) failures.push(`${mode} at call ${at}: ${problem}`);
    }
  }
  return { calls: clean.calls, failures };
}

function describeRun(run: Outcome): string {
  const missing = run.sentIds.filter((id) => !run.received.has(id));
  return `missing ${missing.join(',') || 'none'}, markers ${JSON.stringify(run.markers.map((m) => m.data))}, dead letters ${run.deadLetters.length}, held ${run.held}, counted ${run.webhook?.heldCount}, chain ${run.webhook?.releaseToken ?? 'none'}`;
}

const leftHeld = (run: Outcome) => run.held !== 0 || run.webhook?.heldCount !== 0 || run.webhook?.releaseToken !== undefined;

const droppedThenLifted = (at?: number, mode?: Mode) => switchedThenLifted('drop', at, mode);
const pausedThenLifted = (at?: number, mode?: Mode) => switchedThenLifted('pause', at, mode);

describe('the delivery function dying at any call out', () => {
  it('held deliveries and their release: every event received, no gap marker, nothing left held', async () => {
    const { calls, failures } = await sweep(heldThenReleased, (run) =>
      run.sentIds.some((id) => !run.received.has(id)) || run.markers.length > 0 || leftHeld(run) ? describeRun(run) : undefined,
    );
    expect(calls).toBeGreaterThan(10);
    expect(failures).toEqual([]);
  }, 600_000);

  it('a quarantine and its recovery: every event received, no gap marker, nothing left held', async () => {
    const { calls, failures } = await sweep(quarantinedThenRecovered, (run) =>
      run.sentIds.some((id) => !run.received.has(id)) || run.markers.length > 0 || leftHeld(run) ? describeRun(run) : undefined,
    );
    expect(calls).toBeGreaterThan(10);
    expect(failures).toEqual([]);
  }, 600_000);

  it('an endpoint gone (410) and re-enabled: its owner told, every event received, no gap marker, nothing left held', async () => {
    const { calls, failures } = await sweep(goneThenReenabled, (run) =>
      !run.notified || run.sentIds.some((id) => !run.received.has(id)) || run.markers.length > 0 || leftHeld(run)
        ? `notified ${run.notified}, ${describeRun(run)}`
        : undefined,
    );
    expect(calls).toBeGreaterThan(10);
    expect(failures).toEqual([]);
  }, 600_000);

  it('a pause switch and its lift: every event received, no gap marker, nothing left held', async () => {
    const { calls, failures } = await sweep(pausedThenLifted, (run) =>
      run.sentIds.some((id) => !run.received.has(id)) || run.markers.length > 0 || leftHeld(run) ? describeRun(run) : undefined,
    );
    expect(calls).toBeGreaterThan(10);
    expect(failures).toEqual([]);
  }, 600_000);

  it('a drop switch and its lift: every event counted in a gap marker', async () => {
    const { calls, failures } = await sweep(droppedThenLifted, (run) => {
      // At least once: a worker that dies between a resource's count and its receipt counts it again (a marker that overstates).
      const counted = run.markers.reduce((sum, m) => sum + Number((m.data as { dropped: number }).dropped), 0);
      return counted < run.sentIds.length || run.received.size > 0 || leftHeld(run) ? describeRun(run) : undefined;
    });
    expect(calls).toBeGreaterThan(5);
    expect(failures).toEqual([]);
  }, 600_000);

  it('retries to the last attempt: every event in a dead letter', async () => {
    const { calls, failures } = await sweep(retriedToDeadLetters, (run) =>
      run.sentIds.some((id) => !run.deadLetters.includes(id)) || run.markers.length > 0 ? describeRun(run) : undefined,
    );
    expect(calls).toBeGreaterThan(10);
    expect(failures).toEqual([]);
  }, 600_000);
});
