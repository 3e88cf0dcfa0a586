/**
 * Probes of quarantined endpoints, as the deliver queue hands them over in AWS: a
 * tenant's endpoints that failed together (one outage behind them all) are probed within
 * its budget for failing endpoints and spread in time, not all at once every round; and
 * a probe message handed over twice (a standard queue delivers at least once) probes its
 * round once and keeps one chain; so does a release step's, received twice at once.
 */
import { describe, expect, it } from 'vitest';
import type { SendResult } from '../../functions/adapters/webhook-sender.ts';
import { startRelease } from '../../functions/app/delivery/chains.ts';
import type { DeliveryDeps } from '../../functions/app/delivery/deps.ts';
import { handleDeliverMessage } from '../../functions/app/delivery.ts';
import { deliveryDeps } from '../../functions/app/runtime.ts';
import type { DeliverQueueMessage, DeliveryMessage, ProbeMessage, ReleaseMessage, Webhook } from '../../functions/core/model.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { createTenant, createWebhook } from '../support/api.ts';
import { deliveredEventFixture } from '../support/fixtures.ts';
import { holdDelivery } from '../support/held.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;

const PER_TENANT = 2;

withSandbox({ canary: false, config: { quarantineAfterFailures: 1, failingAttemptsPerTenant: PER_TENANT } }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

/**
 * Delivery deps at a clock the test moves, POSTing by `send`, keeping what they send to
 * the deliver queue with its delay; `random` runs through the fractions given, in turn.
 */
function depsWith(send: DeliveryDeps['send'], fractions: readonly number[] = [0.5]) {
  const clock = { at: Date.now() + 3_600_000 };
  const sent: Array<{ message: DeliverQueueMessage; delaySeconds: number }> = [];
  let n = 0;
  const deps: DeliveryDeps = {
    ...deliveryDeps(sandbox.wiring, sandbox.notifier),
    send,
    now: () => clock.at,
    random: () => fractions[n++ % fractions.length] as number,
    queue: { send: async (messages, delaySeconds = 0) => void sent.push(...messages.map((message) => ({ message, delaySeconds }))) },
  };
  const probes = () => sent.filter((s): s is { message: ProbeMessage; delaySeconds: number } => s.message.kind === 'probe');
  return { deps, clock, sent, probes };
}

/** Fails the first delivery to `webhookId`, which quarantines its endpoint (one failure does here). */
async function quarantine(deps: DeliveryDeps, tenantId: string, webhookId: string, n: number) {
  await handleDeliverMessage(deps, {
    deliveryId: `msg_probes${n}`,
    tenantId,
    webhookId,
    attempt: 1,
    events: [deliveredEventFixture({ id: `evt_probes${n}`, seq: 1, resource: 'pr:1', parents: ['pr:0'], data: n })],
  });
}

describe("a tenant's endpoints quarantined together", () => {
  it('are probed at most its budget for failing endpoints at once, and at times spread by jitter', async () => {
    const tenant = await createTenant(sandbox, 'probes-together');
    const hooks = [];
    for (let i = 0; i < 6; i++) hooks.push(await createWebhook(sandbox, tenant.key, { resource: 'pr:0', url: `${receiver.url}/pr-${i}` }));
    // Every endpoint hangs until the timeout (here 300 ms).
    let underWay = 0;
    let most = 0;
    const hang = async (): Promise<SendResult> => {
      most = Math.max(most, ++underWay);
      await new Promise((resolve) => setTimeout(resolve, 300));
      underWay -= 1;
      return { statusCode: undefined, error: 'no answer within 300 ms', retryAfter: undefined, responseSnippet: '', durationMs: 300 };
    };
    const { deps, clock, probes } = depsWith(hang, [0, 0.25, 0.5, 0.75, 1]);
    await Promise.all(hooks.map((hook, i) => quarantine(deps, tenant.id, hook.id, i)));
    const first = probes();
    expect(first).toHaveLength(hooks.length);
    // The minute's probes are spread over 48–72 s, not all due in the same second.
    expect(new Set(first.map((p) => p.delaySeconds)).size).toBeGreaterThan(1);
    for (const { delaySeconds } of first) expect(delaySeconds).toBeGreaterThanOrEqual(48);
    for (const { delaySeconds } of first) expect(delaySeconds).toBeLessThanOrEqual(72);

    // Had they all come due together: the tenant's budget lets two POST; the others wait, none failed for it.
    clock.at += 72_000;
    most = 0;
    const outcomes = await Promise.all(first.map((p) => handleDeliverMessage(deps, p.message)));
    expect(most).toBe(PER_TENANT);
    expect(outcomes.filter((o) => o === 'probed')).toHaveLength(PER_TENANT);
    expect(outcomes.filter((o) => o === 'throttled')).toHaveLength(hooks.length - PER_TENANT);
    const waiting = probes()
      .slice(hooks.length)
      .filter((p) => p.message.tenantWaits === 1);
    expect(waiting).toHaveLength(hooks.length - PER_TENANT);
    // A waiting probe still probes its round when it comes back.
    clock.at += 60_000;
    expect(await handleDeliverMessage(deps, waiting[0]?.message as ProbeMessage)).toBe('probed');
  });
});

describe('a probe message handed over twice', () => {
  const failing = () => {
    let posts = 0;
    const fail = async (): Promise<SendResult> => {
      posts += 1;
      await new Promise((resolve) => setTimeout(resolve, 20));
      return { statusCode: 500, error: undefined, retryAfter: undefined, responseSnippet: '', durationMs: 20 };
    };
    return { fail, posts: () => posts };
  };

  /** A webhook quarantined for an endpoint that answers 500, and its first probe, due now. */
  async function firstRound(name: string, n: number) {
    const tenant = await createTenant(sandbox, name);
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'pr:0', url: `${receiver.url}/${name}` });
    const { fail, posts } = failing();
    const { deps, clock, probes } = depsWith(fail);
    await quarantine(deps, tenant.id, hook.id, n);
    const [round] = probes();
    const before = posts();
    clock.at += 61_000;
    return { deps, clock, probes, round, posted: () => posts() - before };
  }

  it('probes its round once, and sends one next probe, when the copy comes after it', async () => {
    const { deps, clock, probes, round, posted } = await firstRound('probe-twice', 100);
    expect(await handleDeliverMessage(deps, round?.message as ProbeMessage)).toBe('probed');
    // The copy, a second later, or after a visibility timeout past the next round's time.
    clock.at += 1_000;
    expect(await handleDeliverMessage(deps, round?.message as ProbeMessage)).toBe('stale');
    clock.at += 180_000;
    expect(await handleDeliverMessage(deps, round?.message as ProbeMessage)).toBe('stale');
    expect(posted()).toBe(1);
    expect(probes()).toHaveLength(2);
  });

  it('keeps one chain when both copies are received at once', async () => {
    const { deps, probes, round, posted } = await firstRound('probe-at-once', 200);
    const outcomes = await Promise.all([0, 1].map(() => handleDeliverMessage(deps, round?.message as ProbeMessage)));
    // Both read the round before either answered: both POSTed; one moved the round on.
    expect(posted()).toBe(2);
    expect(outcomes.sort()).toEqual(['probed', 'stale']);
    const next = probes().slice(1);
    expect(next).toHaveLength(1);
    // Its interval doubled once (60 → 120 s, jittered by none here).
    expect(next[0]?.delaySeconds).toBe(120);
  });
});

