/**
 * The canary covers both ways an event goes through the pipeline: a run counts as
 * delivered (`CanaryDelivered`, what canary-stale reads) only once its quiet tick
 * (kept inline, published without a lease) and its leased tick (a slot, a lease, a
 * commit) have both reached its receiver. Lease contention, which the quiet path never
 * meets, must keep the count at nothing. A sandbox of its own: no tick of another
 * file's runs arrives here late.
 */
import { describe, expect, it } from 'vitest';
import { CanaryStore, hasWebhook } from '../../functions/adapters/canary-store.ts';
import { Doorbell } from '../../functions/adapters/doorbell.ts';
import { CANARY_LEASED_RESOURCE, CANARY_ON_TIME_MS, CANARY_TYPE, receiveCanary } from '../../functions/app/canary.ts';
import { deliveryBody } from '../../functions/core/deliveries.ts';
import { signatureHeader } from '../../functions/core/signing.ts';
import { NO_LOGS } from '../../functions/core/telemetry.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { refuseLeases } from '../support/faults.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;

// Runs only when a test asks (sandbox.runCanary), to its own receiver, as in AWS.
withSandbox({ canary: false }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

const total = (name: string, dimensions?: Record<string, string>) => sandbox.metrics.total(name, dimensions);
const until = (predicate: () => boolean) => receiver.waitFor(predicate, 10_000);
/**
 * Ingest keeps an event on its object's meta item (the quiet path) only when it wrote
 * none there in the last second: the canary's runs are a minute apart, these are not.
 */
const idle = () => new Promise((resolve) => setTimeout(resolve, 1_100));

describe("the canary's two paths", () => {
  it('counts a run as delivered only once its leased tick arrived too: with every lease refused, its quiet tick alone counts nothing', async () => {
    // Both paths working: the run is delivered once, its quiet tick by a quiet turn.
    await sandbox.runCanary();
    // The receiver counts the run as the ticks arrive; the delivery function counts
    // its two events once their POSTs are answered, a moment later.
    await until(() => total('CanaryDelivered') === 1 && total('QuietTurns') === 1 && total('EventsDelivered') === 2);
    expect(total('LeaseConflicts')).toBe(0);

    // Every lease refused, as in the hot-object incident: the quiet tick still arrives,
    // the leased one waits on its object, and the run is not counted.
    const endFault = refuseLeases(sandbox.wiring.dynamo);
    try {
      const events = total('EventsDelivered');
      await idle();
      await sandbox.runCanary();
      await until(() => total('EventsDelivered') > events && total('QuietTurns') === 2);
      // Time for anything else under way to arrive.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      expect(total('CanaryDelivered')).toBe(1);
      expect(total('EventsDelivered')).toBe(events + 1);
      expect(total('LeaseConflicts')).toBeGreaterThan(0);
      expect(total('CanaryTicks', { path: 'quiet' })).toBe(2);
      expect(total('CanaryTicks', { path: 'leased' })).toBe(1);
    } finally {
      endFault();
    }

    // Leases again: its object rung (as the reconciler rings one stuck), the leased tick
    // arrives and completes its run; the next run is delivered as the first was.
    const state = await new CanaryStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable }).get();
    if (!state || !hasWebhook(state)) throw new Error('no canary state');
    const doorbell = new Doorbell({ client: sandbox.wiring.sqs, queueUrl: sandbox.wiring.distributeQueueUrl });
    await doorbell.ring({ tenantId: state.tenantId, resource: CANARY_LEASED_RESOURCE }, 'stuck');
    await until(() => total('CanaryDelivered') === 2);
    await idle();
    await sandbox.runCanary();
    await until(() => total('CanaryDelivered') === 3);
    expect(total('CanaryTicks', { path: 'quiet' })).toBe(3);
    expect(total('CanaryTicks', { path: 'leased' })).toBe(3);
  });

  it('counts a run whose ticks took longer than the alarm period as late, not delivered, so a uniformly late pipeline pages', async () => {
    const store = new CanaryStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable });
    const state = await store.get();
    if (!state || !hasWebhook(state)) throw new Error('no canary state');
    // The receiver's clock ten minutes on: a run sent after every earlier one, received just past the period.
    const now = Date.now() + 10 * 60_000;
    const sentAt = now - CANARY_ON_TIME_MS - 1_000;
    const ticks = (['quiet', 'leased'] as const).map((path, i) => ({
      id: `evt_late${i}`,
      seq: 1,
      resource: path,
      parents: [],
      type: CANARY_TYPE,
      data: { sent_at: sentAt, path },
      created_at: new Date(sentAt).toISOString(),
    }));
    const body = deliveryBody(state.webhookId, ticks);
    const at = Math.floor(now / 1000);
    const headers = { id: 'msg_late', timestamp: String(at), signature: signatureHeader([state.secret], 'msg_late', at, body) };
    const [delivered, late] = [total('CanaryDelivered'), total('CanaryLate')];
    const deps = { store, metrics: sandbox.metrics, logger: NO_LOGS, now: () => now };
    expect(await receiveCanary(deps, headers, body)).toBe(204);
    expect(total('CanaryDelivered')).toBe(delivered);
    expect(total('CanaryLate')).toBe(late + 2);
  });
});
