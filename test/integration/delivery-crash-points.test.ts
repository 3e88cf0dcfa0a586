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
import type { DeliveryDeps } from '../../functions/app/delivery/deps.ts';
import { handleDeliverMessage } from '../../functions/app/delivery.ts';
import type { DeliverQueueMessage, DeliveryMessage } from '../../functions/core/model.ts';
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
 * Deliveries held while the webhook is disabled by its owner, then its re-enable (the
 * API's PATCH) and the release, with the function dying at call `at`. Answers the calls
 * the run made, whether the crash fired, and what the endpoint and the stores hold after.
 */
async function heldThenReleased(at?: number, mode: Mode = 'dieBefore') {
  const name = `crashpt${++runs}`;
  const tenant = await createTenant(sandbox, name);
  const hook = await createWebhook(sandbox, tenant.key, { resource: `${name}:0`, url: `${receiver.url}/${name}` });
  receiver.answer(`/${name}`, 200);
  await call(sandbox, 'PATCH', `/v1/webhooks/${hook.id}`, { key: tenant.key, body: { status: 'disabled' } });

  const point = new CrashPoint(at, mode);
  const client = documentClient(sandbox.emulators.dynamo);
  client.middlewareStack.add((next) => (args) => point.around(() => next(args)), { step: 'initialize', name: 'crashPoint' });
  const over = deliveryDepsOver(sandbox, client);
  const queue: DeliverQueueMessage[] = [];
  let skew = 0;
  const deps: DeliveryDeps = {
    ...over.deps,
    now: () => Date.now() + skew,
    queue: { send: (messages, delaySeconds) => point.around(() => over.deps.queue.send(messages, delaySeconds)) },
  };
  const service = webhookService(sandbox, { delivery: deps, service: { now: deps.now } });

  const deliveries = [
    delivery(tenant.id, hook.id, `${name}a`, [`${name}:1`]),
    delivery(tenant.id, hook.id, `${name}b`, [`${name}:1`, `${name}:2`]),
    delivery(tenant.id, hook.id, `${name}c`, [`${name}:2`]),
  ];
  queue.push(...deliveries);
  const drain = async () => {
    for (let steps = 0; steps < 200; steps++) {
      queue.push(...over.sent.splice(0));
      const message = queue.shift();
      if (!message) return;
      point.revive();
      try {
        await handleDeliverMessage(deps, message);
      } catch {
        // SQS hands the message out again after its visibility timeout.
        queue.push(message);
        skew += 180_000;
        continue;
      }
      skew += 31_000;
    }
    throw new Error('the scenario did not end');
  };
  await drain();
  // The owner re-enables the webhook; a PATCH answered 500 is sent again.
  for (let tries = 0; ; tries++) {
    point.revive();
    try {
      await service.update(tenant.id, hook.id, { status: 'active' });
      break;
    } catch (error) {
      if (tries > 3) throw error;
    }
  }
  await drain();
  point.disarm();
  const webhook = await deps.webhooks.get(tenant.id, hook.id);
  const held = await deps.held.count(hook.id);
  const received = new Set(receiver.acceptedEvents(`/${name}`).map((e) => e.id));
  const sentIds = deliveries.flatMap((d) => d.events.map((e) => e.id));
  const markers = receiver.acceptedEvents(`/${name}`).filter((e) => e.type === 'sluice.gap');
  return { calls: point.calls, fired: point.fired, webhook, held, received, sentIds, markers };
}

describe('held deliveries and their release, with the delivery function dying at any call', () => {
  it('every event is received, no gap marker is sent, and nothing is left held, wherever the function dies', async () => {
    const clean = await heldThenReleased();
    expect([...clean.received].sort()).toEqual([...clean.sentIds].sort());
    expect(clean.calls).toBeGreaterThan(10);
    const failures: string[] = [];
    for (const mode of ['dieBefore', 'dieAfter'] as const) {
      for (let at = 1; at <= clean.calls; at++) {
        const run = await heldThenReleased(at, mode);
        const missing = run.sentIds.filter((id) => !run.received.has(id));
        // Nothing was lost: a gap marker would tell the subscriber of a loss that never was (and page on-call).
        if (
          missing.length > 0 ||
          run.markers.length > 0 ||
          run.held !== 0 ||
          run.webhook?.heldCount !== 0 ||
          run.webhook?.releaseToken !== undefined
        ) {
          failures.push(
            `${mode} at call ${at}: missing ${missing.join(',') || 'none'}, markers ${JSON.stringify(run.markers.map((m) => m.data))}, held ${run.held}, counted ${run.webhook?.heldCount}, chain ${run.webhook?.releaseToken ?? 'none'}`,
          );
        }
      }
    }
    expect(failures).toEqual([]);
  }, 600_000);
});