describe('a release step message handed over twice', () => {
  /** A webhook holding three deliveries, and the first step of the chain that releases them. */
  async function releasing(name: string, send: DeliveryDeps['send']) {
    const tenant = await createTenant(sandbox, name);
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'rel:0', url: `${receiver.url}/${name}` });
    const { deps, clock, sent } = depsWith(send);
    for (let n = 1; n <= 3; n++) {
      const message: DeliveryMessage = {
        deliveryId: `msg_${name}${n}`,
        tenantId: tenant.id,
        webhookId: hook.id,
        attempt: 1,
        events: [deliveredEventFixture({ id: `evt_${name}${n}`, seq: n, resource: 'rel:1', parents: ['rel:0'], data: n })],
      };
      expect(await holdDelivery(deps, message)).toEqual([true, true]);
    }
    await startRelease(deps, (await deps.webhooks.get(tenant.id, hook.id)) as Webhook);
    const step = sent.find((s) => s.message.kind === 'release')?.message as ReleaseMessage;
    expect(step).toBeDefined();
    sent.length = 0;
    return { deps, clock, sent, step };
  }

  const answering = () => {
    const posted: string[] = [];
    const ok = async (request: Parameters<DeliveryDeps['send']>[0]): Promise<SendResult> => {
      posted.push(...(JSON.parse(request.body) as { events: Array<{ id: string }> }).events.map((e) => e.id));
      await new Promise((resolve) => setTimeout(resolve, 50));
      return { statusCode: 200, error: undefined, retryAfter: undefined, responseSnippet: '', durationMs: 50 };
    };
    return { ok, posted };
  };

  it('steps once when both copies are received at once: each held event POSTed once, one chain going on', async () => {
    const { ok, posted } = answering();
    const { deps, clock, sent, step } = await releasing('rel-at-once', ok);
    clock.at += 1_000;
    const outcomes = await Promise.all([0, 1].map(() => handleDeliverMessage(deps, step)));
    expect(outcomes.sort()).toEqual(['released', 'stale']);
    expect(posted.sort()).toEqual(['evt_rel-at-once1', 'evt_rel-at-once2', 'evt_rel-at-once3']);
    expect(sent.filter((s) => s.message.kind === 'release')).toHaveLength(1);
  });

  it('steps again when it comes back after a step that failed (the visibility timeout later)', async () => {
    const { ok, posted } = answering();
    const { deps, clock, step } = await releasing('rel-failed', ok);
    // The step marks itself, then DynamoDB fails its read of what is held: the record fails.
    const failing = { ...deps, held: Object.create(deps.held, { page: { value: async () => Promise.reject(new Error('throttled')) } }) };
    await expect(handleDeliverMessage(failing, step)).rejects.toThrow('throttled');
    clock.at += 180_000;
    expect(await handleDeliverMessage(deps, step)).toBe('released');
    expect(posted.sort()).toEqual(['evt_rel-failed1', 'evt_rel-failed2', 'evt_rel-failed3']);
  });
});
